/**
 * `npm run bench`: throughput and latency of the same tiny upstream reached directly, through nginx
 * `proxy_pass`, through a minimal Node proxy (node:http and an undici pool: the Node limit per core),
 * through the same proxy as one Fastify route with no hooks (the Fastify floor), and through Portcullis
 * with its access lines written to a file in the run's directory, over HTTP and HTTPS keep-alive, measured with wrk in one run.
 *
 * Two shared cores are noisy, so every figure is a median over interleaved rounds and is reported as a
 * ratio to references measured in the same run. Ratios are paired: each round's ratio compares runs made
 * back to back (or minutes apart at most), and the median is taken over rounds, so a slow spell of the
 * machine cancels out.
 * For the gateway's cases it also reports the CPU time the gateway process spent per request.
 *
 * wrk (and Redis, standing for another machine) run on core 0; the upstream and the proxy under test
 * share core 1, so a ratio says what the proxy costs on the server's core.
 *
 * Environment: BENCH_SECONDS (per measurement, default 5), BENCH_ROUNDS (default 3), BENCH_WARMUP
 * (seconds per case before the rounds, default 3: V8 keeps optimising the gateway for ~20 s),
 * BENCH_CONNECTIONS (default 32), BENCH_LOGS=1 to see the processes' output instead (slows the gateway),
 * BENCH_BASELINE=<checkout> to measure another build (its `dist/cli.js`, e.g. the previous main in a
 * `git worktree`) beside this one: each gateway case then runs back to back with the same case on the
 * baseline, and the table gives the paired ratio and both CPU costs per request.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { cpus, tmpdir } from 'node:os'
import path from 'node:path'
import { type Handshakes, measureHandshakes, memoryPerConnection, treeCpuUs } from './capacity.js'

const seconds = Number(process.env.BENCH_SECONDS ?? 5)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const warmupSeconds = Number(process.env.BENCH_WARMUP ?? 3)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32)
const idleConnections = Number(process.env.BENCH_IDLE ?? 10_000)
const baselineCheckout = process.env.BENCH_BASELINE ? path.resolve(process.env.BENCH_BASELINE) : undefined
const root = path.resolve(import.meta.dirname, '..')

const hasTaskset = commandExists('taskset') && cpus().length >= 2
const loadCore = ['taskset', '-c', '0']
const serverCore = ['taskset', '-c', '1']

interface Case {
  name: string
  url: string
  host: string
  headers?: string[]
}

interface Measurement {
  rps: number
  p50Ms: number
  p99Ms: number
  requests: number
  /** CPU time of the proxy under test (with its children: workers, nginx's worker) per request (Linux /proc). */
  proxyCpuUs?: number
}

function commandExists(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

const children: ChildProcess[] = []

/** Starts a server; `logFile` takes its standard output (the gateways' access lines, as in production). */
function start(command: string[], name: string, core = serverCore, logFile?: string): ChildProcess {
  const [file, ...args] = hasTaskset ? [...core, ...command] : command
  const output = process.env.BENCH_LOGS ? 'inherit' : logFile ? openSync(logFile, 'w') : 'ignore'
  const child = spawn(file as string, args, { stdio: ['ignore', output, 'inherit'] })
  if (typeof output === 'number') closeSync(output)
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`${name} exited early (${code ?? signal})`)
  })
  children.push(child)
  return child
}

let stopping = false
function stopAll(): void {
  stopping = true
  for (const child of children) child.kill('SIGTERM')
}

async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (open) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`nothing listens on ${port}`)
}

function parseLatencyMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text.trim())
  if (!match) return Number.NaN
  const value = Number(match[1])
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value
}

function wrk(target: Case, durationSeconds: number, proxyPid?: number): Measurement {
  const command = [
    'wrk',
    '-t1',
    `-c${connections}`,
    `-d${durationSeconds}s`,
    '--latency',
    '-H',
    `Host: ${target.host}`,
    ...(target.headers ?? []).flatMap((header) => ['-H', header]),
    target.url,
  ]
  const [file, ...args] = hasTaskset ? [...loadCore, ...command] : command
  const cpuBefore = treeCpuUs(proxyPid)
  const output = execFileSync(file as string, args, { encoding: 'utf8' })
  const cpuAfter = treeCpuUs(proxyPid)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1])
  const p50 = /^\s+50%\s+(\S+)/m.exec(output)?.[1] ?? ''
  const p99 = /^\s+99%\s+(\S+)/m.exec(output)?.[1] ?? ''
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1]
  if (errors) throw new Error(`${target.name}: ${errors} non-2xx responses\n${output}`)
  const requests = Number(/(\d+) requests in/.exec(output)?.[1])
  const measurement = { rps, p50Ms: parseLatencyMs(p50), p99Ms: parseLatencyMs(p99), requests }
  return cpuBefore !== undefined && cpuAfter !== undefined
    ? { ...measurement, proxyCpuUs: (cpuAfter - cpuBefore) / requests }
    : measurement
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

async function main(): Promise<void> {
  for (const command of ['wrk', 'nginx', 'caddy']) {
    if (!commandExists(command)) throw new Error(`${command} is not installed (apt-get install ${command})`)
  }
  const work = await mkdtemp(path.join(tmpdir(), 'pcl-bench-'))
  const ports = {
    upstream: await freePort(),
    nginxHttp: await freePort(),
    nginxHttps: await freePort(),
    gatewayHttp: await freePort(),
    gatewayHttps: await freePort(),
    gatewayAdmin: await freePort(),
    nodeProxy: await freePort(),
    fastifyProxy: await freePort(),
    baselineHttp: await freePort(),
    baselineHttps: await freePort(),
    baselineAdmin: await freePort(),
    redis: await freePort(),
    caddy: await freePort(),
    workersHttp: await freePort(),
    workersHttps: await freePort(),
    workersAdmin: await freePort(),
    memoryHttp: await freePort(),
    memoryHttps: await freePort(),
    memoryAdmin: await freePort(),
    websocketUpstream: await freePort(),
  }
  for (const command of ['redis-server', 'redis-cli']) {
    if (!commandExists(command)) throw new Error(`${command} is not installed (apt-get install redis-server)`)
  }
  // Redis stands for another machine: it runs beside wrk on core 0, not on the server core.
  start(
    [
      'redis-server',
      '--port',
      String(ports.redis),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
    ],
    'redis',
    loadCore,
  )

  start(
    [
      process.execPath,
      '-e',
      `require('node:http').createServer((q, s) => { s.setHeader('content-type', 'text/plain'); s.end('hello world') }).listen(${ports.upstream}, '127.0.0.1')`,
    ],
    'upstream',
  )
  // The Node limit per core: node:http in front of an undici pool, streaming, with no policy at all.
  const nodeProxy = start(
    [
      process.execPath,
      '-e',
      `const { Pool } = require('undici')
const pool = new Pool('http://127.0.0.1:${ports.upstream}', { connections: 256, pipelining: 1 })
const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding'])
require('node:http').createServer((request, response) => {
  pool.request({ path: request.url, method: request.method, headers: request.headers, body: null }).then(
    ({ statusCode, headers, body }) => {
      for (const name of Object.keys(headers)) if (hopByHop.has(name)) delete headers[name]
      response.writeHead(statusCode, headers)
      body.pipe(response)
    },
    () => { response.statusCode = 502; response.end() },
  )
}).listen(${ports.nodeProxy}, '127.0.0.1')`,
    ],
    'node proxy',
  )
  // The Fastify floor: the same proxy as one Fastify 5 route with no hooks, the least a Fastify gateway
  // can cost per request.
  const fastifyProxy = start(
    [
      process.execPath,
      '-e',
      `const { Pool } = require('undici')
const pool = new Pool('http://127.0.0.1:${ports.upstream}', { connections: 256, pipelining: 1 })
const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding'])
const app = require('fastify')({ logger: false })
app.all('/*', async (request, reply) => {
  try {
    const { statusCode, headers, body } = await pool.request({ path: request.url, method: request.method, headers: request.headers, body: null })
    for (const name of Object.keys(headers)) if (hopByHop.has(name)) delete headers[name]
    return reply.code(statusCode).headers(headers).send(body)
  } catch {
    return reply.code(502).send()
  }
})
app.listen({ port: ${ports.fastifyProxy}, host: '127.0.0.1' })`,
    ],
    'fastify proxy',
  )

  // Caddy on one core (GOMAXPROCS=1), on the gateway's core: the Go proxy per core.
  const caddyfile = path.join(work, 'Caddyfile')
  await writeFile(
    caddyfile,
    `{\n\tadmin off\n\tauto_https off\n}\nhttp://:${ports.caddy} {\n\treverse_proxy 127.0.0.1:${ports.upstream}\n}\n`,
  )
  const caddy = start(
    [
      'env',
      'GOMAXPROCS=1',
      `XDG_DATA_HOME=${work}`,
      `XDG_CONFIG_HOME=${work}`,
      'caddy',
      'run',
      '--config',
      caddyfile,
      '--adapter',
      'caddyfile',
    ],
    'caddy',
  )
  // A WebSocket echo upstream for the memory measurement.
  start(
    [
      process.execPath,
      '-e',
      `const { WebSocketServer } = require('ws')
new WebSocketServer({ port: ${ports.websocketUpstream}, host: '127.0.0.1' }).on('connection', (socket) => socket.on('message', (data) => socket.send(data)))`,
    ],
    'websocket upstream',
    loadCore,
  )

  const policies = path.join(work, 'policies')
  const state = path.join(work, 'state')
  await mkdir(policies)
  const target = `http://127.0.0.1:${ports.upstream}`
  await writeFile(
    path.join(policies, 'plain.yaml'),
    `app: plain\nhosts: [plain.bench]\nupstream: { targets: ["${target}"] }\ntls: { mode: "off" }\n`,
  )
  await writeFile(
    path.join(policies, 'tls.yaml'),
    `app: tls\nhosts: [tls.bench]\nupstream: { targets: ["${target}"] }\n`,
  )
  // The plain app plus a rate limit counted in Redis, high enough that every request passes.
  await writeFile(
    path.join(policies, 'limited.yaml'),
    `app: limited\nhosts: [limited.bench]\nupstream: { targets: ["${target}"] }\ntls: { mode: "off" }\n` +
      'rateLimits: [{ name: bench, limit: 1000000000, window: 1s }]\n',
  )
  await writeFile(
    path.join(policies, 'ws.yaml'),
    `app: ws\nhosts: [ws.bench]\nupstream: { targets: ["http://127.0.0.1:${ports.websocketUpstream}"] }\ntls: { mode: "off" }\n`,
  )
  // Every guard configured and evaluated on each request; the request itself passes them all.
  await writeFile(
    path.join(policies, 'guarded.yaml'),
    `app: guarded
hosts: [guarded.bench]
upstream: { targets: ["${target}"] }
tls: { mode: "off" }
clientIp: { trustedProxies: [10.0.0.0/8, "fd00::/8"] }
cors: { origins: [https://app.example.com, "https://*.example.org"], credentials: true }
access:
  - { path: /studio/**, allow: [10.0.0.0/8] }
  - { path: /sql, deny: all, respond: 404 }
  - { path: /workspaces/*/db/migrate, methods: [POST], allow: [10.0.0.0/8] }
websocket: { maxConnectionsPerIp: 50, paths: [{ path: /realtime/**, requireOrigin: true }] }
limits: { maxBodySize: 1mb, bodySizes: [{ path: /api/manifests/**, max: 64kb }] }
headers: { contentSecurityPolicy: "default-src 'self'" }
cookies: { exclude: [csrf] }
`,
  )
  const startGateway = (
    checkout: string,
    listen: { http: number; https: number; admin: number },
    stateDir: string,
    name: string,
    extra: string[] = [],
  ) =>
    start(
      [
        process.execPath,
        path.join(checkout, 'dist/cli.js'),
        'serve',
        '--policies',
        policies,
        '--state-dir',
        stateDir,
        '--listen',
        '127.0.0.1',
        '--http-port',
        String(listen.http),
        '--https-port',
        String(listen.https),
        '--admin-port',
        String(listen.admin),
        '--watch',
        'false',
        // The bench policies are minimal (internal TLS, no origins): the production rules would refuse them.
        '--env',
        'development',
        '--redis',
        `redis://127.0.0.1:${ports.redis}`,
        // Generous: under full load a short timeout fires on a busy event loop and falls back locally.
        '--redis-timeout',
        '1s',
        ...extra,
      ],
      name,
      serverCore,
      path.join(work, `${name}.log`),
    )
  const gateway = startGateway(
    root,
    { http: ports.gatewayHttp, https: ports.gatewayHttps, admin: ports.gatewayAdmin },
    state,
    'portcullis',
  )
  const baseline =
    baselineCheckout === undefined
      ? undefined
      : startGateway(
          baselineCheckout,
          { http: ports.baselineHttp, https: ports.baselineHttps, admin: ports.baselineAdmin },
          path.join(work, 'state-baseline'),
          'baseline',
        )
  // Two workers on the one server core: on this machine only CPU per request can be compared.
  const workersGateway = startGateway(
    root,
    { http: ports.workersHttp, https: ports.workersHttps, admin: ports.workersAdmin },
    path.join(work, 'state-workers'),
    'portcullis --workers 2',
    ['--workers', '2'],
  )
  if (baseline) await waitForPort(ports.baselineHttps)
  await waitForPort(ports.gatewayHttps)
  await waitForPort(ports.workersHttps)

  // nginx serves the very certificate Portcullis made, so both do the same TLS work.
  const nginxConf = path.join(work, 'nginx.conf')
  await writeFile(
    nginxConf,
    `worker_processes 1;
pid ${work}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log /dev/null;
  upstream app { server 127.0.0.1:${ports.upstream}; keepalive 64; }
  server {
    listen 127.0.0.1:${ports.nginxHttp};
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:${ports.nginxHttps} ssl;
    ssl_certificate ${state}/internal/tls.crt;
    ssl_certificate_key ${state}/internal/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`,
  )
  const nginx = start(['nginx', '-p', work, '-c', nginxConf, '-g', 'daemon off;'], 'nginx')
  await Promise.all([
    waitForPort(ports.caddy),
    waitForPort(ports.upstream),
    waitForPort(ports.nodeProxy),
    waitForPort(ports.fastifyProxy),
    waitForPort(ports.nginxHttp),
    waitForPort(ports.nginxHttps),
  ])

  const gatewayCases: Case[] = [
    { name: 'portcullis http', url: `http://127.0.0.1:${ports.gatewayHttp}/`, host: 'plain.bench' },
    {
      name: 'portcullis http, rate limited',
      url: `http://127.0.0.1:${ports.gatewayHttp}/`,
      host: 'limited.bench',
    },
    {
      name: 'portcullis http, all guards',
      url: `http://127.0.0.1:${ports.gatewayHttp}/api/items?page=2`,
      host: 'guarded.bench',
      headers: ['Origin: https://app.example.com'],
    },
    { name: 'portcullis https', url: `https://127.0.0.1:${ports.gatewayHttps}/`, host: 'tls.bench' },
  ]
  /** The same case on the baseline build: its ports in place of this build's. */
  const onBaseline = (each: Case): Case => ({
    ...each,
    name: `baseline ${each.name.slice('portcullis '.length)}`,
    url: each.url
      .replace(`:${ports.gatewayHttps}/`, `:${ports.baselineHttps}/`)
      .replace(`:${ports.gatewayHttp}/`, `:${ports.baselineHttp}/`),
  })
  // Each gateway case sits beside its baseline twin, so the pair runs back to back in every round.
  const withBaseline = (list: Case[]) => (baseline ? list.flatMap((each) => [each, onBaseline(each)]) : list)
  const cases: Case[] = [
    { name: 'direct http', url: `http://127.0.0.1:${ports.upstream}/`, host: 'plain.bench' },
    { name: 'nginx http', url: `http://127.0.0.1:${ports.nginxHttp}/`, host: 'plain.bench' },
    { name: 'node proxy http', url: `http://127.0.0.1:${ports.nodeProxy}/`, host: 'plain.bench' },
    { name: 'fastify proxy http', url: `http://127.0.0.1:${ports.fastifyProxy}/`, host: 'plain.bench' },
    { name: 'caddy http (1 core)', url: `http://127.0.0.1:${ports.caddy}/`, host: 'plain.bench' },
    ...withBaseline(gatewayCases.slice(0, 1)),
    { name: 'workers2 http', url: `http://127.0.0.1:${ports.workersHttp}/`, host: 'plain.bench' },
    ...withBaseline(gatewayCases.slice(1, 3)),
    { name: 'nginx https', url: `https://127.0.0.1:${ports.nginxHttps}/`, host: 'tls.bench' },
    ...withBaseline(gatewayCases.slice(3)),
    { name: 'workers2 https', url: `https://127.0.0.1:${ports.workersHttps}/`, host: 'tls.bench' },
  ]

  console.log(
    `wrk -t1 -c${connections}, ${seconds}s per measurement, ${rounds} interleaved rounds, ` +
      (hasTaskset ? 'wrk on core 0, upstream and proxy on core 1' : 'no taskset: unpinned'),
  )
  // Warm-up: JIT, keep-alive pools, TLS session setup.
  let warmupRequests = 0
  /** The process measured for a case's CPU, by the case's first words. */
  const measuredProcesses: [string, ChildProcess | undefined][] = [
    ['portcullis', gateway],
    ['baseline', baseline],
    ['workers2', workersGateway],
    ['node proxy', nodeProxy],
    ['fastify proxy', fastifyProxy],
    ['caddy', caddy],
    ['nginx', nginx],
  ]
  const pidFor = (each: Case) => measuredProcesses.find(([prefix]) => each.name.startsWith(prefix))?.[1]?.pid
  for (const each of cases) {
    // Each worker optimises its own code: two workers need twice the warm-up traffic.
    const run = wrk(each, each.name.startsWith('workers2') ? warmupSeconds * 2 : warmupSeconds)
    if (each.host === 'limited.bench') warmupRequests += run.requests
  }
  const results = new Map<string, Measurement[]>(cases.map((each) => [each.name, []]))
  for (let round = 0; round < rounds; round++) {
    // Forward in even rounds, backward in odd ones: the cases compared with each other sit next to each
    // other in the list, so each pair runs back to back, and alternately in either order (A B, then B A),
    // which cancels the machine's drift within a pair instead of always favouring one side.
    const order = round % 2 === 0 ? cases : [...cases].reverse()
    const measured = order.map((each) => {
      const run = wrk(each, seconds, pidFor(each))
      results.get(each.name)?.push(run)
      return `${each.name} ${Math.round(run.rps)}`
    })
    process.stdout.write(`round ${round + 1}/${rounds} (req/s): ${measured.join(', ')}\n`)
  }

  const runsOf = (name: string) => results.get(name) ?? []
  /** The median over rounds of this case's req/s divided by the reference's in the same round. */
  const pairedRatio = (name: string, reference: string) => {
    const references = runsOf(reference)
    return median(runsOf(name).map((run, round) => run.rps / (references[round]?.rps ?? Number.NaN)))
  }
  /** The median over rounds of this case's CPU per request divided by the reference's in the same round. */
  const cpuRatio = (name: string, reference: string) => {
    const references = runsOf(reference)
    return median(
      runsOf(name).map(
        (run, round) => (run.proxyCpuUs ?? Number.NaN) / (references[round]?.proxyCpuUs ?? Number.NaN),
      ),
    )
  }
  const nginxFor = (name: string) => (name.includes('https') ? 'nginx https' : 'nginx http')
  const isGateway = (name: string) => /^(portcullis|baseline|workers2) /.test(name)
  const ownHttp = (name: string) => `${name.split(' ')[0]} http`
  const rows = cases.map((each) => {
    const runs = runsOf(each.name)
    const cpu = runs.flatMap((run) => (run.proxyCpuUs === undefined ? [] : [run.proxyCpuUs]))
    return {
      case: each.name,
      'req/s': Math.round(median(runs.map((run) => run.rps))),
      'p50 ms': median(runs.map((run) => run.p50Ms)).toFixed(2),
      'p99 ms': median(runs.map((run) => run.p99Ms)).toFixed(2),
      'x direct http': pairedRatio(each.name, 'direct http').toFixed(2),
      'x nginx (same scheme)': each.name.startsWith('direct')
        ? ''
        : pairedRatio(each.name, nginxFor(each.name)).toFixed(2),
      'x own gateway http':
        isGateway(each.name) && /^\S+ http\b/.test(each.name)
          ? pairedRatio(each.name, ownHttp(each.name)).toFixed(2)
          : '',
      // Against the Node limit per core (plain HTTP cases): what the policy work costs on top of it.
      'x node proxy':
        isGateway(each.name) && /^\S+ http\b/.test(each.name)
          ? pairedRatio(each.name, 'node proxy http').toFixed(2)
          : '',
      'x caddy 1 core':
        isGateway(each.name) && /^\S+ http\b/.test(each.name)
          ? pairedRatio(each.name, 'caddy http (1 core)').toFixed(2)
          : '',
      ...(baseline
        ? {
            'x baseline': each.name.startsWith('portcullis')
              ? pairedRatio(each.name, onBaseline(each).name).toFixed(2)
              : '',
          }
        : {}),
      'proxy cpu us/req': cpu.length > 0 ? median(cpu).toFixed(0) : '',
      // The request path's budget: CPU per request against the Fastify floor (one route, no hooks).
      'cpu x fastify floor':
        isGateway(each.name) && /^\S+ http\b/.test(each.name)
          ? cpuRatio(each.name, 'fastify proxy http').toFixed(2)
          : '',
    }
  })
  console.table(rows)
  // One script call per rate-limited request; calls of one event-loop turn share a round trip, which
  // Redis counts as one read event (the gateway is its only client).
  const redisInfo = (section: string) =>
    execFileSync('redis-cli', ['-p', String(ports.redis), 'info', section], { encoding: 'utf8' })
  const scriptStats = [
    ...redisInfo('commandstats').matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/gm),
  ]
  const scriptCalls = scriptStats.reduce((sum, match) => sum + Number(match[1]), 0)
  const scriptUs = scriptStats.reduce((sum, match) => sum + Number(match[2]), 0)
  const reads = Number(/^total_reads_processed:(\d+)/m.exec(redisInfo('stats'))?.[1])
  const limitedRequests =
    (results.get('portcullis http, rate limited') ?? []).reduce((sum, run) => sum + run.requests, 0) +
    warmupRequests
  console.log(
    `Per rate-limited request: ${(scriptCalls / limitedRequests).toFixed(3)} Redis script calls, ` +
      `${(reads / limitedRequests).toFixed(3)} Redis round trips (${scriptCalls} calls, ${reads} reads, ${limitedRequests} requests); ` +
      `Redis spent ${(scriptUs / scriptCalls).toFixed(1)} us per script call, ${(scriptUs / limitedRequests).toFixed(1)} us per request`,
  )

  // --workers 2 against 1: gateway CPU per request (primary and workers together), paired by round.
  console.log(
    `--workers 2 vs 1, gateway CPU per request: x${cpuRatio('workers2 http', 'portcullis http').toFixed(2)} (http), ` +
      `x${cpuRatio('workers2 https', 'portcullis https').toFixed(2)} (https). Both workers share the server core ` +
      'here: on 2 cores (wrk and the upstream need the other) throughput cannot scale, only CPU per request is compared.',
  )

  // TLS handshakes, interleaved rounds against nginx serving the same certificate.
  const tlsServers = [
    { name: 'portcullis', port: ports.gatewayHttps, pid: gateway.pid },
    { name: 'nginx', port: ports.nginxHttps, pid: nginx.pid },
  ]
  const handshakes = new Map<string, Handshakes[]>()
  for (let round = 0; round < rounds; round++) {
    for (const mode of ['new', 'resumed'] as const) {
      const order = round % 2 === 0 ? tlsServers : [...tlsServers].reverse()
      for (const server of order) {
        const key = `${server.name} ${mode}`
        const measured = measureHandshakes({
          port: server.port,
          servername: 'tls.bench',
          mode,
          seconds,
          serverPid: server.pid,
          pin: hasTaskset ? loadCore : [],
        })
        handshakes.set(key, [...(handshakes.get(key) ?? []), measured])
      }
    }
  }
  const handshakeRows = [...handshakes].map(([name, runs]) => {
    const [server, mode] = name.split(' ') as [string, string]
    const nginxRuns = handshakes.get(`nginx ${mode}`) ?? []
    return {
      case: `${server} TLS 1.3 ${mode}`,
      'handshakes/s': Math.round(median(runs.map((run) => run.perSecond))),
      'server cpu us/handshake': median(runs.map((run) => run.serverCpuUs)).toFixed(0),
      resumed: `${Math.round(median(runs.map((run) => run.resumedShare)) * 100)}%`,
      // Per core: what one core of the server sustains, relative to nginx's (CPU per handshake, paired).
      'x nginx per core': median(
        runs.map((run, round) => (nginxRuns[round]?.serverCpuUs ?? Number.NaN) / run.serverCpuUs),
      ).toFixed(2),
    }
  })
  console.table(handshakeRows)

  // Memory per idle keep-alive connection and per open WebSocket, on a gateway started for it.
  const memoryGateway = startGateway(
    root,
    { http: ports.memoryHttp, https: ports.memoryHttps, admin: ports.memoryAdmin },
    path.join(work, 'state-memory'),
    'portcullis (memory)',
  )
  await waitForPort(ports.memoryHttps)
  const memoryRows = []
  // An open WebSocket holds two sockets in the gateway (client and upstream): the open-file limit
  // (ulimit -n, which this process cannot raise) may allow fewer than asked.
  const fileLimit = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()) || 1024
  for (const kind of ['keep-alive', 'websocket'] as const) {
    const count = Math.min(idleConnections, Math.floor((fileLimit - 500) / (kind === 'websocket' ? 2 : 1)))
    const measured = await memoryPerConnection({
      port: ports.memoryHttp,
      host: kind === 'websocket' ? 'ws.bench' : 'plain.bench',
      kind,
      count,
      serverPid: memoryGateway.pid as number,
      cwd: root,
      pin: hasTaskset ? loadCore : [],
    })
    memoryRows.push({
      case: `${count} idle ${kind === 'websocket' ? 'WebSockets' : 'keep-alive connections'}`,
      'gateway RSS before MiB': (measured.rssBefore / 2 ** 20).toFixed(0),
      'gateway RSS after MiB': (measured.rssAfter / 2 ** 20).toFixed(0),
      'KiB per connection': (measured.bytesPerConnection / 1024).toFixed(1),
    })
  }
  console.table(memoryRows)

  // The targets, as ratios in this run.
  const judge = (label: string, value: number, bound: number, atLeast = true) =>
    console.log(
      `${(atLeast ? value >= bound : value <= bound) ? 'met   ' : 'missed'} ${label}: ${value.toFixed(2)} (${atLeast ? '>=' : '<='} ${bound})`,
    )
  judge('no guards / node proxy', pairedRatio('portcullis http', 'node proxy http'), 0.9)
  judge('all guards / node proxy', pairedRatio('portcullis http, all guards', 'node proxy http'), 0.8)
  judge(
    'all guards / caddy on one core',
    pairedRatio('portcullis http, all guards', 'caddy http (1 core)'),
    1,
  )
  judge(
    'no guards CPU per request / Fastify floor',
    cpuRatio('portcullis http', 'fastify proxy http'),
    1.15,
    false,
  )
  judge(
    'all guards CPU per request / Fastify floor',
    cpuRatio('portcullis http, all guards', 'fastify proxy http'),
    1.3,
    false,
  )
  for (const each of cases.filter((candidate) => candidate.name.startsWith('portcullis'))) {
    const runs = runsOf(each.name)
    judge(`${each.name} p99 / p50`, median(runs.map((run) => run.p99Ms / run.p50Ms)), 3, false)
  }
  judge(
    'resumed TLS handshakes per core / nginx',
    Number(handshakeRows.find((row) => row.case === 'portcullis TLS 1.3 resumed')?.['x nginx per core']),
    0.9,
  )
  judge(
    '--workers 2 / 1 gateway CPU per request (http)',
    cpuRatio('workers2 http', 'portcullis http'),
    1.1,
    false,
  )
}

process.once('SIGINT', () => {
  stopAll()
  process.exit(130)
})
main()
  .catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(stopAll)
