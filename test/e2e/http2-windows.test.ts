import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import { type ClientHttp2Session, type ClientHttp2Stream, connect as http2Connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from '../../src/demo/echo-app.js'
import { type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'

/**
 * HTTP/2 flow control sized for uploads: the gateway advertises large receive windows (per stream and
 * per connection), so an upload is not capped at one 64 KiB window per round trip; and what a client
 * can make it hold while the upstream does not read stays bounded by those windows. The throughput over
 * a link with latency is measured by `bench/upload.ts`.
 */
describe('HTTP/2 receive windows', () => {
  let gateway: RunningGateway
  const received = new Map<string, string>()
  let stalled: IncomingMessage[] = []
  let upstreamUrl = ''
  const upstream = createServer((request, response) => {
    if (request.url?.startsWith('/stall')) {
      // Never reads the body: what the client sends piles up in front of it.
      stalled.push(request)
      return
    }
    const hash = createHash('sha256')
    let bytes = 0
    request.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      bytes += chunk.length
    })
    request.on('end', () => {
      received.set(request.url ?? '', `${bytes} ${hash.digest('hex')}`)
      response.end(String(bytes))
    })
  })

  beforeAll(async () => {
    upstreamUrl = `http://127.0.0.1:${await listen(upstream, 0)}`
    gateway = await startGateway({
      policies: {
        'up.yaml': [
          'app: up',
          'hosts: [up.test]',
          // One connection: the uploads queued behind it are held by the gateway alone, not by the
          // kernel's buffers of one upstream socket each.
          `upstream: { targets: ["${upstreamUrl}"], maxConnections: 1, timeouts: { idle: 30s } }`,
          'limits: { maxBodySize: 64mb, bodySizes: [{ path: /small/**, max: 10mb }] }',
        ].join('\n'),
        // The same upstream through a pool of the default size.
        'par.yaml': `app: par\nhosts: [par.test]\nupstream: { targets: ["${upstreamUrl}"] }\nlimits: { maxBodySize: 64mb }\n`,
      },
      args: ['--grace-period', '2s'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    upstream.closeAllConnections()
    await new Promise((resolve) => upstream.close(resolve))
  })

  const session = (servername = 'up.test') =>
    new Promise<ClientHttp2Session>((resolve, reject) => {
      const client = http2Connect(`https://127.0.0.1:${gateway.ports.https}`, {
        servername,
        rejectUnauthorized: false,
      })
      client.once('remoteSettings', () => resolve(client))
      client.once('error', reject)
    })

  const post = (client: ClientHttp2Session, path: string): ClientHttp2Stream =>
    client.request({ ':method': 'POST', ':path': path, ':authority': 'up.test' })

  /** Writes `total` bytes in 1 MiB pieces, resolving with how many were taken when it stopped or ended. */
  async function pour(stream: ClientHttp2Stream, total: number, piece: Buffer, stallMs: number) {
    let taken = 0
    while (taken < total && !stream.destroyed && !stream.closed) {
      const accepted = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), stallMs)
        stream.write(piece, (error) => {
          clearTimeout(timer)
          // A refused or reset stream calls back with an error: nothing more was taken.
          resolve(!error && !stream.destroyed && !stream.closed)
        })
      })
      if (!accepted) return taken
      taken += piece.length
    }
    return taken
  }

  it('advertises its connection budget over the streams it may open (128 KiB) per stream, and 16 MiB per connection', async () => {
    const client = await session()
    expect(client.remoteSettings.initialWindowSize).toBe(128 * 1024)
    // The connection window is raised with a WINDOW_UPDATE right after the settings.
    const until = Date.now() + 5000 * timeoutScale
    while ((client.state.remoteWindowSize ?? 0) < 16 * 1024 ** 2 && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 20))
    expect(client.state.remoteWindowSize).toBe(16 * 1024 ** 2)
    client.close()
  })

  it('carries a 24 MB upload intact over HTTP/2 and HTTP/1.1', async () => {
    const body = Buffer.alloc(24 * 1024 ** 2)
    for (let index = 0; index < body.length; index += 4096) body.writeUInt32BE(index, index)
    const expected = `${body.length} ${createHash('sha256').update(body).digest('hex')}`
    const client = await session()
    const stream = post(client, '/h2-upload')
    const status = new Promise<number>((resolve) =>
      stream.once('response', (head) => resolve(Number(head[':status']))),
    )
    stream.end(body)
    expect(await status).toBe(200)
    stream.resume()
    client.close()
    expect(received.get('/h2-upload')).toBe(expected)
    const h1 = await new Promise<number>((resolve, reject) => {
      const request = httpsRequest(
        {
          host: '127.0.0.1',
          port: gateway.ports.https,
          servername: 'up.test',
          rejectUnauthorized: false,
          method: 'POST',
          path: '/h1-upload',
          headers: { host: 'up.test', 'content-type': 'application/octet-stream' },
        },
        (response) => {
          response.resume()
          response.on('end', () => resolve(response.statusCode ?? 0))
        },
      )
      request.on('error', reject)
      request.end(body)
    })
    expect(h1).toBe(200)
    expect(received.get('/h1-upload')).toBe(expected)
  })

  it.each([
    [16, 8],
    [64, 1],
  ])(
    'carries %i uploads of %i MiB at once on one session, none refused (Node’s client loses its session on refusals)',
    async (count, mib) => {
      const body = Buffer.alloc(mib * 1024 ** 2, 7)
      const expected = `${body.length} ${createHash('sha256').update(body).digest('hex')}`
      const client = await session('par.test')
      const outcomes = await Promise.all(
        Array.from(
          { length: count },
          (_, index) =>
            new Promise<string>((resolve) => {
              const stream = client.request({
                ':method': 'POST',
                ':path': `/parallel/${count}-${index}`,
                ':authority': 'par.test',
                'content-length': String(body.length),
              })
              stream.on('response', (head) => resolve(String(head[':status'])))
              stream.on('error', (error: Error) => resolve(error.message))
              stream.resume()
              stream.end(body)
            }),
        ),
      )
      client.close()
      expect(outcomes).toEqual(Array.from({ length: count }, () => '200'))
      for (let index = 0; index < count; index++)
        expect(received.get(`/parallel/${count}-${index}`)).toBe(expected)
    },
  )

  it.each([
    ['four uploads of 64 MiB', 4, 64],
    ['48 uploads of 8 MiB', 48, 8],
  ])(
    'holds at most about its connection budget for an upstream that does not read (%s), and gives it all back',
    async (_case, count, mib) => {
      const pid = gateway.process.pid as number
      const fds = () => readdirSync(`/proc/${pid}/fd`).length
      const rssMb = () =>
        Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
      const before = { fds: fds(), rss: rssMb() }
      stalled = []
      const client = await session()
      const piece = Buffer.alloc(1024 * 1024, 1)
      // Uploads at once on one connection, to an upstream that reads none of them. Streams past the
      // budget are refused (REFUSED_STREAM) while the windows shrink.
      const streams = Array.from({ length: count }, (_, index) => post(client, `/stall/${count}-${index}`))
      for (const stream of streams) stream.on('error', () => {})
      const taken = await Promise.all(
        streams.map((stream) => pour(stream, mib * 1024 ** 2, piece, 1500 * timeoutScale)),
      )
      const total = taken.reduce((sum, bytes) => sum + bytes, 0)
      if (process.env.PCL_PRINT_FIGURES)
        console.log(`${_case}: ${total / 1024 ** 2} MiB taken, RSS +${rssMb() - before.rss} MB`)
      // About twice the 16 MiB budget at most, and the sockets' buffers on the way: not what was offered.
      expect(total).toBeLessThan(48 * 1024 ** 2)
      expect(rssMb() - before.rss).toBeLessThan(80)
      for (const stream of streams) stream.close()
      client.close()
      for (const request of stalled) request.socket.destroy()
      const until = Date.now() + 15_000 * timeoutScale
      while (fds() > before.fds + 2 && Date.now() < until)
        await new Promise((resolve) => setTimeout(resolve, 100))
      expect(fds()).toBeLessThanOrEqual(before.fds + 2)
    },
  )

  it('still refuses a body over its limit with 413, whatever the window', async () => {
    const client = await session()
    const stream = post(client, '/small/upload')
    const status = new Promise<number>((resolve) =>
      stream.once('response', (head) => resolve(Number(head[':status']))),
    )
    stream.on('error', () => {})
    void pour(stream, 30 * 1024 ** 2, Buffer.alloc(1024 * 1024, 2), 2000 * timeoutScale).then(() =>
      stream.end(),
    )
    expect(await status).toBe(413)
    client.destroy()
    expect(received.has('/small/upload')).toBe(false)
  })
})
