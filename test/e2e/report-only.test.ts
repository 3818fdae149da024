import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

describe('mode: report-only', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    const policy = (app: string, mode: string) =>
      [
        `app: ${app}`,
        `hosts: [${app}.test]`,
        `mode: ${mode}`,
        `upstream: { targets: ["${echo.url}"] }`,
        'tls: { mode: "off" }',
        'cors: { origins: [https://app.example.com] }',
        'access: [{ path: /admin/**, allow: [10.0.0.0/8] }]',
        'rateLimits: [{ name: per-ip, limit: 1, window: 10m }]',
        '',
      ].join('\n')
    gateway = await startGateway({
      policies: { 'trial.yaml': policy('trial', 'report-only'), 'live.yaml': policy('live', 'enforce') },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it('lets refused requests pass and logs what would have blocked them, with the rule', async () => {
    const admin = await fetchOnce('http://trial.test/admin/users', { port: gateway.ports.http })
    expect(admin.status).toBe(200)
    const foreign = await fetchOnce('http://trial.test/x', {
      port: gateway.ports.http,
      headers: { origin: 'https://evil.test' },
    })
    expect(foreign.status).toBe(200)
    expect(foreign.headers['access-control-allow-origin']).toBeUndefined()
    const adminLine = await gateway.waitForLog((line) => line.app === 'trial' && line.path === '/admin/users')
    expect(adminLine).toMatchObject({
      status: 200,
      wouldBlock: { code: 'PCL_ACCESS_DENIED', rule: 'access[0] /admin/**' },
    })
    const corsLine = await gateway.waitForLog((line) => line.app === 'trial' && line.path === '/x')
    expect(corsLine).toMatchObject({ wouldBlock: { code: 'PCL_CORS_ORIGIN_DENIED' } })
  })

  it('reports rate limits too, keeping the RateLimit headers and dropping Retry-After', async () => {
    // The requests above stopped at their first refusal, before the rate limit: this one spends it.
    expect((await fetchOnce('http://trial.test/y', { port: gateway.ports.http })).status).toBe(200)
    const last = await fetchOnce('http://trial.test/y', { port: gateway.ports.http })
    expect(last.status).toBe(200)
    expect(last.headers.ratelimit).toMatch(/^"per-ip";r=0/)
    expect(last.headers['retry-after']).toBeUndefined()
    expect(
      await gateway.waitForLog(
        (line) => line.app === 'trial' && line.path === '/y' && line.wouldBlock !== undefined,
      ),
    ).toMatchObject({
      wouldBlock: { code: 'PCL_RATE_LIMITED', rule: 'rateLimits[0] per-ip' },
    })
  })

  it('still refuses malformed requests, and enforce mode enforces', async () => {
    const { execFileAsync } = await import('../support/clients.js')
    const { stdout } = await execFileAsync('curl', [
      '-s',
      '--path-as-is',
      '-H',
      'Host: trial.test',
      `http://127.0.0.1:${gateway.ports.http}/a%2fb`,
    ])
    expect(JSON.parse(stdout)).toMatchObject({ error: { code: 'PCL_BAD_REQUEST' } })
    expect((await fetchOnce('http://live.test/admin/users', { port: gateway.ports.http })).status).toBe(403)
  })
})
