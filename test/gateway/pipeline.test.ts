import { describe, expect, it } from 'vitest'
import { answerHeaders, type GuardInput, runGuards } from '../../src/gateway/pipeline.js'
import { compileApp } from '../support/apps.js'

const app = await compileApp({
  app: 'shop',
  hosts: ['shop.test'],
  clientIp: { trustedProxies: ['10.0.0.0/8'] },
  cors: { origins: ['https://shop.example.com'] },
  access: [{ path: '/admin/**', allow: ['10.0.0.0/8'] }],
  websocket: { paths: [{ path: '/public/**', allowedOrigins: ['*'] }] },
  limits: { maxBodySize: '1kb' },
})

function input(overrides: Partial<GuardInput>): GuardInput {
  return {
    method: 'GET',
    url: '/',
    headers: {},
    rawHeaders: [],
    peer: '203.0.113.5',
    upgrade: false,
    liveWebSockets: () => ({ app: 0, ip: 0 }),
    ...overrides,
  }
}

describe('guard pipeline', () => {
  it('runs the guards in order and stops at the first that refuses', () => {
    expect(runGuards(app, input({ url: '/%2e%2e/admin' })).decision).toMatchObject({
      code: 'PCL_BAD_REQUEST',
      rule: 'path',
    })
    expect(
      runGuards(app, input({ url: '/admin', headers: { origin: 'https://evil.test' } })).decision,
    ).toMatchObject({
      code: 'PCL_ACCESS_DENIED',
    })
    expect(
      runGuards(app, input({ url: '/x', headers: { origin: 'https://evil.test' } })).decision,
    ).toMatchObject({
      code: 'PCL_CORS_ORIGIN_DENIED',
    })
    expect(
      runGuards(app, input({ method: 'POST', url: '/x', headers: { 'content-length': '2048' } })).decision,
    ).toMatchObject({
      code: 'PCL_BODY_TOO_LARGE',
    })
  })

  it('derives the client once and hands the canonical target on', () => {
    const verdict = runGuards(
      app,
      input({ url: '//admin/./x?a=%2e', peer: '10.0.0.9', headers: { 'x-forwarded-for': '10.1.1.1' } }),
    )
    expect(verdict).toMatchObject({
      decision: { kind: 'allow' },
      target: '/admin/x?a=%2e',
      identity: { ip: '10.1.1.1' },
    })
  })

  it('lets the WebSocket guard, not CORS, judge the Origin of upgrades', () => {
    const foreign = { origin: 'https://anyone.test' }
    expect(
      runGuards(app, input({ url: '/public/feed', headers: foreign, upgrade: true })).decision.kind,
    ).toBe('allow')
    expect(
      runGuards(app, input({ url: '/private', headers: foreign, upgrade: true })).decision,
    ).toMatchObject({
      code: 'PCL_WS_ORIGIN_DENIED',
    })
  })

  it('builds answers: the app’s CORS headers replaced, security headers added, Vary merged, HSTS on TLS', () => {
    const headers = answerHeaders(
      app,
      { 'access-control-allow-origin': '*', vary: 'Accept-Encoding', server: 'x' },
      { 'access-control-allow-origin': 'https://shop.example.com', vary: 'Origin' },
      true,
    )
    expect(headers).toMatchObject({
      'access-control-allow-origin': 'https://shop.example.com',
      vary: 'Accept-Encoding, Origin',
      'x-content-type-options': 'nosniff',
      'strict-transport-security': 'max-age=31536000',
    })
    expect(headers).not.toHaveProperty('server')
    expect(answerHeaders(app, {}, undefined, false)).not.toHaveProperty('strict-transport-security')
  })
})
