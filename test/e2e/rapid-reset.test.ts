import { execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import type { Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { h2, rawHttp2Connection } from '../support/raw-requests.js'

/**
 * HTTP/2 rapid reset (CVE-2023-44487): HEADERS then RST_STREAM for stream after stream. Reset streams
 * must cost the attacker, not the upstream: none becomes an upstream request, the session is closed
 * with GOAWAY ENHANCE_YOUR_CALM once it spent its budget, ordinary clients keep being served, and no
 * socket is left half-open. `bench/soak.ts` measures the same attack against nginx.
 */
describe('HTTP/2 rapid reset', () => {
  let gateway: RunningGateway
  let upstreamRequests = 0
  const upstream = createServer((request, response) => {
    upstreamRequests++
    setTimeout(() => response.end('ok'), request.url?.startsWith('/slow') ? 500 : 20)
  })

  beforeAll(async () => {
    const port = await listen(upstream, 0)
    gateway = await startGateway({
      policies: {
        'app.yaml': [
          'app: app',
          'hosts: [app.test]',
          `upstream: { targets: ["http://127.0.0.1:${port}"] }`,
        ].join('\n'),
        'fair.yaml': [
          'app: fair',
          'hosts: [fair.test]',
          `upstream: { targets: ["http://127.0.0.1:${port}"], maxPerClient: 4 }`,
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    upstream.closeAllConnections()
    await new Promise((resolve) => upstream.close(resolve))
  })

  /** Writes HEADERS + RST_STREAM pairs on one connection until the gateway closes it; returns the frames read. */
  async function attack(
    pairs: number,
  ): Promise<{ sent: number; goaway: number | undefined; closedBy: 'gateway' | 'us' }> {
    const socket: Socket = await rawHttp2Connection(gateway.ports.https, 'app.test')
    const received: Buffer[] = []
    socket.on('data', (chunk: Buffer) => received.push(chunk))
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    let sent = 0
    let gone = false
    socket.once('close', () => {
      gone = true
    })
    socket.on('error', () => {})
    for (let stream = 1; sent < pairs && !gone; stream += 2) {
      const frames = Buffer.concat([
        h2.headers(
          stream,
          { ':method': 'GET', ':scheme': 'https', ':path': `/r/${stream}`, ':authority': 'app.test' },
          true,
        ),
        h2.reset(stream),
      ])
      sent++
      if (!socket.write(frames))
        await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closed])
      if (sent % 50 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    // The gateway reads what was written after it was written: give it the time to get there.
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5000 * timeoutScale))])
    const closedBy = gone ? 'gateway' : 'us'
    if (!gone) socket.destroy()
    await closed
    return { sent, goaway: goawayCode(Buffer.concat(received)), closedBy }
  }

  it('closes the session with ENHANCE_YOUR_CALM and sends no reset stream upstream', async () => {
    const before = upstreamRequests
    // An ordinary client all along.
    let ordinary = 0
    let failed = 0
    let stop = false
    const traffic = (async () => {
      while (!stop) {
        const answer = await fetchOnce('https://app.test/ok', { port: gateway.ports.https }).catch(
          () => undefined,
        )
        if (answer?.status === 200) ordinary++
        else failed++
      }
    })()
    const runs = []
    for (let round = 0; round < 3; round++) runs.push(await attack(5000))
    stop = true
    await traffic
    for (const run of runs) {
      expect(run.closedBy).toBe('gateway')
      expect(run.goaway).toBe(0xb) // ENHANCE_YOUR_CALM
    }
    // Streams reset in the read that opened them never reach the upstream; the ordinary client's do.
    expect(upstreamRequests - before - ordinary).toBeLessThanOrEqual(runs.length * 20)
    expect(ordinary).toBeGreaterThan(0)
    expect(failed).toBe(0)
    const closedSessions = await gateway.waitForLog((line) =>
      String(line.msg).startsWith('HTTP/2 session closed for resetting'),
    )
    expect(closedSessions.resets).toBeGreaterThan(900)
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(metrics).toMatch(/portcullis_http2_rapid_reset_sessions_total [3-9]/)
  })

  it('leaves no socket half-open (CLOSE-WAIT), after a GOAWAY or when a client closes its side', async () => {
    const closeWait = () =>
      execFileSync('ss', ['-Htn', 'state', 'close-wait', `( sport = :${gateway.ports.https} )`], {
        encoding: 'utf8',
      })
        .trim()
        .split('\n')
        .filter(Boolean).length
    const settled = async () => {
      const until = Date.now() + 3000 * timeoutScale
      while (closeWait() > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 100))
      return closeWait()
    }
    // Clients that close their side without a word.
    const quiet = await Promise.all([0, 1, 2].map(() => rawHttp2Connection(gateway.ports.https, 'app.test')))
    for (const socket of quiet) socket.end()
    // And attackers that, told to go away, close theirs.
    for (let round = 0; round < 3; round++) expect((await attack(5000)).goaway).toBe(0xb)
    expect(await settled()).toBe(0)
  })

  it('holds a client to maxPerClient requests in flight, while another client is served', async () => {
    const many = await Promise.all(
      Array.from({ length: 10 }, () =>
        fetchOnce('https://fair.test/slow/x', { port: gateway.ports.https, localAddress: '127.0.0.1' }),
      ),
    )
    const statuses = many.map((answer) => answer.status).sort()
    expect(statuses).toEqual([200, 200, 200, 200, 503, 503, 503, 503, 503, 503])
    const busy = many.find((answer) => answer.status === 503)
    expect(busy?.json()).toMatchObject({ error: { code: 'PCL_UPSTREAM_BUSY' } })
    const other = await fetchOnce('https://fair.test/slow/y', {
      port: gateway.ports.https,
      localAddress: '127.0.0.2',
    })
    expect(other.status).toBe(200)
  })
})

/** The error code of the first GOAWAY frame among the frames a server sent, if any. */
function goawayCode(bytes: Buffer): number | undefined {
  let at = 0
  while (at + 9 <= bytes.length) {
    const length = bytes.readUIntBE(at, 3)
    const type = bytes[at + 3]
    if (type === 0x7 && at + 9 + 8 <= bytes.length) return bytes.readUInt32BE(at + 9 + 4)
    at += 9 + length
  }
  return undefined
}
