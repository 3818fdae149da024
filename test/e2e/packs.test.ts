import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage } from 'node:http'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { hashPassword } from '../../src/auth/passwords.js'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { deployable, healthOf, hostOf, type Pack, packs, packsDir } from '../support/packs.js'
import { type Pebble, startPebble } from '../support/pebble.js'
import { type RedisServer, startRedis } from '../support/redis.js'
import { closedPort } from '../support/upstreams.js'

interface StandIn {
  url: string
  seen: string[]
  close(): Promise<void>
}

/**
 * A stand-in for one app: its health endpoint as the checklist shows it, an echo of everything else
 * (so tests see what reached the app), a large JSON document, a session cookie without SameSite, and
 * WebSocket echo on every path.
 */
async function standIn(app: Pack, name: string = app): Promise<StandIn> {
  const seen: string[] = []
  const server = createServer((request: IncomingMessage, response) => {
    seen.push(`${request.method} ${request.url}`)
    request.resume()
    request.on('end', () => {
      if (request.url === '/health') return response.writeHead(200, json).end(JSON.stringify(healthOf[app]))
      if (request.url === '/big')
        return response
          .writeHead(200, json)
          .end(JSON.stringify({ rows: Array(400).fill({ name, ok: true }) }))
      if (request.url === '/login')
        return response.writeHead(200, { ...json, 'set-cookie': 'session=abc; Path=/' }).end('{}')
      response
        .writeHead(200, json)
        .end(
          JSON.stringify({ app, name, method: request.method, url: request.url, headers: request.headers }),
        )
    })
  })
  new WebSocketServer({ server }).on('connection', (socket) =>
    socket.on('message', (data) => socket.send(data)),
  )
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
const json = { 'content-type': 'application/json' }

describe('policy packs for the five seed apps', () => {
  let pebble: Pebble
  let redis: RedisServer
  let gateway: RunningGateway
  let rootFile: string
  let rootPem: string
  let assets: string
  const standIns = new Map<string, StandIn>()
  const password = 'correct horse battery'

  beforeAll(async () => {
    const ports = { http: await closedPort(), https: await closedPort() }
    ;[pebble, redis] = await Promise.all([
      startPebble({ httpPort: ports.http, tlsPort: ports.https }),
      startRedis(),
    ])
    for (const pack of packs) standIns.set(pack, await standIn(pack))
    standIns.set('horizon-2', await standIn('horizon', 'horizon-2'))
    const work = await mkdtemp(path.join(tmpdir(), 'pcl-packs-'))
    assets = path.join(work, 'dist')
    await mkdir(assets)
    await writeFile(path.join(assets, 'app.5d41402a.js'), 'export const built = true\n')
    const hash = await hashPassword(password)
    const policies: Record<string, string> = {}
    for (const pack of packs) {
      const targets =
        pack === 'horizon'
          ? [standIns.get('horizon')?.url ?? '', standIns.get('horizon-2')?.url ?? '']
          : [standIns.get(pack)?.url ?? '']
      policies[`${pack}.yaml`] = await deployable(pack, targets, (doc) => {
        // pebble stands for Let's Encrypt.
        doc.setIn(['tls', 'acme', 'directory'], pebble.directory)
        if (pack === 'superposition') doc.setIn(['basicAuth', 'users'], { admin: hash })
        if (pack === 'sm') doc.setIn(['static', 0, 'dir'], assets)
        if (pack === 'horizon') {
          // The per-replica metrics routes name each replica.
          doc.setIn(['routes', 2, 'upstream', 'targets'], [targets[0]])
          doc.setIn(['routes', 3, 'upstream', 'targets'], [targets[1]])
        }
      })
    }
    gateway = await startGateway({
      policies,
      env: { NODE_EXTRA_CA_CERTS: pebble.apiCaFile },
      args: [
        '--http-port',
        String(ports.http),
        '--https-port',
        String(ports.https),
        '--redis',
        redis.url,
        '--redis-timeout',
        '2s',
        '--acme-poll',
        '50ms',
        '--acme-retry',
        '300ms',
        // The packs are production policies: the production rules run at start and must all pass.
        '--env',
        'production',
      ],
    })
    const issued = (app: string) => (line: { msg?: string; app?: unknown }) =>
      line.msg === 'ACME certificate issued and now served' && line.app === app
    await Promise.all(packs.map((pack) => gateway.waitForLog(issued(pack), 30_000)))
    rootFile = path.join(work, 'pebble-root.pem')
    rootPem = await pebble.issuingRoot()
    await writeFile(rootFile, rootPem)
  }, 60_000)

  afterAll(async () => {
    await gateway?.stop()
    for (const server of standIns.values()) await server.close()
    await redis?.stop()
    await pebble?.stop()
  })

  const https = (pack: Pack, target: string, options: Partial<Parameters<typeof fetchOnce>[1]> = {}) =>
    fetchOnce(`https://${hostOf[pack]}${target}`, {
      port: gateway.ports.https,
      ca: rootPem,
      ...options,
    })
  /** Through the trusted load balancer (127.0.0.2), for a client at `client`. */
  const viaBalancer = (
    pack: Pack,
    target: string,
    client: string,
    options: Partial<Parameters<typeof fetchOnce>[1]> = {},
  ) =>
    https(pack, target, {
      localAddress: '127.0.0.2',
      ...options,
      headers: { 'x-forwarded-for': client, ...options.headers },
    })
  it.each(packs)('%s passes check --production as shipped', async (pack) => {
    const result = await runCli([
      'check',
      '--production',
      '--redis',
      'redis://redis:6379',
      path.join(packsDir, `${pack}.yaml`),
    ])
    expect(result.stdout.trim()).toBe('1 policy file(s) valid')
    expect(result.code).toBe(0)
  })

  it.each(packs)('%s passes verify end to end', async (pack) => {
    const result = await runCli([
      'verify',
      `https://${hostOf[pack]}:${gateway.ports.https}`,
      '--connect',
      '127.0.0.1',
      '--http-port',
      String(gateway.ports.http),
      '--ca',
      rootFile,
      '--policy',
      path.join(gateway.policiesDir, `${pack}.yaml`),
      '--health',
      '/health',
      '--format',
      'json',
    ])
    const checks = JSON.parse(result.stdout) as { id: string; status: string; evidence: string }[]
    expect(checks.filter((check) => check.status === 'fail')).toEqual([])
    expect(checks.filter((check) => check.status === 'pass').map((check) => check.id)).toEqual(
      expect.arrayContaining([
        'https-redirect',
        'tls-version',
        'certificate',
        'hsts',
        'cors-foreign-origin',
        'forwarded-for-spoofing',
        'restricted-paths',
        'health',
      ]),
    )
    expect(result.code).toBe(0)
  })

  it('superposition: a login in front of the app and its /admin UI, health open, migrations from the admin network only', async () => {
    const basic = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
    const anonymous = await https('superposition', '/workspaces')
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers['www-authenticate']).toBe('Basic realm="Superposition", charset="UTF-8"')
    expect((await https('superposition', '/workspaces', { headers: { authorization: basic } })).status).toBe(
      200,
    )
    expect((await https('superposition', '/health')).json()).toEqual({ status: 'ok' })
    // The app's UI lives under /admin: behind the login, not refused.
    expect((await https('superposition', '/admin/organisations')).status).toBe(401)
    expect(
      (await https('superposition', '/admin/organisations', { headers: { authorization: basic } })).status,
    ).toBe(200)
    const migrate = '/workspaces/w1/db/migrate'
    expect(
      (await https('superposition', migrate, { method: 'POST', headers: { authorization: basic } })).status,
    ).toBe(403)
    const fromAdmin = await viaBalancer('superposition', migrate, '10.1.2.3', {
      method: 'POST',
      headers: { authorization: basic },
    })
    expect(fromAdmin.status).toBe(200)
    expect(standIns.get('superposition')?.seen.filter((entry) => entry === `POST ${migrate}`)).toHaveLength(1)
  })

  it('pgstack: Studio from trusted IPs only, /sql and the demo endpoint unreachable, browser Origins checked, its clients pass, gzip', async () => {
    expect((await https('pgstack', '/studio/')).status).toBe(403)
    expect((await viaBalancer('pgstack', '/studio/', '10.0.0.7')).status).toBe(200)
    for (const blocked of ['/sql', '/sql/run', '/demo', '/SQL'])
      expect((await https('pgstack', blocked)).status).toBe(404)
    expect(standIns.get('pgstack')?.seen.some((entry) => /\/(sql|demo)/i.test(entry))).toBe(false)

    const open = (origin: string | undefined) =>
      new Promise<number | 'open'>((resolve) => {
        const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/realtime/v1`, {
          headers: { host: hostOf.pgstack },
          ca: rootPem,
          ...(origin ? { origin } : {}),
          // ws passes TLS options on to tls.connect; its types list only some of them.
          ...({ servername: hostOf.pgstack } as object),
        })
        socket.once('open', () => {
          socket.close()
          resolve('open')
        })
        socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0))
        socket.once('error', () => {})
      })
    expect(await open('https://app.example.com')).toBe('open')
    expect(await open(`https://${hostOf.pgstack}`)).toBe('open')
    expect(await open('https://evil.example')).toBe(403)
    // Server SDKs send no Origin: the checklist checks a browser's Origin, it does not refuse them.
    expect(await open(undefined)).toBe('open')

    // Supabase-style clients: their headers pass the preflight, Content-Range is readable, and
    // Studio's same-origin writes reach the app although its origin is not in cors.origins.
    const preflight = await https('pgstack', '/rest/v1/items', {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'PATCH',
        'access-control-request-headers':
          'apikey, x-client-info, prefer, range, accept-profile, content-type',
      },
    })
    expect(preflight.status).toBe(204)
    const read = await https('pgstack', '/rest/v1/items', { headers: { origin: 'https://app.example.com' } })
    expect(read.headers['access-control-expose-headers']).toContain('content-range')
    const studioWrite = await https('pgstack', '/rest/v1/items', {
      method: 'POST',
      headers: { origin: `https://${hostOf.pgstack}`, 'content-type': 'application/json' },
      body: '{}',
    })
    expect(studioWrite.status).toBe(200)

    const compressed = await new Promise<{ encoding: string | undefined; body: Buffer }>(
      (resolve, reject) => {
        request(
          {
            host: '127.0.0.1',
            port: gateway.ports.https,
            path: '/big',
            servername: hostOf.pgstack,
            ca: rootPem,
            headers: { host: hostOf.pgstack, 'accept-encoding': 'gzip' },
          },
          (response) => {
            const chunks: Buffer[] = []
            response.on('data', (chunk: Buffer) => chunks.push(chunk))
            response.on('end', () =>
              resolve({ encoding: response.headers['content-encoding'], body: Buffer.concat(chunks) }),
            )
          },
        )
          .on('error', reject)
          .end()
      },
    )
    expect(compressed.encoding).toBe('gzip')
    expect(JSON.parse(gunzipSync(compressed.body).toString()).rows).toHaveLength(400)
  })

  it('appstrate: one trusted hop, per-org limits on run starts keyed by the API key, inline-run size cap', async () => {
    // hops: 1 as TRUST_PROXY=1: the address the balancer saw is the client; what the client wrote in
    // front of it is not. The app gets the verified chain (set its TRUST_PROXY to 2: balancer and gateway).
    const echoed = await viaBalancer('appstrate', '/api/whoami', '198.51.100.1, 203.0.113.9')
    const received = echoed.json<{ headers: Record<string, string> }>().headers
    expect(received['x-real-ip']).toBe('203.0.113.9')
    expect(received['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.2')

    const start = (key: string) =>
      https('appstrate', '/api/runs/remote', {
        method: 'POST',
        body: '{}',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      })
    const first = await start('ask_org_one')
    const second = await start('ask_org_one')
    const other = await start('ask_org_two')
    const remaining = (answer: typeof first) =>
      /"per-org";r=(\d+)/.exec(String(answer.headers.ratelimit))?.[1]
    expect(String(first.headers['ratelimit-policy'])).toContain('"per-org";q=200;w=60')
    expect(Number(remaining(second))).toBe(Number(remaining(first)) - 1)
    expect(remaining(other)).toBe(remaining(first))
    // Dashboard reads and run-event ingestion are not run starts: the per-org limit does not count them.
    for (const target of ['/api/agents', '/api/runs/r1/events']) {
      const answer = await https('appstrate', target, {
        method: target.endsWith('events') ? 'POST' : 'GET',
        headers: { authorization: 'Bearer ask_org_one' },
        ...(target.endsWith('events') ? { body: '{}' } : {}),
      })
      expect(answer.status).toBe(200)
      expect(String(answer.headers['ratelimit-policy'])).not.toContain('per-org')
    }

    // An inline run within the app's own limits (64 KiB manifest + 200,000-character prompt) passes;
    // one far beyond them is refused at the edge.
    const inline = (prompt: string) => {
      const body = JSON.stringify({ manifest: 'm'.repeat(60 * 1024), prompt })
      return https('appstrate', '/api/runs/inline', {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      })
    }
    expect((await inline('é'.repeat(150_000))).status).toBe(200)
    const tooBig = await inline('x'.repeat(2 * 1024 * 1024))
    expect(tooBig.status).toBe(413)
    expect(tooBig.json()).toMatchObject({ error: { code: 'PCL_BODY_TOO_LARGE' } })
  })

  it('horizon: sticky sessions across two replicas, dashboards need an Origin, metrics for the monitoring network', async () => {
    const first = await https('horizon', '/api/fleet')
    const cookie = String(first.headers['set-cookie']).split(';')[0] ?? ''
    expect(String(first.headers['set-cookie'])).toMatch(/; HttpOnly; SameSite=Lax; Secure$/)
    const names = new Set<string>()
    for (let index = 0; index < 8; index++)
      names.add((await https('horizon', '/api/fleet', { headers: { cookie } })).json<{ name: string }>().name)
    expect(names).toEqual(new Set([first.json<{ name: string }>().name]))

    expect((await https('horizon', '/metrics')).status).toBe(403)
    expect((await viaBalancer('horizon', '/metrics', '10.9.9.9')).status).toBe(200)
    // Each replica scraped at its own address, as /metrics on that replica.
    expect((await https('horizon', '/replicas/b/metrics')).status).toBe(403)
    for (const [replica, name] of [
      ['a', 'horizon'],
      ['b', 'horizon-2'],
    ]) {
      const scraped = await viaBalancer('horizon', `/replicas/${replica}/metrics`, '10.9.9.9')
      expect(scraped.json()).toMatchObject({ name, url: '/metrics' })
    }

    const upgrade = (target: string, origin?: string) =>
      https('horizon', target, {
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          ...(origin ? { origin } : {}),
        },
      })
    expect((await upgrade('/ws/dashboard/live')).status).toBe(403)
    expect((await upgrade('/ws/dashboard/live', 'https://evil.example')).status).toBe(403)

    // Two caps, counted apart: 25 sensors behind one address all connect (one app-wide cap of 20 per
    // IP refused 5 of them), while the dashboard route admits its 10 per IP and no more.
    const open = (target: string, origin?: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        // SNI for the pack's host (ws hands TLS options on to https.request, which knows servername).
        const tls = {
          ca: rootPem,
          servername: hostOf.horizon,
          headers: { host: hostOf.horizon, ...(origin ? { origin } : {}) },
        }
        const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}${target}`, tls)
        socket.once('open', () => resolve(socket))
        socket.once('error', reject)
        socket.once('unexpected-response', (_request, response) =>
          reject(new Error(`HTTP ${response.statusCode}`)),
        )
      })
    const opened: WebSocket[] = []
    try {
      for (let index = 0; index < 25; index++) opened.push(await open(`/ws/sensors/${index}`))
      const dashboard = 'https://horizon.example.com'
      for (let index = 0; index < 10; index++) opened.push(await open('/ws/dashboard/live', dashboard))
      await expect(open('/ws/dashboard/live', dashboard)).rejects.toThrow('HTTP 429')
    } finally {
      for (const socket of opened) socket.terminate()
    }
  })

  it('sm: /admin/health and the API docs from internal networks only, the admin UI left to the app, /build/ served immutable, cookies hardened', async () => {
    expect((await https('sm', '/admin/health')).status).toBe(403)
    expect((await viaBalancer('sm', '/admin/health', '10.2.2.2')).status).toBe(200)
    // The checklist gates the admin UI by the app's permissions: it reaches the app.
    expect((await https('sm', '/admin/users')).status).toBe(200)
    for (const docs of ['/docs', '/redoc', '/openapi.json', '/DOCS/']) {
      expect((await https('sm', docs)).status).toBe(404)
      expect((await viaBalancer('sm', docs, '10.2.2.2')).status).toBe(200)
    }
    const built = await https('sm', '/build/app.5d41402a.js')
    expect(built.status).toBe(200)
    expect(built.body).toBe('export const built = true\n')
    expect(built.headers['cache-control']).toBe('public, max-age=31536000, immutable')
    expect(standIns.get('sm')?.seen.some((entry) => entry.includes('/build/'))).toBe(false)
    const login = await https('sm', '/login')
    expect(login.headers['set-cookie']).toEqual(['session=abc; Path=/; Secure; HttpOnly; SameSite=Lax'])
  })
})
