import { mkdtemp, readdir, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { certificateFingerprint, execFileAsync, fetchOnce } from '../support/clients.js'
import {
  type LogLine,
  policyYaml,
  type RunningGateway,
  startGateway,
  stoppedAfterEach,
  timeoutScale,
} from '../support/gateway.js'
import { acmeArgs, acmePolicy, gatewayPorts, startPebble } from '../support/pebble.js'
import { type RedisServer, startRedis } from '../support/redis.js'
import { echoUpstream, heldUpstream, httpUpstream, type Upstream, wsUpstream } from '../support/upstreams.js'

/**
 * `--workers 2`: Node's cluster hands each new connection to the next worker in turn, so requests sent
 * on fresh connections alternate between the two. Every test checks in the access log that both
 * workers took part, then that the shared state held exactly as one process would hold it.
 */
const workers = ['--workers', '2', '--watch', 'false']

/** The workers that wrote access-log lines for these requests. */
function servingWorkers(logs: LogLine[], path: string): Set<unknown> {
  return new Set(
    logs.filter((line) => line.path === path && line.status !== undefined).map((line) => line.worker),
  )
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs * timeoutScale
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

function sum(metrics: string, name: string, filter = ''): number {
  return metrics
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) && line.includes(filter))
    .reduce((total, line) => total + Number(line.split(' ').at(-1)), 0)
}

// Each test starts one to three primaries with two workers each: more processes than elsewhere.
describe('--workers 2', { timeout: 90_000 * timeoutScale }, () => {
  let upstream: Upstream
  const running = stoppedAfterEach()

  beforeAll(async () => {
    upstream = await echoUpstream()
  })
  afterAll(async () => {
    await upstream?.close()
  })

  async function launch(options: Parameters<typeof startGateway>[0]): Promise<RunningGateway> {
    // A primary and two workers start one after the other: on a loaded machine that takes a while.
    const gateway = await startGateway({
      startTimeoutMs: 45_000,
      ...options,
      args: [...workers, ...(options.args ?? [])],
    })
    running.push(gateway)
    // Workers write their log in blocks: their lines may come a moment after the primary's.
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'worker listening').length === 2)
    return gateway
  }

  const get = (gateway: RunningGateway, path: string, host = 'app.test') =>
    fetchOnce(`http://${host}${path}`, { port: gateway.ports.http })

  it('counts a rate limit without Redis once for both workers, and /metrics adds both up', async () => {
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({
          app: 'app',
          hosts: ['app.test'],
          target: upstream.url,
          tls: '  mode: off',
          extra: 'rateLimits:\n  - { name: five, limit: 5, window: 1m, match: { path: /limited } }',
        }),
      },
    })
    const statuses: number[] = []
    for (let index = 0; index < 12; index++) statuses.push((await get(gateway, '/limited')).status)
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429])
    for (let index = 0; index < 8; index++) expect((await get(gateway, '/free')).status).toBe(200)
    await waitFor(() => servingWorkers(gateway.logs, '/limited').size === 2)
    await waitFor(() => servingWorkers(gateway.logs, '/free').size === 2)

    // Twenty requests sent, twenty counted: /metrics (asked of either worker) adds up both workers.
    for (let index = 0; index < 4; index++) {
      const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
      expect(sum(metrics, 'portcullis_requests_total', 'app="app"')).toBe(20)
      expect(sum(metrics, 'portcullis_requests_total', 'status_class="4xx"')).toBe(7)
      expect(sum(metrics, 'portcullis_rate_limit_decisions_total', 'result="allowed"')).toBe(5)
      expect(metrics).toContain('portcullis_workers 2')
    }
    const dashboard = (
      await fetchOnce('http://127.0.0.1/dashboard/data', { port: gateway.ports.admin })
    ).json<{
      apps: { requests: number; series: { requests: number }[] }[]
    }>()
    expect(dashboard.apps[0]?.requests).toBe(20)
    expect(dashboard.apps[0]?.series.reduce((total, bucket) => total + bucket.requests, 0)).toBe(20)
  })

  it('keeps answering while the primary is stopped: each limit falls back as its onStoreError says', async () => {
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({
          app: 'app',
          hosts: ['app.test'],
          target: upstream.url,
          tls: '  mode: off',
          extra: [
            'rateLimits:',
            '  - { name: open, limit: 100, window: 1m, match: { path: /open }, onStoreError: allow }',
            '  - { name: closed, limit: 100, window: 1m, match: { path: /closed }, onStoreError: deny }',
            '  - { name: counted, limit: 4, window: 1m, match: { path: /counted } }',
          ].join('\n'),
        }),
      },
      args: ['--redis-timeout', '300ms'],
    })
    // The primary hands out new connections: one kept alive stays with its worker while it is stopped.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    running.push({ stop: async () => agent.destroy() })
    const status = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const sent = request(
          { host: '127.0.0.1', port: gateway.ports.http, path, headers: { host: 'app.test' }, agent },
          (response) => {
            response.resume()
            response.on('end', () => resolve(response.statusCode ?? 0))
          },
        )
        sent.on('error', reject)
        sent.end()
      })
    expect(await status('/counted')).toBe(200) // counted in the primary: 1 of 4
    const primary = gateway.process.pid as number
    process.kill(primary, 'SIGSTOP')
    try {
      expect([await status('/open'), await status('/closed')]).toEqual([200, 503])
      // 4 per minute over 2 workers, 1 already spent in the primary: one more in this worker.
      const counted = [await status('/counted'), await status('/counted'), await status('/counted')]
      expect(counted).toEqual([200, 429, 429])
    } finally {
      process.kill(primary, 'SIGCONT')
    }
    await gateway.waitForLog(
      (line) => String(line.msg).startsWith('the primary does not answer') && line.level === 50,
    )
  })

  it('answers /metrics with the workers that answered, and counts the one that did not', async () => {
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({ app: 'app', hosts: ['app.test'], target: upstream.url, tls: '  mode: off' }),
      },
    })
    const [stopped] = gateway.logs
      .filter((line) => line.msg === 'worker listening')
      .map((line) => Number(line.pid))
    process.kill(stopped as number, 'SIGSTOP')
    try {
      // New connections alternate between the workers: of two at once, the stopped one holds one and
      // the other answers.
      const scrape = () =>
        fetchOnce('http://127.0.0.1/metrics', {
          port: gateway.ports.admin,
          timeoutMs: 8000 * timeoutScale,
        }).then((answer) =>
          answer.status === 200 ? answer.body : Promise.reject(new Error(`${answer.status}`)),
        )
      let metrics: string | undefined
      for (let attempt = 0; attempt < 3 && metrics === undefined; attempt++)
        metrics = await Promise.any([scrape(), scrape()]).catch(() => undefined)
      expect(metrics).toMatch(/^portcullis_workers_unanswered 1$/m)
      expect(metrics).toMatch(/^portcullis_workers 2$/m)
    } finally {
      process.kill(stopped as number, 'SIGCONT')
    }
  })

  it('holds a per-IP WebSocket cap exactly across workers, keeps them past every timeout, and gives places and fds back', async () => {
    const sockets = await wsUpstream((socket) => socket.on('message', (data) => socket.send(data)))
    running.push({ stop: () => sockets.close() })
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({
          app: 'app',
          hosts: ['app.test'],
          target: sockets.url,
          tls: '  mode: off',
          extra: 'websocket:\n  maxConnectionsPerIp: 3',
        }),
      },
      args: ['--keep-alive-timeout', '500ms', '--headers-timeout', '500ms'],
    })
    const workerPids = gateway.logs
      .filter((line) => line.msg === 'worker listening')
      .map((line) => Number(line.pid))
    const fds = async () =>
      (await Promise.all(workerPids.map(async (pid) => (await readdir(`/proc/${pid}/fd`)).length))).reduce(
        (total, count) => total + count,
        0,
      )
    const baseline = await fds()
    const open = () =>
      new Promise<{ socket?: WebSocket; status: number }>((resolve) => {
        const socket = new WebSocket(`ws://127.0.0.1:${gateway.ports.http}/live`, {
          headers: { host: 'app.test' },
        })
        socket.once('open', () => resolve({ socket, status: 101 }))
        socket.once('unexpected-response', (_request, response) =>
          resolve({ status: response.statusCode ?? 0 }),
        )
        socket.once('error', () => resolve({ status: 0 }))
      })
    // Six at once: both workers get three; exactly three open in all.
    const first = await Promise.all(Array.from({ length: 6 }, open))
    expect(first.map((attempt) => attempt.status).sort()).toEqual([101, 101, 101, 429, 429, 429])
    await waitFor(() => servingWorkers(gateway.logs, '/live').size === 2)
    const opened = first.flatMap((attempt) => (attempt.socket ? [attempt.socket] : []))
    // One closed gives one place back, whichever worker held it.
    opened[0]?.close()
    await waitFor(async () => {
      const next = await open()
      if (next.socket) opened.push(next.socket)
      return next.status === 101
    })
    expect((await open()).status).toBe(429)
    // Held past the keep-alive and head timeouts (500 ms): still open, still relaying.
    await new Promise((resolve) => setTimeout(resolve, 1200))
    const live = opened.filter((socket) => socket.readyState === WebSocket.OPEN)
    expect(live).toHaveLength(3)
    const echoes = await Promise.all(
      live.map(
        (socket, index) =>
          new Promise<string>((resolve) => {
            socket.once('message', (data) => resolve(String(data)))
            socket.send(`ping ${index}`)
          }),
      ),
    )
    expect(echoes).toEqual(['ping 0', 'ping 1', 'ping 2'])
    // All closed: three places free again in the primary, and the workers' fds back to their baseline.
    await Promise.all(live.map((socket) => new Promise((resolve) => socket.once('close', resolve).close())))
    await waitFor(async () => (await fds()) <= baseline)
    const again = await Promise.all(Array.from({ length: 3 }, open))
    expect(again.map((attempt) => attempt.status)).toEqual([101, 101, 101])
    for (const attempt of again) attempt.socket?.close()
  })

  it('applies SIGHUP in both workers, and SIGTERM drains both and exits 0', async () => {
    const held = await heldUpstream('slow answer')
    running.push({ stop: () => held.close() })
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({ app: 'app', hosts: ['app.test'], target: upstream.url, tls: '  mode: off' }),
        'slow.yaml': policyYaml({ app: 'slow', hosts: ['slow.test'], target: held.url, tls: '  mode: off' }),
      },
    })
    expect((await get(gateway, '/admin/x')).status).toBe(200)
    await gateway.writePolicy(
      'app.yaml',
      policyYaml({
        app: 'app',
        hosts: ['app.test'],
        target: upstream.url,
        tls: '  mode: off',
        extra: 'access: [{ path: /admin/**, allow: [10.0.0.0/8] }]',
      }),
    )
    gateway.process.kill('SIGHUP')
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'policies reloaded').length === 2)
    await gateway.waitForLog((line) => line.msg === 'policies reloaded on every worker')
    const statuses: number[] = []
    for (let index = 0; index < 6; index++) statuses.push((await get(gateway, '/admin/x')).status)
    expect(statuses).toEqual([403, 403, 403, 403, 403, 403])
    await waitFor(() => servingWorkers(gateway.logs, '/admin/x').size === 2)

    // A broken file: refused once, by the primary; both workers keep the last good policies.
    await gateway.writePolicy('app.yaml', 'app: app\nhosts: [app.test]\nupstream: { targets: [not a url] }\n')
    gateway.process.kill('SIGHUP')
    await gateway.waitForLog(
      (line) => line.msg === 'policy reload refused; still serving the last good policies',
    )
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(
      gateway.logs.filter(
        (line) => line.msg === 'policy reload refused; still serving the last good policies',
      ),
    ).toHaveLength(1)
    expect(gateway.logs.filter((line) => line.msg === 'policies reloaded')).toHaveLength(2)
    for (let index = 0; index < 4; index++) expect((await get(gateway, '/admin/y')).status).toBe(403)

    // A request held in each worker; SIGTERM; both finish with their answer and the primary exits 0.
    const slow = [get(gateway, '/one', 'slow.test'), get(gateway, '/two', 'slow.test')]
    await held.arrived()
    await new Promise((resolve) => setTimeout(resolve, 300))
    const exit = gateway.stop()
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'shutting down: draining').length === 2)
    held.release()
    const answers = await Promise.all(slow)
    expect(answers.map((answer) => [answer.status, answer.body])).toEqual([
      [200, 'slow answer'],
      [200, 'slow answer'],
    ])
    expect(await exit).toBe(0)
    expect(
      new Set(gateway.logs.filter((line) => line.msg === 'gateway stopped').map((line) => line.worker)).size,
    ).toBe(2)
    running.splice(running.indexOf(gateway), 1)
  })

  it('serves exactly the texts the primary validated: a new worker gets them, not the files as they are', async () => {
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({ app: 'app', hosts: ['app.test'], target: upstream.url, tls: '  mode: off' }),
      },
    })
    await gateway.writePolicy(
      'app.yaml',
      policyYaml({
        app: 'app',
        hosts: ['app.test'],
        target: upstream.url,
        tls: '  mode: off',
        extra: 'access: [{ path: /admin/**, allow: [10.0.0.0/8] }]',
      }),
    )
    gateway.process.kill('SIGHUP')
    const applied = await gateway.waitForLog((line) => line.msg === 'policies reloaded on every worker')
    // Both workers report the generation by the digest the primary logged.
    await waitFor(
      () =>
        gateway.logs.filter((line) => line.msg === 'policies reloaded' && line.digest === applied.digest)
          .length === 2,
    )
    // A half-written file, never validated: a worker started now still serves what was validated.
    await gateway.writePolicy('app.yaml', 'app: app\nhosts: [app.test]\nupstream: { targets: [')
    const victim = gateway.logs.find((line) => line.msg === 'worker listening')
    process.kill(Number(victim?.pid), 'SIGKILL')
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'worker listening').length === 3)
    const statuses: number[] = []
    for (let index = 0; index < 6; index++) statuses.push((await get(gateway, '/admin/x')).status)
    expect(statuses).toEqual([403, 403, 403, 403, 403, 403])
    await waitFor(() => servingWorkers(gateway.logs, '/admin/x').size === 2)
    expect(
      gateway.logs.filter(
        (line) => line.msg === 'worker died: its requests in flight are lost; starting another',
      ),
    ).toHaveLength(1)
  })

  it('coalesces a storm of reloads: one runs, one more follows, however many were asked for', async () => {
    // Many files, so that a reload takes long enough for signals to arrive while it runs.
    const many = Object.fromEntries(
      Array.from({ length: 150 }, (_, index) => [
        `app-${index}.yaml`,
        policyYaml({
          app: `app-${index}`,
          hosts: [`app-${index}.test`],
          target: upstream.url,
          tls: '  mode: off',
        }),
      ]),
    )
    const gateway = await launch({ policies: many })
    await gateway.writePolicy(
      'broken.yaml',
      'app: broken\nhosts: [broken.test]\nupstream: { targets: [not a url] }\n',
    )
    const refused = 'policy reload refused; still serving the last good policies'
    const count = () => gateway.logs.filter((line) => line.msg === refused).length
    // How long one reload takes here, now.
    const started = Date.now()
    gateway.process.kill('SIGHUP')
    await gateway.waitForLog((line) => line.msg === refused)
    const reloadMs = Math.max(1, Date.now() - started)
    // A storm: a signal every 10 ms, for about ten reloads' time.
    const storm = Math.max(20, Math.ceil((10 * reloadMs) / 10))
    for (let index = 0; index < storm; index++) {
      gateway.process.kill('SIGHUP')
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    // Settled: no refusal for two reloads' time.
    let seen = -1
    while (seen !== count()) {
      seen = count()
      await new Promise((resolve) => setTimeout(resolve, 2 * reloadMs + 200))
    }
    // Run back to back, reloads over the storm number about its length over one reload's (10, more
    // if reloads got faster meanwhile), plus the one that follows it: never one per signal.
    expect(count() - 1).toBeLessThanOrEqual(Math.ceil(storm / 2))
    expect((await get(gateway, '/ok', 'app-1.test')).status).toBe(200)
  })

  it('runs one health prober for both workers, and both follow its verdict', async () => {
    let probes = 0
    let healthy = true
    const target = await httpUpstream((request, response) => {
      if (request.url === '/healthz') {
        probes++
        response.statusCode = healthy ? 200 : 500
      }
      response.end('ok')
    })
    running.push({ stop: () => target.close() })
    const gateway = await launch({
      policies: {
        'app.yaml': [
          'app: app',
          'hosts: [app.test]',
          'tls: { mode: "off" }',
          'upstream:',
          `  targets: ["${target.url}"]`,
          '  healthCheck: { path: /healthz, interval: 100ms, unhealthyThreshold: 1 }',
        ].join('\n'),
      },
    })
    const before = probes
    await new Promise((resolve) => setTimeout(resolve, 2000))
    // One prober: about 20 checks in 2 s (two would make about 40).
    expect(probes - before).toBeGreaterThan(4)
    expect(probes - before).toBeLessThan(26)
    healthy = false
    await gateway.waitForLog(
      (line) => line.msg === 'upstream target failed its health checks: out of rotation',
    )
    await new Promise((resolve) => setTimeout(resolve, 100))
    const statuses: number[] = []
    for (let index = 0; index < 6; index++) statuses.push((await get(gateway, '/down')).status)
    expect(statuses).toEqual([503, 503, 503, 503, 503, 503])
    await waitFor(() => servingWorkers(gateway.logs, '/down').size === 2)
    expect(
      gateway.logs.filter((line) => line.msg === 'upstream target failed its health checks: out of rotation'),
    ).toHaveLength(1)
  })

  it('replaces a killed worker while the other keeps serving', async () => {
    const gateway = await launch({
      policies: {
        'app.yaml': policyYaml({ app: 'app', hosts: ['app.test'], target: upstream.url, tls: '  mode: off' }),
      },
    })
    const victim = gateway.logs.find((line) => line.msg === 'worker listening')
    process.kill(Number(victim?.pid), 'SIGKILL')
    await gateway.waitForLog(
      (line) => line.msg === 'worker died: its requests in flight are lost; starting another',
    )
    // Meanwhile every request is answered by the survivor, then by both again.
    for (let index = 0; index < 4; index++) expect((await get(gateway, '/during')).status).toBe(200)
    await waitFor(() => gateway.logs.filter((line) => line.msg === 'worker listening').length === 3)
    for (let index = 0; index < 6; index++) expect((await get(gateway, '/after')).status).toBe(200)
    await waitFor(() => servingWorkers(gateway.logs, '/after').size === 2)
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(metrics).toContain('portcullis_worker_restarts_total 1')
  })

  it('resumes TLS sessions on whichever worker, and across replicas sharing Redis', async () => {
    const redis: RedisServer = await startRedis()
    running.push(redis)
    const policies = {
      'app.yaml': policyYaml({
        app: 'app',
        hosts: ['app.test'],
        target: upstream.url,
        tls: '  mode: internal',
      }),
    }
    const stateDir = await mkdtemp(path.join(tmpdir(), 'pcl-workers-state-'))
    const alone = await launch({ policies, stateDir })
    const sessions = await mkdtemp(path.join(tmpdir(), 'pcl-sessions-'))
    const handshake = async (port: number, resume: boolean) => {
      const file = path.join(sessions, 'session.pem')
      const { stdout } = await execFileAsync('sh', [
        '-c',
        // A request, and -ign_eof: TLS 1.3 tickets come after the handshake, before the answer.
        `printf 'GET / HTTP/1.1\\r\\nHost: app.test\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:${port} -servername app.test -tls1_3 -ign_eof ${resume ? `-sess_in ${file}` : `-sess_out ${file}`} 2>/dev/null`,
      ])
      return stdout.includes('Reused, TLSv1.3')
    }
    expect(await handshake(alone.ports.https, false)).toBe(false)
    // Four more connections alternate between the workers: each resumes.
    for (let index = 0; index < 4; index++) expect(await handshake(alone.ports.https, true)).toBe(true)

    // Two gateways sharing Redis share the key too: a ticket from one resumes on the other.
    const shared = ['--redis', redis.url]
    const [one, two] = await Promise.all([
      launch({ policies, stateDir, args: shared }),
      launch({ policies, stateDir, args: shared }),
    ])
    expect(await handshake(one?.ports.https ?? 0, false)).toBe(false)
    expect(await handshake(two?.ports.https ?? 0, true)).toBe(true)
    expect(await handshake(one?.ports.https ?? 0, true)).toBe(true)
  })

  it('orders one ACME certificate and serves it from both workers', async () => {
    const ports = await gatewayPorts()
    const pebble = await startPebble({ httpPort: ports.http, tlsPort: ports.https })
    running.push(pebble)
    const gateway = await launch({
      policies: {
        'shop.yaml': acmePolicy('shop', ['shop.test'], upstream.url, pebble.directory),
      },
      env: { NODE_EXTRA_CA_CERTS: pebble.apiCaFile },
      args: acmeArgs(ports),
    })
    await gateway.waitForLog((line) => line.msg === 'ACME certificate issued and now served', 30_000)
    // The other worker serves what the first stored, told at once rather than at its next check.
    await gateway.waitForLog((line) => line.msg === 'serving the stored ACME certificate')
    expect(gateway.logs.filter((line) => line.msg === 'ordering an ACME certificate')).toHaveLength(1)
    const root = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-root-')), 'root.pem')
    await writeFile(root, await pebble.issuingRoot())
    // Consecutive connections alternate between the workers: each presents the issued certificate.
    const fingerprints = new Set<string>()
    for (let index = 0; index < 4; index++)
      fingerprints.add(await certificateFingerprint(ports.https, 'shop.test'))
    expect(fingerprints.size).toBe(1)
    for (let index = 0; index < 4; index++) {
      const { stdout } = await execFileAsync('curl', [
        '-sS',
        '--cacert',
        root,
        '--resolve',
        `shop.test:${ports.https}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `https://shop.test:${ports.https}/served`,
      ])
      expect(stdout).toBe('200')
    }
    await waitFor(() => servingWorkers(gateway.logs, '/served').size === 2)
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(sum(metrics, 'portcullis_acme_orders_total')).toBe(1)
  })
})
