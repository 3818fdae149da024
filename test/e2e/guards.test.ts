import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import type { EchoReply } from '../../src/demo/echo-app.js'
import { execFileAsync, fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, httpUpstream, type Upstream } from '../support/upstreams.js'

/** What the demo app echoes; header values here are single strings. */
type Echo = EchoReply & { headers: Record<string, string> }

/**
 * One gateway, the guarded app served on plain HTTP (tls: off) so the client can reach it from
 * 127.0.0.1 and, through a trusted proxy address, from 127.0.0.2.
 */
describe('edge guards end to end', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let leaky: Upstream
  const seenByUpstream: string[] = []

  beforeAll(async () => {
    echo = await echoUpstream()
    echo.port
    leaky = await httpUpstream((request, response) => {
      seenByUpstream.push(request.url ?? '')
      response.setHeader('access-control-allow-origin', '*')
      response.setHeader('access-control-allow-credentials', 'true')
      response.setHeader('server', 'leaky/1.0')
      response.setHeader('x-powered-by', 'PHP/5')
      response.setHeader('set-cookie', ['sid=abc; Path=/', 'csrf=t; Path=/'])
      response.end('ok')
    })
    const policy = (app: string, target: string) => `
app: ${app}
hosts: [${app}.test]
upstream: { targets: ["${target}"] }
tls: { mode: "off" }
clientIp: { trustedProxies: [127.0.0.2] }
cors:
  origins: [https://app.example.com, "https://*.example.org"]
  credentials: true
access:
  - { path: /studio/**, allow: [10.0.0.0/8] }
  - { path: /sql, deny: all, respond: 404 }
  - { path: /workspaces/*/db/migrate, methods: [POST], allow: [10.0.0.0/8] }
websocket:
  maxConnections: 3
  maxConnectionsPerIp: 2
  maxMessageSize: 1kb
  idleTimeout: 600ms
  paths:
    - { path: /realtime/**, requireOrigin: true }
limits:
  maxBodySize: 2kb
  bodySizes: [{ path: /api/manifests/**, max: 64kb }]
  maxUrlLength: 200
  maxHeaderSize: 4kb
cookies: { exclude: [csrf], httpOnly: [sid] }
`
    gateway = await startGateway({
      policies: {
        'guarded.yaml': policy('guarded', echo.url),
        'leaky.yaml': policy('leaky', leaky.url),
        // Behind a TLS-terminating balancer (127.0.0.2): the app asks for HSTS.
        'terminated.yaml': [
          'app: terminated',
          'hosts: [terminated.test]',
          `upstream: { targets: ["${echo.url}"] }`,
          'tls: { mode: "off" }',
          'clientIp: { trustedProxies: [127.0.0.2] }',
          'hsts: { maxAge: 31536000 }',
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([echo?.close(), leaky?.close()])
  })

  /** A raw request target through curl, so no client library normalises it first. */
  async function raw(target: string, options: { method?: string; from?: string; headers?: string[] } = {}) {
    const args = [
      '-sS',
      '-o',
      '-',
      '-w',
      '\n%{http_code}',
      '--path-as-is',
      '-X',
      options.method ?? 'GET',
      '-H',
      'Host: guarded.test',
    ]
    for (const header of options.headers ?? []) args.push('-H', header)
    if (options.from) args.push('--interface', options.from)
    args.push(`http://127.0.0.1:${gateway.ports.http}${target}`)
    const { stdout } = await execFileAsync('curl', args)
    const cut = stdout.lastIndexOf('\n')
    return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) }
  }

  describe('bypass corpus: none of these reach a restricted path from a disallowed IP', () => {
    it.each([
      '/studio',
      '/studio/',
      '/Studio/',
      '/STUDIO/tables',
      '/studio%2f',
      '/studio%2Ftables',
      '/%73tudio/',
      '/%53TUDIO/',
      '/./studio/',
      '//studio/',
      '///studio',
      '/api/../studio/',
      '/api/%2e%2e/studio/',
      '/api/.%2E/studio',
      '/studio;jsessionid=1/',
      '/studio/..;/studio',
      '/x/..;/studio/',
      '/.;/studio',
      '/studio#',
      '/studio#/../../public',
      '/sql#',
      '/sql;',
      '/sql?#',
      '/studio\\',
      '/%5cstudio',
      '/studio%00.html',
      '/studio%c0%af',
      '/sql',
      '/SQL/',
      '/sql/.',
      '/%53ql',
      '/workspaces/1/db/migrate',
      '/workspaces/1/db/migrate/',
      '/workspaces/1//db/migrate',
      '/Workspaces/1/DB/migrate',
    ])('%s', async (target) => {
      seenByUpstream.length = 0
      const method = target.startsWith('/workspaces') || target.startsWith('/Workspaces') ? 'POST' : 'GET'
      const answer = await raw(target, { method })
      expect([400, 403, 404]).toContain(answer.status)
      expect(answer.body).toMatch(/"code":"PCL_(ACCESS_DENIED|NOT_FOUND|BAD_REQUEST)"/)
    })

    it('a spoofed X-Forwarded-For from an untrusted peer does not open a restricted path', async () => {
      const answer = await raw('/studio/', {
        headers: ['X-Forwarded-For: 10.0.0.1', 'Forwarded: for=10.0.0.1', 'X-Real-IP: 10.0.0.1'],
      })
      expect(answer.status).toBe(403)
    })

    it('a trusted proxy’s X-Forwarded-For is believed', async () => {
      const allowed = await raw('/studio/', { from: '127.0.0.2', headers: ['X-Forwarded-For: 10.0.0.1'] })
      expect(allowed.status).toBe(200)
      const denied = await raw('/studio/', {
        from: '127.0.0.2',
        headers: ['X-Forwarded-For: 10.0.0.1, 198.51.100.7'],
      })
      expect(denied.status).toBe(403)
    })
  })

  it('the upstream receives the canonical path, the query untouched, and the verified chain', async () => {
    const answer = await raw('//api/./v1/../items/%7Euser?q=%2e%2e&x=1', {
      from: '127.0.0.2',
      headers: ['X-Forwarded-For: 6.6.6.6, 198.51.100.7'],
    })
    const echoed = JSON.parse(answer.body) as Echo
    expect(echoed.url).toBe('/api/items/~user?q=%2e%2e&x=1')
    expect(echoed.headers['x-forwarded-for']).toBe('198.51.100.7, 127.0.0.2')
    expect(echoed.headers['x-real-ip']).toBe('198.51.100.7')
  })

  it('spells a trusted proxy’s IPv4-mapped IPv6 client as the IPv4 address, upstream and in the rules', async () => {
    for (const mapped of ['::ffff:a00:1', '0:0:0:0:0:ffff:10.0.0.1', '[::ffff:a00:1]:4711']) {
      const answer = await raw('/studio/x', { from: '127.0.0.2', headers: [`X-Forwarded-For: ${mapped}`] })
      expect(answer.status).toBe(200)
      const echoed = JSON.parse(answer.body) as Echo
      expect(echoed.headers['x-real-ip']).toBe('10.0.0.1')
      expect(echoed.headers['x-forwarded-for']).toBe('10.0.0.1, 127.0.0.2')
    }
  })

  describe('behind a TLS-terminating balancer (tls.mode: off, the balancer trusted)', () => {
    const via = (from: string, proto: string) =>
      execFileAsync('curl', [
        '-s',
        '-o',
        '/dev/null',
        '-D',
        '-',
        '--interface',
        from,
        '-H',
        'Host: terminated.test',
        '-H',
        `X-Forwarded-Proto: ${proto}`,
        `http://127.0.0.1:${gateway.ports.http}/account?tab=1`,
      ]).then(({ stdout }) => stdout.toLowerCase())

    it('redirects a client the balancer says came over HTTP, and sends HSTS to one that came over HTTPS', async () => {
      const plain = await via('127.0.0.2', 'http')
      expect(plain).toMatch(/^http\/1\.1 308/)
      expect(plain).toContain('location: https://terminated.test/account?tab=1')
      const tls = await via('127.0.0.2', 'https')
      expect(tls).toMatch(/^http\/1\.1 200/)
      expect(tls).toContain('strict-transport-security: max-age=31536000')
    })

    it('ignores the forwarded protocol of a peer it does not trust', async () => {
      for (const proto of ['http', 'https']) {
        const answer = await via('127.0.0.1', proto)
        expect(answer).toMatch(/^http\/1\.1 200/)
        expect(answer).not.toContain('strict-transport-security')
      }
    })
  })

  describe('Expect: 100-continue', () => {
    /** Sends the head, then the body only if the gateway says 100 Continue; returns what came back. */
    function expectContinue(length: number): Promise<{ first: string; all: string; closed: boolean }> {
      return new Promise((resolve, reject) => {
        const socket = connect(gateway.ports.http, '127.0.0.1', () =>
          socket.write(
            `POST /upload HTTP/1.1\r\nHost: guarded.test\r\nContent-Length: ${length}\r\n` +
              'Content-Type: text/plain\r\nExpect: 100-continue\r\n\r\n',
          ),
        )
        let all = ''
        let first = ''
        socket.on('data', (chunk: Buffer) => {
          all += chunk.toString('latin1')
          if (!first) {
            first = all.split('\r\n', 1)[0] ?? ''
            if (first.includes(' 100 ')) socket.write('x'.repeat(length))
          }
          if (/\r\n\r\n[\s\S]*"(code|url)"/.test(all.replace(/^HTTP\/1\.1 100[^\n]*\n\r\n/, ''))) {
            socket.end()
          }
        })
        socket.once('close', () => resolve({ first, all, closed: true }))
        socket.once('error', reject)
        socket.setTimeout(5000, () => socket.destroy(new Error(`no answer; got ${JSON.stringify(all)}`)))
      })
    }

    it('answers 413 before inviting a body over the limit, and closes the connection', async () => {
      const answer = await expectContinue(100_000)
      expect(answer.first).toBe('HTTP/1.1 413 Payload Too Large')
      expect(answer.all).not.toContain('100 Continue')
      expect(answer.all).toMatch(/connection: close/i)
      expect(answer.all).toContain('"code":"PCL_BODY_TOO_LARGE"')
    })

    it('invites an admitted body with 100 Continue and forwards it', async () => {
      const answer = await expectContinue(1000)
      expect(answer.first).toBe('HTTP/1.1 100 Continue')
      expect(answer.all).toContain(`"body":"${'x'.repeat(1000)}"`)
    })
  })

  it('logs the client IP derivation and the deciding rule', async () => {
    await raw('/studio/x', { from: '127.0.0.2', headers: ['X-Forwarded-For: 198.51.100.8'] })
    const line = await gateway.waitForLog((l) => l.clientIp === '198.51.100.8' && l.status === 403)
    expect(line).toMatchObject({ code: 'PCL_ACCESS_DENIED', rule: 'access[0] /studio/**', app: 'guarded' })
  })

  describe('CORS through the gateway', () => {
    it.each([
      ['https://app.example.com', 200],
      ['https://a.example.org', 200],
      ['https://evilexample.org', 403],
      ['https://example.org.evil.net', 403],
      ['https://app.example.com.evil.net', 403],
      ['http://app.example.com', 403],
      ['null', 403],
    ])('Origin %s → %s', async (origin, status) => {
      const answer = await fetchOnce('http://leaky.test/data', {
        port: gateway.ports.http,
        headers: { origin },
      })
      expect(answer.status).toBe(status)
      expect(answer.headers.vary).toMatch(/Origin/)
      if (status === 200) {
        expect(answer.headers['access-control-allow-origin']).toBe(origin)
        expect(answer.headers['access-control-allow-credentials']).toBe('true')
      } else {
        expect(answer.headers['access-control-allow-origin']).toBeUndefined()
      }
    })

    it('replaces the app’s own CORS headers, so it cannot widen the policy', async () => {
      const answer = await fetchOnce('http://leaky.test/data', { port: gateway.ports.http })
      expect(answer.headers['access-control-allow-origin']).toBeUndefined()
      expect(answer.headers['access-control-allow-credentials']).toBeUndefined()
    })

    it('answers preflights at the edge and refuses a disallowed one with 403', async () => {
      const ok = await fetchOnce('http://leaky.test/data', {
        port: gateway.ports.http,
        method: 'OPTIONS',
        headers: { origin: 'https://app.example.com', 'access-control-request-method': 'DELETE' },
      })
      expect(ok.status).toBe(204)
      expect(ok.headers['access-control-allow-methods']).toContain('DELETE')
      const refused = await fetchOnce('http://leaky.test/data', {
        port: gateway.ports.http,
        method: 'OPTIONS',
        headers: { origin: 'https://evil.test', 'access-control-request-method': 'DELETE' },
      })
      expect(refused.status).toBe(403)
      expect(refused.json()).toMatchObject({ error: { code: 'PCL_CORS_ORIGIN_DENIED' } })
    })

    it.each([
      [
        {
          'access-control-request-method': 'PUT',
          'access-control-request-headers': 'content-type, x-supabase-api-version',
        },
        'PCL_CORS_HEADER_DENIED',
        'Header x-supabase-api-version is not allowed',
      ],
      [
        { 'access-control-request-method': 'PROPFIND' },
        'PCL_CORS_METHOD_DENIED',
        'Method PROPFIND is not allowed',
      ],
    ])(
      'names what a preflight refused, in its answer and the access line: %j',
      async (asked, code, reason) => {
        // A browser shows only "Failed to fetch": the operator must be able to tell which header it was.
        const refused = await fetchOnce('http://guarded.test/api/items', {
          port: gateway.ports.http,
          method: 'OPTIONS',
          headers: { origin: 'https://app.example.com', ...asked },
        })
        expect(refused.json()).toMatchObject({ error: { code, message: reason } })
        const id = refused.headers['x-request-id']
        const line = await gateway.waitForLog((entry) => entry.msg === 'request' && entry.reqId === id)
        expect(line).toMatchObject({ code, reason })
      },
    )
  })

  it('hardens the app’s response headers and cookies', async () => {
    const answer = await fetchOnce('http://leaky.test/data', { port: gateway.ports.http })
    expect(answer.headers.server).toBeUndefined()
    expect(answer.headers['x-powered-by']).toBeUndefined()
    expect(answer.headers['x-content-type-options']).toBe('nosniff')
    expect(answer.headers['x-frame-options']).toBe('SAMEORIGIN')
    // Plain HTTP: no Secure, SameSite added, HttpOnly only where named; the excluded cookie is left alone.
    expect(answer.headers['set-cookie']).toEqual([
      'sid=abc; Path=/; HttpOnly; SameSite=Lax',
      'csrf=t; Path=/',
    ])
  })

  describe('limits', () => {
    it.each([
      ['declared', { 'content-type': 'text/plain' }],
      ['chunked', { 'transfer-encoding': 'chunked' }],
    ])('refuses a %s body over the limit with 413 and the rule', async (_kind, headers) => {
      const answer = await fetchOnce('http://guarded.test/upload', {
        port: gateway.ports.http,
        method: 'POST',
        headers,
        body: 'x'.repeat(3000),
      })
      expect(answer.status).toBe(413)
      expect(answer.json()).toMatchObject({ error: { code: 'PCL_BODY_TOO_LARGE' } })
    })

    it('applies a per-path body limit', async () => {
      const answer = await fetchOnce('http://guarded.test/api/manifests/new', {
        port: gateway.ports.http,
        method: 'POST',
        body: 'x'.repeat(60_000),
      })
      expect(answer.status).toBe(200)
      expect(answer.json<Echo>().body.length).toBe(60_000)
    })

    it('refuses long URLs with 414 and large headers with 431', async () => {
      const long = await fetchOnce(`http://guarded.test/${'a'.repeat(300)}`, { port: gateway.ports.http })
      expect(long.status).toBe(414)
      const big = await fetchOnce('http://guarded.test/', {
        port: gateway.ports.http,
        headers: { 'x-big': 'a'.repeat(5000) },
      })
      expect(big.status).toBe(431)
      expect(big.json()).toMatchObject({ error: { code: 'PCL_HEADERS_TOO_LARGE' } })
    })
  })

  describe('WebSockets', () => {
    const connect = (path: string, headers: Record<string, string> = {}) =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(`ws://127.0.0.1:${gateway.ports.http}${path}`, {
          headers: { host: 'guarded.test', ...headers },
        })
        socket.once('open', () => resolve(socket))
        socket.once('unexpected-response', (_request, response) =>
          reject(new Error(`HTTP ${response.statusCode}`)),
        )
        socket.once('error', reject)
      })

    /** Open WebSockets of the guarded app, as the gateway counts them. */
    const openSockets = async () => {
      const metrics = await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })
      return Number(/^portcullis_websockets_open\{app="guarded"\} (\d+)$/m.exec(metrics.body)?.[1] ?? 0)
    }

    const closeAndWait = async (...sockets: WebSocket[]) => {
      const before = await openSockets()
      await Promise.all(
        sockets.map((socket) => {
          socket.close()
          return new Promise((resolve) => socket.once('close', resolve))
        }),
      )
      // The gateway releases a place once both sides are closed: wait until it says so.
      while ((await openSockets()) > before - sockets.length)
        await new Promise((resolve) => setTimeout(resolve, 20))
    }

    it('checks Origin before the upgrade, and requires one where the policy says so', async () => {
      await expect(connect('/realtime/feed')).rejects.toThrow('HTTP 403')
      await expect(connect('/realtime/feed', { origin: 'https://evil.test' })).rejects.toThrow('HTTP 403')
      await expect(connect('/chat', { origin: 'https://evilexample.org' })).rejects.toThrow('HTTP 403')
      await closeAndWait(await connect('/realtime/feed', { origin: 'https://app.example.com' }))
    })

    it('caps connections per client IP and per app with 429', async () => {
      const first = await connect('/a')
      const second = await connect('/b')
      await expect(connect('/c')).rejects.toThrow('HTTP 429')
      await closeAndWait(first)
      const again = await connect('/d')
      await closeAndWait(second, again)
    })

    it('closes idle connections and oversize messages', async () => {
      const idle = await connect('/idle')
      const code = await new Promise<number>((resolve) =>
        idle.once('close', (closeCode) => resolve(closeCode)),
      )
      expect(code).toBe(1001)
      const big = await connect('/big')
      big.send('x'.repeat(2048))
      const bigCode = await new Promise<number>((resolve) =>
        big.once('close', (closeCode) => resolve(closeCode)),
      )
      expect(bigCode).toBe(1009)
    })
  })
})
