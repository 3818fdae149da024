/**
 * `npm run bench` (second part): uploads and downloads over a link with latency, HTTP/2 against
 * HTTP/1.1 through the gateway, paired with the same transfer straight to the upstream through the same
 * link. The kernel here has no netem: the link is a TCP relay on loopback that holds every chunk for
 * half the round trip in each direction, so a protocol that waits for acknowledgements (HTTP/2 flow
 * control) pays the round trip, as it would on a real link, and one that does not (HTTP/1.1) does not.
 *
 * Each round runs every case back to back (interleaved), and the table gives medians over rounds.
 * Cases: the gateway as configured (its default windows), and the gateway with Node's own 64 KiB
 * windows (what it had before `--h2-stream-window`/`--h2-connection-window`), for comparison.
 *
 * Environment: BENCH_UPLOAD_MB (default 50), BENCH_UPLOAD_ROUNDS (default 3), BENCH_RTT_MS (default 50).
 */
import { type ChildProcess, execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { median, startPortcullis } from './portcullis.js'

const megabytes = Number(process.env.BENCH_UPLOAD_MB ?? 50)
const rounds = Number(process.env.BENCH_UPLOAD_ROUNDS ?? 3)
const rttMs = Number(process.env.BENCH_RTT_MS ?? 50)
const run = promisify(execFile)
const children: ChildProcess[] = []

/** Holds each chunk `delayMs` before passing it on, in order; stops reading while 32 MiB wait. */
function delayedPipe(from: Socket, to: Socket, delayMs: number): void {
  const queue: { chunk: Buffer; due: number }[] = []
  let queued = 0
  let timer: NodeJS.Timeout | undefined
  let ended = false
  const flush = () => {
    timer = undefined
    const now = Date.now()
    while (queue.length > 0 && (queue[0] as { due: number }).due <= now) {
      const { chunk } = queue.shift() as { chunk: Buffer }
      queued -= chunk.length
      to.write(chunk)
    }
    if (queued < 32 * 1024 ** 2 && from.isPaused()) from.resume()
    if (queue.length > 0) timer = setTimeout(flush, (queue[0] as { due: number }).due - now)
    else if (ended) to.end()
  }
  from.on('data', (chunk: Buffer) => {
    queue.push({ chunk, due: Date.now() + delayMs })
    queued += chunk.length
    if (queued >= 32 * 1024 ** 2) from.pause()
    if (timer === undefined) timer = setTimeout(flush, delayMs)
  })
  from.on('end', () => {
    ended = true
    if (timer === undefined) timer = setTimeout(flush, 0)
  })
  from.on('error', () => to.destroy())
}

/** A link with `rttMs` round trip in front of a loopback port. */
async function link(targetPort: number): Promise<{ port: number; server: Server }> {
  const server = createServer((client) => {
    const target = connect(targetPort, '127.0.0.1')
    delayedPipe(client, target, rttMs / 2)
    delayedPipe(target, client, rttMs / 2)
    client.on('close', () => target.destroy())
    target.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, server }
}

/** Takes uploads whole (answering their size) and serves downloads of `megabytes`. */
async function upstream(): Promise<{ port: number; server: ReturnType<typeof createHttpServer> }> {
  const block = Buffer.alloc(1024 * 1024, 'x')
  const server = createHttpServer((request, response) => {
    if (request.method === 'POST') {
      let bytes = 0
      request.on('data', (chunk: Buffer) => {
        bytes += chunk.length
      })
      request.on('end', () => response.end(String(bytes)))
      return
    }
    response.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': megabytes * block.length,
    })
    let sent = 0
    const more = () => {
      while (sent < megabytes) {
        sent++
        if (!response.write(block)) return void response.once('drain', more)
      }
      response.end()
    }
    more()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, server }
}

/** A gateway in front of the upstream; resolves with its HTTPS port. */
async function gateway(upstreamPort: number, extra: string[]): Promise<number> {
  const policy = [
    'app: up',
    'hosts: [up.test]',
    `upstream: { targets: ["http://127.0.0.1:${upstreamPort}"], timeouts: { idle: 5m } }`,
    // No compression: bytes on the link are the bytes of the body either way.
    'compression: { enabled: false }',
    `limits: { maxBodySize: ${megabytes * 2}mb }`,
  ].join('\n')
  return (await startPortcullis(policy, extra, children)).httpsPort
}

/** One transfer with curl through a link: MB/s of the body. */
async function transfer(
  direction: 'upload' | 'download',
  protocol: 'h1' | 'h2' | 'direct',
  port: number,
  file: string,
): Promise<number> {
  const url = protocol === 'direct' ? `http://127.0.0.1:${port}/data` : `https://up.test:${port}/data`
  const args = [
    '-sS',
    '-o',
    '/dev/null',
    '-w',
    direction === 'upload' ? '%{speed_upload}' : '%{speed_download}',
    ...(protocol === 'h2' ? ['--http2'] : ['--http1.1']),
    ...(protocol === 'direct' ? [] : ['-k', '--resolve', `up.test:${port}:127.0.0.1`]),
    ...(direction === 'upload'
      ? ['--data-binary', `@${file}`, '-H', 'content-type: application/octet-stream']
      : []),
    url,
  ]
  const { stdout } = await run('curl', args, { maxBuffer: 1024 * 1024 })
  return Number(stdout) / 1024 ** 2
}

async function main(): Promise<void> {
  const origin = await upstream()
  const [configured, nodeDefaults] = await Promise.all([
    gateway(origin.port, (process.env.BENCH_UPLOAD_ARGS ?? '').split(' ').filter(Boolean)),
    gateway(origin.port, ['--h2-stream-window', '64kb', '--h2-connection-window', '64kb']),
  ])
  const links = {
    direct: await link(origin.port),
    configured: await link(configured),
    nodeDefaults: await link(nodeDefaults),
  }
  const file = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-bench-body-')), 'body')
  await writeFile(file, Buffer.alloc(megabytes * 1024 * 1024, 'y'))
  const cases = [
    { name: 'direct to the upstream, HTTP/1.1', protocol: 'direct', port: links.direct.port },
    { name: 'gateway HTTP/1.1', protocol: 'h1', port: links.configured.port },
    { name: 'gateway HTTP/2', protocol: 'h2', port: links.configured.port },
    { name: 'gateway HTTP/2, 64 KiB windows (before)', protocol: 'h2', port: links.nodeDefaults.port },
  ] as const
  const results = new Map<string, number[]>()
  for (let round = 0; round < rounds; round++) {
    for (const direction of ['upload', 'download'] as const) {
      for (const entry of cases) {
        const key = `${direction} ${entry.name}`
        const speed = await transfer(direction, entry.protocol, entry.port, file)
        results.set(key, [...(results.get(key) ?? []), speed])
      }
    }
  }
  console.log(
    `\n${megabytes} MB through a link with ${rttMs} ms round trip, median of ${rounds} interleaved rounds\n`,
  )
  console.log('| transfer | MB/s | × HTTP/1.1 through the gateway | × direct |')
  console.log('| --- | --- | --- | --- |')
  for (const direction of ['upload', 'download'] as const) {
    const h1 = median(results.get(`${direction} gateway HTTP/1.1`) ?? [])
    const direct = median(results.get(`${direction} direct to the upstream, HTTP/1.1`) ?? [])
    for (const entry of cases) {
      const speed = median(results.get(`${direction} ${entry.name}`) ?? [])
      console.log(
        `| ${direction}, ${entry.name} | ${speed.toFixed(1)} | ${(speed / h1).toFixed(2)} | ${(speed / direct).toFixed(2)} |`,
      )
    }
  }
  const h2Upload = median(results.get('upload gateway HTTP/2') ?? [])
  const h1Upload = median(results.get('upload gateway HTTP/1.1') ?? [])
  console.log(
    `\ntarget: HTTP/2 upload ≥ 0.8 × HTTP/1.1 through the same link: ${(h2Upload / h1Upload).toFixed(2)} (${h2Upload / h1Upload >= 0.8 ? 'met' : 'missed'})`,
  )
  for (const { server } of Object.values(links)) server.close()
  origin.server.close()
}

main()
  .catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => {
    for (const child of children) child.kill('SIGTERM')
  })
