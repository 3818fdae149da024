import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileAsync } from '../support/clients.js'
import { type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/** `explain` and a live gateway must agree on every request: they run the same code. */
describe('portcullis explain', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'shop.yaml': [
          'app: shop',
          'hosts: [shop.test]',
          `upstream: { targets: ["${echo.url}"] }`,
          'tls: { mode: "off" }',
          'clientIp: { trustedProxies: [127.0.0.2] }',
          'hsts: { maxAge: 31536000 }',
          'cors: { origins: [https://app.example.com] }',
          'access:',
          '  - { path: /studio/**, allow: [10.0.0.0/8] }',
          '  - { path: /sql, deny: all, respond: 404 }',
          'limits: { maxUrlLength: 64 }',
          '',
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it.each([
    ['GET', '/studio/x', '127.0.0.1', []],
    ['GET', '/studio/x', '127.0.0.2', ['X-Forwarded-For: 10.1.2.3']],
    ['GET', '/%53QL', '127.0.0.1', []],
    ['GET', '//api/./items?x=1', '127.0.0.1', []],
    ['GET', '/a%2fb', '127.0.0.1', []],
    ['GET', '/x/..;/studio', '127.0.0.1', []],
    ['GET', `/${'a'.repeat(80)}`, '127.0.0.1', []],
    ['POST', '/api', '127.0.0.1', ['Origin: https://evil.test']],
    ['GET', '/api/items', '127.0.0.1', ['X-Forwarded-Proto: https', 'X-Forwarded-Host: public.example']],
    [
      'GET',
      '/api/items',
      '127.0.0.2',
      ['X-Forwarded-For: 198.51.100.7', 'X-Forwarded-Proto: https', 'X-Forwarded-Host: public.example'],
    ],
    ['GET', '/api/items?x=1', '127.0.0.2', ['X-Forwarded-Proto: http']],
    ['GET', '/api/items', '127.0.0.1', ['X_Custom: 1', 'X-Forwarded-Prefix: /evil', 'X-Client-IP: 6.6.6.6']],
    ['GET', '/api/items', '127.0.0.1', ['Host: SHOP.Test.']],
    ['GET', '/api/items', '127.0.0.1', ['X-Forwarded-Proto: http']],
    [
      'OPTIONS',
      '/api',
      '127.0.0.1',
      ['Origin: https://app.example.com', 'Access-Control-Request-Method: PUT'],
    ],
  ])('%s %s from %s %j', async (method, path, from, headers) => {
    const live = await execFileAsync('curl', [
      '-s',
      '-w',
      '\n%{http_code}',
      '--path-as-is',
      '-X',
      method,
      '--interface',
      from,
      '-H',
      'Host: shop.test',
      ...headers.flatMap((header) => ['-H', header]),
      `http://127.0.0.1:${gateway.ports.http}${path}`,
    ])
    const cut = live.stdout.lastIndexOf('\n')
    const liveStatus = Number(live.stdout.slice(cut + 1))
    const explained = await runCli([
      'explain',
      '--policies',
      gateway.policiesDir,
      '--format',
      'json',
      '--method',
      method,
      '--ip',
      from,
      '--url',
      `http://shop.test${path}`,
      ...headers.flatMap((header) => ['-H', header]),
    ])
    const trace = JSON.parse(explained.stdout) as {
      status: number
      outcome: string
      upstream?: { requestTarget: string; headers: Record<string, string> }
    }
    // Status 0 means "proxied": the live answer is the upstream's (200 from the echo app).
    expect(trace.status === 0 ? 200 : trace.status).toBe(liveStatus)
    expect(explained.code).toBe(trace.outcome === 'refused' ? 1 : 0)
    if (!trace.upstream) return
    // What the upstream received is what explain says it would receive.
    const echoed = JSON.parse(live.stdout.slice(0, cut)) as { url: string; headers: Record<string, string> }
    expect(trace.upstream.requestTarget).toBe(echoed.url)
    const forwarding = ['host', 'x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host']
    const pick = (all: Record<string, string>) =>
      Object.fromEntries(forwarding.map((name) => [name, all[name]]))
    expect(pick(trace.upstream.headers)).toEqual(pick(echoed.headers))
    // Every header explain says the upstream gets, it gets; the client's that explain says are dropped, it does not.
    for (const [name, value] of Object.entries(trace.upstream.headers))
      if (name !== 'x-request-id') expect(echoed.headers[name], name).toBe(value)
    for (const header of headers) {
      const name = (header.split(':', 1)[0] as string).toLowerCase()
      if (!(name in trace.upstream.headers)) expect(echoed.headers, name).not.toHaveProperty(name)
    }
  })

  it('prints each guard with its verdict and the rule that decided', async () => {
    const result = await runCli([
      'explain',
      '--policies',
      gateway.policiesDir,
      '--url',
      'http://shop.test/studio/tables',
      '--ip',
      '203.0.113.7',
    ])
    expect(result.code).toBe(1)
    expect(result.stdout).toContain('1. clientIp                 allow  203.0.113.7 (from peer')
    expect(result.stdout).toContain(
      '4. access                   DENY  PCL_ACCESS_DENIED by access[0] /studio/**',
    )
    expect(result.stdout).toContain(
      'result: refused; status 403 PCL_ACCESS_DENIED (rule access[0] /studio/**)',
    )
    // What the gateway does to the app's answers, cookies included.
    expect(result.stdout).toContain("edits of the app's answers:")
    expect(result.stdout).toContain('  Set-Cookie: Secure added over HTTPS; SameSite=Lax where none is set')
    expect(result.stdout).toMatch(
      / {2}removed: server, x-powered-by; added where the app set none: .*x-content-type-options: nosniff/,
    )
  })
})
