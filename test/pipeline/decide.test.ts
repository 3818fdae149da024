import { describe, expect, it } from 'vitest'
import { decide } from '../../src/pipeline/decide.js'
import type { Arrival, Outcome } from '../../src/pipeline/exchange.js'
import { allow, type Decision, deny, type Guard, type TraceStep } from '../../src/pipeline/guard.js'
import { runGuards } from '../../src/pipeline/run.js'
import { compileApp } from '../support/apps.js'
import { exchangesFor, freshServices } from '../support/exchanges.js'

const app = await compileApp({
  app: 'shop',
  hosts: ['shop.test'],
  tls: { mode: 'off' },
  clientIp: { trustedProxies: ['10.0.0.0/8'] },
  cors: { origins: ['https://shop.example.com'] },
  access: [{ path: '/admin/**', allow: ['10.0.0.0/8'] }],
  websocket: { paths: [{ path: '/public/**', allowedOrigins: ['*'] }] },
  limits: { maxBodySize: '1kb' },
  hsts: { maxAge: 31536000 },
  rateLimits: [{ name: 'login', match: { path: '/login' }, limit: 1, window: '1m' }],
})

const exchange = exchangesFor(app)

async function outcomeOf(overrides: Partial<Arrival>): Promise<Outcome> {
  return decide(exchange(overrides), 443)
}

describe('decide()', () => {
  it('runs the chain in order and stops at the first guard that refuses', async () => {
    expect(await outcomeOf({ url: '/%2e%2e/admin' })).toMatchObject({ code: 'PCL_BAD_REQUEST', rule: 'path' })
    const foreign = { host: 'shop.test', origin: 'https://evil.test' }
    expect(await outcomeOf({ url: '/admin', headers: foreign })).toMatchObject({ code: 'PCL_ACCESS_DENIED' })
    expect(await outcomeOf({ url: '/x', headers: foreign })).toMatchObject({ code: 'PCL_CORS_ORIGIN_DENIED' })
    expect(
      await outcomeOf({
        method: 'POST',
        url: '/x',
        headers: { host: 'shop.test', 'content-length': '2048' },
      }),
    ).toMatchObject({ code: 'PCL_BODY_TOO_LARGE' })
  })

  it.each([
    ['shop.test:8443', 'shop.test:1'],
    ['shop.test', 'other.test'],
  ])(
    'refuses an :authority %s beside a Host %s: the app and the guards would read different ones',
    async (authority, host) => {
      expect(
        await outcomeOf({ url: '/x', host: authority, headers: { ':authority': authority, host } }),
      ).toMatchObject({
        code: 'PCL_BAD_REQUEST',
      })
    },
  )

  it.each([
    'shop.test:1@evil.test',
    'shop.test:443/x',
    'shop.test:99999',
    'shop.test:0',
    'shop.test:',
    'shop.test x',
    'shop.test:80:80',
  ])('refuses a Host %s: a URL parser would read another host or port than the router', async (host) => {
    expect(await outcomeOf({ url: '/x', host, headers: { host } })).toMatchObject({
      code: 'PCL_BAD_REQUEST',
    })
  })

  it('refuses a request with two Host headers, and takes one with a port or a final dot', async () => {
    expect(
      await outcomeOf({
        url: '/x',
        headers: { host: 'shop.test' },
        rawHeaders: ['Host', 'shop.test', 'host', 'evil.test'],
      }),
    ).toMatchObject({ code: 'PCL_BAD_REQUEST', message: 'A request has one Host header' })
    for (const host of ['shop.test:8080', 'shop.test.', 'SHOP.test'])
      expect(await outcomeOf({ url: '/x', host, headers: { host } })).toMatchObject({ kind: 'proxy' })
  })

  it('keys an ip+path limit on the path as its rule matches it: case and a final slash share one budget', async () => {
    const files = exchangesFor(
      await compileApp({
        app: 'files',
        hosts: ['files.test'],
        tls: { mode: 'off' },
        rateLimits: [
          { name: 'per-file', key: 'ip+path', match: { path: '/files/**' }, limit: 1, window: '1m' },
        ],
      }),
    )
    const services = freshServices()
    const outcomes = []
    for (const url of ['/files/a', '/FILES/A/', '/Files/a', '/files/b'])
      outcomes.push((await decide(files({ url }, services), 443)).kind)
    expect(outcomes).toEqual(['proxy', 'refuse', 'refuse', 'proxy'])
  })

  it('derives the client once and hands the canonical target to the upstream', async () => {
    const trusted = exchange({
      url: '//admin/./x?a=%2e',
      peer: '10.0.0.9',
      headers: { host: 'shop.test', 'x-forwarded-for': '10.1.1.1' },
    })
    expect(await decide(trusted, 443)).toMatchObject({
      kind: 'proxy',
      facts: {
        clientIp: '10.1.1.1',
        chain: ['10.1.1.1', '10.0.0.9'],
        host: 'shop.test',
        forwarded: { host: 'shop.test', proto: 'http' },
      },
    })
    expect(trusted).toMatchObject({
      target: '/admin/x?a=%2e',
      path: '/admin/x',
      identity: { ip: '10.1.1.1' },
    })
  })

  it('lets the WebSocket guard, not CORS, judge the Origin of upgrades', async () => {
    const foreign = { host: 'shop.test', origin: 'https://anyone.test' }
    expect(await outcomeOf({ url: '/public/feed', headers: foreign, upgrade: true })).toMatchObject({
      kind: 'proxy',
    })
    expect(await outcomeOf({ url: '/private', headers: foreign, upgrade: true })).toMatchObject({
      code: 'PCL_WS_ORIGIN_DENIED',
    })
  })

  it('waits only for guards that wait, and traces each guard that had a say', async () => {
    const steps: TraceStep[] = []
    const plain = decide(exchange({ url: '/x' }), 443, steps)
    expect(plain).not.toBeInstanceOf(Promise)
    expect(steps.map((step) => step.guard)).toEqual([
      'clientIp',
      'limits: url and headers',
      'path',
      'access',
      'cors',
      'limits: body',
      'rateLimits',
    ])
    const login = exchange({ url: '/login' })
    const first = decide(login, 443)
    expect(first).toBeInstanceOf(Promise)
    expect(await first).toMatchObject({ kind: 'proxy' })
    expect(login.addedHeaders).toMatchObject({ vary: 'Origin', 'ratelimit-policy': '"login";q=1;w=60' })
  })

  it('keeps the headers earlier guards added on a later refusal', async () => {
    const services = freshServices()
    expect(await decide(exchange({ url: '/login' }, services), 443)).toMatchObject({ kind: 'proxy' })
    const refused = exchange({ url: '/login' }, services)
    expect(await decide(refused, 443)).toMatchObject({ code: 'PCL_RATE_LIMITED' })
    expect(refused.addedHeaders).toMatchObject({ vary: 'Origin', 'retry-after': expect.any(String) })
    services.rateLimits.store.close()
  })

  it('builds answers: the app’s CORS headers replaced, security headers added, Vary merged, HSTS on TLS', () => {
    const headers = app.responseEdits.apply(
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
    expect(app.responseEdits.apply({}, undefined, false)).not.toHaveProperty('strict-transport-security')
  })

  it('hardens the cookies the gateway adds (an auth service’s, the sticky one) beside the app’s', () => {
    const headers = app.responseEdits.apply(
      { 'set-cookie': 'app=1; Path=/' },
      { 'set-cookie': ['_oauth2_proxy=s; Path=/', 'pcl_sticky=t; Path=/; Secure; SameSite=Lax'] },
      true,
    )
    expect(headers['set-cookie']).toEqual([
      'app=1; Path=/; Secure; SameSite=Lax',
      '_oauth2_proxy=s; Path=/; Secure; SameSite=Lax',
      'pcl_sticky=t; Path=/; Secure; SameSite=Lax',
    ])
  })
})

describe('the guard runner', () => {
  const guard = (name: string, decision: Decision | Promise<Decision>, applies = true): Guard => ({
    name,
    applies: () => applies,
    check: () => decision,
  })
  const subject = exchange({})

  it('stops at the first refusal, skips guards that do not apply, and keeps what allowing guards added', async () => {
    const trace: TraceStep[] = []
    const decision = await runGuards(
      [
        guard('grant', { kind: 'allow', responseHeaders: { vary: 'Origin' } }),
        guard('skipped', deny('PCL_ACCESS_DENIED', 'never', 'not applied'), false),
        guard('waits', Promise.resolve(allow)),
        guard('refuses', deny('PCL_RATE_LIMITED', 'rateLimits[0]', 'no', { 'retry-after': '1' })),
        guard('after', deny('PCL_ACCESS_DENIED', 'never', 'not reached')),
      ],
      subject,
      trace,
    )
    expect(decision).toEqual({
      kind: 'deny',
      code: 'PCL_RATE_LIMITED',
      rule: 'rateLimits[0]',
      message: 'no',
      headers: { vary: 'Origin', 'retry-after': '1' },
    })
    expect(trace.map((step) => step.guard)).toEqual(['grant', 'waits', 'refuses'])
  })

  it('answers without a promise when no guard waits', () => {
    expect(runGuards([guard('a', allow), guard('b', allow)], subject)).toEqual({ kind: 'allow' })
  })
})
