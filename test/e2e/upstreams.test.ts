import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { closedPort, httpUpstream, refusingPort, type Upstream } from '../support/upstreams.js'

/** A target that names itself and counts what it received, by method. */
async function namedTarget(
  name: string,
  behave?: (request: IncomingMessage, response: ServerResponse) => boolean,
): Promise<Upstream & { name: string; seen: string[] }> {
  const seen: string[] = []
  const upstream = await httpUpstream((request, response) => {
    seen.push(`${request.method} ${request.url}`)
    if (behave?.(request, response)) return
    request.resume()
    request.on('end', () => response.writeHead(200, { 'x-target': name }).end(name))
  })
  return { ...upstream, name, seen }
}

/** A plain-HTTP app over `targets`, with extra `upstream:` settings (one per line). */
function pool(targets: string[], upstreamSettings: string, appSettings = ''): string {
  const settings = upstreamSettings
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n')
  return `app: pool\nhosts: [pool.test]\ntls: { mode: off }\n${appSettings}\nupstream:\n  targets: [${targets.join(', ')}]\n${settings}\n`
}

describe('upstream pools', () => {
  const cleanup: { close?(): Promise<void>; stop?(): Promise<unknown> }[] = []
  afterEach(async () => {
    for (const item of cleanup.splice(0).reverse()) await (item.stop?.() ?? item.close?.())
  })

  async function gatewayFor(
    targets: Upstream[],
    upstreamExtra: string,
    appExtra = '',
  ): Promise<RunningGateway> {
    cleanup.push(...targets)
    const gateway = await startGateway({
      policies: {
        'pool.yaml': pool(
          targets.map((t) => t.url),
          upstreamExtra,
          appExtra,
        ),
      },
    })
    cleanup.push(gateway)
    return gateway
  }

  const get = (gateway: RunningGateway, headers: Record<string, string> = {}, method = 'GET') =>
    fetchOnce('http://pool.test/x', { port: gateway.ports.http, method, headers })

  it('round-robin spreads requests evenly over the targets', async () => {
    const targets = await Promise.all(['a', 'b', 'c'].map((name) => namedTarget(name)))
    const gateway = await gatewayFor(targets, 'balance: round-robin')
    const served: string[] = []
    for (let index = 0; index < 30; index++) served.push((await get(gateway)).body)
    for (const name of ['a', 'b', 'c']) expect(served.filter((entry) => entry === name)).toHaveLength(10)
  })

  it('least-connections sends new requests to the target with the fewest in progress', async () => {
    const held: ServerResponse[] = []
    const slow = await namedTarget('slow', (request, response) => {
      if (request.url !== '/hold') return false
      held.push(response)
      return true
    })
    const fast = await namedTarget('fast')
    const gateway = await gatewayFor([slow, fast], 'balance: least-connections')
    // Four requests parked: with least-connections they spread two and two, and all fast ones return.
    const parked = [1, 2, 3, 4].map(() => fetchOnce('http://pool.test/hold', { port: gateway.ports.http }))
    while (slow.seen.length + fast.seen.length < 4) await new Promise((resolve) => setTimeout(resolve, 20))
    const slowHeld = slow.seen.length
    // The slow target holds its requests; the next ones all go to the fast one, which answers at once.
    const next: string[] = []
    for (let index = 0; index < 6; index++) next.push((await get(gateway)).body)
    expect(next).toEqual(Array(6).fill('fast'))
    expect(slowHeld).toBeGreaterThan(0)
    for (const response of held) response.end('released')
    await Promise.all(parked)
  })

  it('sticky keeps a client on one target with a signed cookie, and a forged cookie pins nothing', async () => {
    const targets = await Promise.all(['a', 'b', 'c'].map((name) => namedTarget(name)))
    const gateway = await gatewayFor(targets, 'balance: sticky')
    const first = await get(gateway)
    const setCookie = String(first.headers['set-cookie'])
    expect(setCookie).toMatch(/^pcl_upstream=[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Lax$/)
    const cookie = setCookie.split(';')[0] ?? ''
    const again: string[] = []
    for (let index = 0; index < 12; index++) {
      const answer = await get(gateway, { cookie })
      again.push(answer.body)
      expect(answer.headers['set-cookie']).toBeUndefined()
    }
    expect(new Set(again)).toEqual(new Set([first.body]))

    // A forged signature, or a valid id with another target's signature, is ignored and re-signed.
    const [name, value] = cookie.split('=')
    const [id] = (value ?? '').split('.')
    const forged = await Promise.all(
      Array.from({ length: 9 }, () =>
        get(gateway, { cookie: `${name}=${id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA` }),
      ),
    )
    expect(forged.every((answer) => String(answer.headers['set-cookie']).startsWith('pcl_upstream='))).toBe(
      true,
    )
    expect(new Set(forged.map((answer) => answer.body)).size).toBeGreaterThan(1)
  })

  it('takes a failing target out (passive), retries idempotent requests on another, and never repeats a POST', async () => {
    const alive = await namedTarget('alive')
    const deadPort = refusingPort
    const gateway = await gatewayFor(
      [alive, { url: `http://127.0.0.1:${deadPort}`, port: deadPort, close: async () => {} }],
      'balance: round-robin\npassive: { failures: 2, cooldown: 10m }\nretries: 1',
    )
    // GETs never fail: a refused connection is retried on the live target.
    const gets = []
    for (let index = 0; index < 6; index++) gets.push((await get(gateway)).status)
    expect(gets).toEqual(Array(6).fill(200))
    await gateway.waitForLog(
      (line) => line.msg === 'upstream target failing: out of rotation for the cool-down',
    )

    // The dead target is out of rotation now: POSTs all reach the live one, exactly once each.
    const before = alive.seen.filter((entry) => entry.startsWith('POST')).length
    const posts = []
    for (let index = 0; index < 4; index++) posts.push((await get(gateway, {}, 'POST')).status)
    expect(posts).toEqual([200, 200, 200, 200])
    expect(alive.seen.filter((entry) => entry.startsWith('POST')).length - before).toBe(4)
  })

  it('a target killed mid-load is taken out, its requests go elsewhere, and it is put back when it returns', async () => {
    const steady = await namedTarget('steady')
    const port = await closedPort()
    const start = async () => {
      const server = createServer((request, response) => {
        request.resume()
        request.on('end', () => response.end(request.url === '/health' ? 'ok' : 'flaky'))
      })
      await listen(server, port)
      return server
    }
    let flaky = await start()
    const gateway = await gatewayFor(
      [steady, { url: `http://127.0.0.1:${port}`, port, close: async () => void flaky.close() }],
      'healthCheck: { path: /health, interval: 100ms, timeout: 500ms, healthyThreshold: 2, unhealthyThreshold: 2 }\nretries: 1',
    )
    const served: string[] = []
    const statuses: number[] = []
    for (let index = 0; index < 40; index++) {
      if (index === 10) {
        flaky.closeAllConnections()
        await new Promise((resolve) => flaky.close(resolve))
        // Let the pool see its keep-alive connections close before the next request.
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const answer = await get(gateway)
      statuses.push(answer.status)
      served.push(answer.body)
    }
    // Not one request failed: refused connections were retried on the steady target.
    expect(statuses).toEqual(Array(40).fill(200))
    expect(served.slice(0, 10)).toContain('flaky')
    expect(served.slice(10)).not.toContain('flaky')
    await gateway.waitForLog(
      (line) => line.msg === 'upstream target failed its health checks: out of rotation',
    )

    flaky = await start()
    await gateway.waitForLog((line) => line.msg === 'upstream target healthy again')
    const after: string[] = []
    for (let index = 0; index < 6; index++) after.push((await get(gateway)).body)
    expect(after).toContain('flaky')
    expect(after).toContain('steady')
  })

  it('a POST to a target that drops it is not retried; a GET that reached the app is not either', async () => {
    const dropping = await namedTarget('dropping', (request) => {
      request.socket.destroy()
      return true
    })
    const gateway = await gatewayFor([dropping], 'retries: 3\npassive: { failures: 100 }')
    expect((await get(gateway, {}, 'POST')).status).toBe(502)
    expect((await get(gateway)).status).toBe(502)
    // The request reached the app: each was sent exactly once.
    expect(dropping.seen).toEqual(['POST /x', 'GET /x'])
  })

  it('active health checks take a target out and put it back; no healthy target is an immediate 503 and /ready fails', async () => {
    let healthy = true
    const flaky = await namedTarget('flaky', (request, response) => {
      if (request.url !== '/health') return false
      response.writeHead(healthy ? 200 : 503).end()
      return true
    })
    const gateway = await gatewayFor(
      [flaky],
      'healthCheck: { path: /health, interval: 100ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 2 }',
      'healthPath: /.well-known/portcullis-health',
    )
    const forBalancer = () =>
      fetchOnce('http://pool.test/.well-known/portcullis-health', { port: gateway.ports.http })
    expect((await forBalancer()).json()).toEqual({ status: 'healthy', app: 'pool', healthyTargets: 1 })
    expect((await get(gateway)).status).toBe(200)
    healthy = false
    await gateway.waitForLog(
      (line) => line.msg === 'upstream target failed its health checks: out of rotation',
    )
    const refused = await get(gateway)
    expect(refused.status).toBe(503)
    expect(refused.json()).toMatchObject({ error: { code: 'PCL_NO_HEALTHY_UPSTREAM' } })
    expect((await forBalancer()).status).toBe(503)
    const ready = await fetchOnce('http://127.0.0.1/ready', { port: gateway.ports.admin })
    expect(ready.status).toBe(503)
    expect(ready.json()).toMatchObject({
      status: 'unhealthy',
      checks: { upstreams: { status: 'fail', apps: { pool: { healthy: 0, targets: 1 } } } },
    })
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(metrics).toContain(`portcullis_upstream_healthy{app="pool",target="${flaky.url}"} 0`)

    healthy = true
    await gateway.waitForLog((line) => line.msg === 'upstream target healthy again')
    expect((await get(gateway)).status).toBe(200)
    expect((await fetchOnce('http://127.0.0.1/ready', { port: gateway.ports.admin })).status).toBe(200)
  })

  it('health checks with expectations: a 200 whose JSON says the database is down takes the target out', async () => {
    let connected = true
    const app = await namedTarget('pgstack', (request, response) => {
      if (request.url !== '/health') return false
      response.writeHead(200, { 'content-type': 'application/json' })
      response.end(JSON.stringify({ status: 'ok', pg_connected: connected, db: { replicas: 2 } }))
      return true
    })
    const gateway = await gatewayFor(
      [app],
      [
        'healthCheck:',
        '  path: /health',
        '  interval: 100ms',
        '  healthyThreshold: 1',
        '  unhealthyThreshold: 1',
        '  expect: { status: [200], body: "ok", json: { pg_connected: true, db.replicas: 2 } }',
      ].join('\n'),
    )
    expect((await get(gateway)).status).toBe(200)
    connected = false
    await gateway.waitForLog(
      (line) => line.msg === 'upstream target failed its health checks: out of rotation',
    )
    expect((await get(gateway)).status).toBe(503)
    connected = true
    await gateway.waitForLog((line) => line.msg === 'upstream target healthy again')
    expect((await get(gateway)).status).toBe(200)
  })
})
