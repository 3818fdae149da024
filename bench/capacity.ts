/**
 * The bench's measurements that wrk cannot make: TLS handshakes per second (new and resumed) with the
 * server's CPU per handshake, and the memory an idle keep-alive connection and an open WebSocket cost.
 * The clients are small Node scripts on the load core; the servers are measured from /proc.
 */
import { execFileSync, spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

/** User + system CPU time of a process and all its descendants (a primary and its workers), in µs. */
export function treeCpuUs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  const stats = new Map<number, { parent: number; cpuUs: number }>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const fields = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      stats.set(Number(entry), {
        parent: Number(fields[1]),
        cpuUs: (Number(fields[11]) + Number(fields[12])) * 10_000,
      })
    } catch {}
  }
  if (!stats.has(pid)) return undefined
  let total = 0
  const visit = (each: number) => {
    total += stats.get(each)?.cpuUs ?? 0
    for (const [child, stat] of stats) if (stat.parent === each) visit(child)
  }
  visit(pid)
  return total
}

/** Resident memory of a process, in bytes. */
export function rssBytes(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return Number(kib) * 1024
}

export interface Handshakes {
  perSecond: number
  /** Server CPU per handshake, µs: what one core can do, whatever the client's own speed. */
  serverCpuUs: number
  /** Share of handshakes that resumed a session (resumed runs). */
  resumedShare: number
}

/** Keeps `parallel` TLS 1.3 handshakes going for `seconds`; each connection closes once established. */
const handshakeClient = `
const tls = require('node:tls')
const [port, servername, mode, seconds, parallel] = process.argv.slice(1)
const deadline = Date.now() + Number(seconds) * 1000
let session
let count = 0
let resumed = 0
const connect = (withSession) => new Promise((resolve) => {
  const socket = tls.connect({ host: '127.0.0.1', port: Number(port), servername, rejectUnauthorized: false,
    minVersion: 'TLSv1.3', ...(withSession ? { session } : {}) })
  // Closed gracefully (end, not destroy) once established: a reset would cost the server an error.
  socket.once('session', (ticket) => { session = ticket; if (!withSession && mode === 'resumed') socket.end() })
  socket.once('secureConnect', () => {
    count++
    if (socket.isSessionReused()) resumed++
    if (mode !== 'resumed' || withSession) socket.end()
  })
  socket.resume()
  socket.once('close', resolve)
  socket.once('error', () => {})
})
const loop = async () => { while (Date.now() < deadline) await connect(mode === 'resumed') }
;(async () => {
  if (mode === 'resumed') { await connect(false); count = 0; resumed = 0 }
  await Promise.all(Array.from({ length: Number(parallel) }, loop))
  console.log(JSON.stringify({ count, resumed }))
})()
`

export function measureHandshakes(options: {
  port: number
  servername: string
  mode: 'new' | 'resumed'
  seconds: number
  serverPid: number | undefined
  pin: string[]
}): Handshakes {
  const before = treeCpuUs(options.serverPid) ?? 0
  const started = performance.now()
  const output = execFileSync(
    options.pin[0] ?? process.execPath,
    [
      ...options.pin.slice(1),
      ...(options.pin.length > 0 ? [process.execPath] : []),
      '-e',
      handshakeClient,
      String(options.port),
      options.servername,
      options.mode,
      String(options.seconds),
      '16',
    ],
    { encoding: 'utf8' },
  )
  const elapsedSeconds = (performance.now() - started) / 1000
  const after = treeCpuUs(options.serverPid) ?? 0
  const { count, resumed } = JSON.parse(output) as { count: number; resumed: number }
  return {
    perSecond: count / elapsedSeconds,
    serverCpuUs: (after - before) / count,
    resumedShare: count > 0 ? resumed / count : 0,
  }
}

/**
 * Opens `count` idle keep-alive connections (one request each) or WebSockets through the server, and
 * holds them until killed; prints "ready" once all are open.
 */
const holdingClient = `
const http = require('node:http')
const { WebSocket } = require('ws')
const [port, host, kind, count] = process.argv.slice(1)
const held = []
const openOne = () => new Promise((resolve, reject) => {
  if (kind === 'websocket') {
    const socket = new WebSocket('ws://127.0.0.1:' + port + '/socket', { headers: { host } })
    socket.once('open', () => { held.push(socket); resolve() })
    socket.once('error', reject)
    return
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  http.get({ host: '127.0.0.1', port: Number(port), path: '/', headers: { host }, agent }, (response) => {
    response.resume()
    response.once('end', () => { held.push(agent); resolve() })
  }).once('error', reject)
})
;(async () => {
  for (let opened = 0; opened < Number(count); opened += 200)
    await Promise.all(Array.from({ length: Math.min(200, Number(count) - opened) }, openOne))
  console.log('ready')
})().catch((error) => { console.error(error); process.exit(1) })
`

/** Memory the server holds per idle connection of `kind`, measured at `count` of them. */
export async function memoryPerConnection(options: {
  port: number
  host: string
  kind: 'keep-alive' | 'websocket'
  count: number
  serverPid: number
  cwd: string
  pin: string[]
}): Promise<{ bytesPerConnection: number; rssBefore: number; rssAfter: number }> {
  const rssBefore = rssBytes(options.serverPid)
  const command = [
    ...options.pin,
    process.execPath,
    '-e',
    holdingClient,
    String(options.port),
    options.host,
    options.kind,
    String(options.count),
  ]
  const client = spawn(command[0] as string, command.slice(1), {
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await new Promise<void>((resolve, reject) => {
    client.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve()
    })
    client.once('exit', (code) => reject(new Error(`the ${options.kind} client exited with ${code}`)))
  })
  // Let the server settle (buffers released, a scavenge or two) before reading its memory.
  await new Promise((resolve) => setTimeout(resolve, 3000))
  const rssAfter = rssBytes(options.serverPid)
  client.kill('SIGKILL')
  await new Promise((resolve) => setTimeout(resolve, 1000))
  return { bytesPerConnection: (rssAfter - rssBefore) / options.count, rssBefore, rssAfter }
}
