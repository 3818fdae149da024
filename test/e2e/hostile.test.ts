import { readdirSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { type ClientHttp2Session, connect as http2Connect, constants as http2Constants } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { h2, http2Session, rawHttp1, rawHttp2Connection } from '../support/raw-requests.js'

/**
 * Hostile traffic, one attack after another against one gateway. After each attack the gateway's open
 * file descriptors, the upstream's connections, the requests in flight and the open WebSockets return to
 * their baseline, memory stays bounded, and an ordinary client is served; at the end SIGTERM exits 0
 * within the grace period plus a fixed margin although a request is still stuck upstream.
 * Deadlines are short here (--headers-timeout 1s, --keep-alive-timeout 2s), and long-lived things are
 * held longer than every one of them.
 */

/** The upstream: counts its open connections and the request bodies it received complete. */
interface Upstream {
  url: string
  server: Server
  sockets: WebSocketServer
  connections(): Promise<number>
  completeBodies: string[]
  /** Requests running at once on /slow, and the most there ever were. */
  slow: { running: number; peak: number }
  close(): Promise<void>
}

async function startUpstream(): Promise<Upstream> {
  const completeBodies: string[] = []
  const slow = { running: 0, peak: 0 }
  const held: (() => void)[] = []
  const server = createServer((request: IncomingMessage, response) => {
    const url = request.url ?? '/'
    if (url.startsWith('/slow')) {
      slow.running += 1
      slow.peak = Math.max(slow.peak, slow.running)
      const release = () => {
        slow.running -= 1
        if (!response.headersSent) response.end('slow done')
      }
      held.push(release)
      request.on('close', () => {
        if (!response.writableEnded) release()
      })
      setTimeout(() => {
        if (!response.writableEnded) release()
      }, 400)
      return
    }
    if (url.startsWith('/longpoll')) {
      // Silent for 7 s (three and a half keep-alive periods here), then one answer.
      const timer = setTimeout(() => response.end('late news'), 7000)
      request.on('close', () => clearTimeout(timer))
      return
    }
    if (url.startsWith('/stuck')) return // never answers
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.method === 'POST') completeBodies.push(Buffer.concat(chunks).toString())
      response.end('ok')
    })
  })
  server.keepAliveTimeout = 60_000
  const sockets = new WebSocketServer({ server })
  sockets.on('connection', (socket, request) => {
    if (request.url?.startsWith('/flood')) {
      // Streams 64 KiB messages as fast as its own socket takes them.
      const chunk = Buffer.alloc(64 * 1024, 7)
      const pump = () => {
        while (socket.readyState === WebSocket.OPEN && socket.bufferedAmount < 1024 * 1024) socket.send(chunk)
        if (socket.readyState === WebSocket.OPEN) setTimeout(pump, 5)
      }
      pump()
      return
    }
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    sockets,
    connections: () =>
      new Promise<number>((resolve, reject) =>
        server.getConnections((error, open) => (error ? reject(error) : resolve(open))),
      ),
    completeBodies,
    slow,
    close: async () => {
      for (const client of sockets.clients) client.terminate()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** Polls a condition until it holds (the gateway acts on its own timers), failing after `timeoutMs`. */
async function eventually<T>(read: () => T | Promise<T>, holds: (value: T) => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  let value = await read()
  while (!holds(value)) {
    if (Date.now() > deadline)
      throw new Error(`condition not reached within ${timeoutMs} ms: ${JSON.stringify(value)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
    value = await read()
  }
  return value
}

describe('hostile traffic: what attackers take, comes back', () => {
  let upstream: Upstream
  let gateway: RunningGateway
  const host = 'app.test'
  let baseline: { fds: number; rss: number }

  const pid = () => gateway.process.pid as number
  const fds = () => readdirSync(`/proc/${pid()}/fd`).length
  const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid()}/status`, 'utf8'))?.[1]) / 1024
  const metric = async (name: string) => {
    const text = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    let total = 0
    for (const match of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm')))
      total += Number(match[1])
    return total
  }
  const servedNormally = async () => {
    const answer = await fetchOnce(`https://${host}/`, { port: gateway.ports.https })
    expect(answer.status).toBe(200)
  }
  /** Everything the attack held is given back. */
  const backToBaseline = async () => {
    await eventually(
      () => metric('portcullis_requests_in_flight'),
      (value) => value === 0,
    )
    await eventually(
      () => metric('portcullis_websockets_open'),
      (value) => value === 0,
    )
    await eventually(
      () => metric('portcullis_upstream_active_requests'),
      (value) => value === 0,
    )
    // Keep-alive connections to the upstream close after 4 s idle.
    await eventually(
      () => upstream.connections(),
      (value) => value === 0,
      15_000,
    )
    await eventually(fds, (value) => value <= baseline.fds + 2, 15_000)
    await servedNormally()
  }

  beforeAll(async () => {
    upstream = await startUpstream()
    gateway = await startGateway({
      policies: {
        'app.yaml': [
          'app: app',
          `hosts: [${host}]`,
          'upstream:',
          `  targets: ["${upstream.url}"]`,
          '  maxConnections: 4',
          '  maxQueue: 8',
          '  timeouts: { read: 60s, write: 60s }',
          'limits: { maxBodySize: 1mb }',
          'websocket: { maxConnections: 20, maxConnectionsPerIp: 10 }',
        ].join('\n'),
        'plain.yaml': `app: plain\nhosts: [plain.test]\nupstream: { targets: ["${upstream.url}"], timeouts: { upload: 1s } }\ntls: { mode: "off" }\n`,
      },
      args: ['--headers-timeout', '1s', '--keep-alive-timeout', '2s', '--grace-period', '2s'],
    })
    await servedNormally()
    await eventually(
      () => upstream.connections(),
      (value) => value === 0,
      15_000,
    )
    baseline = { fds: fds(), rss: rssMb() }
  }, 60_000)

  afterAll(async () => {
    if (gateway?.process.exitCode === null) await gateway.stop('SIGKILL')
    await upstream?.close()
  })

  it.each([
    ['wss', () => `wss://127.0.0.1:${gateway.ports.https}/echo`, host],
    ['ws', () => `ws://127.0.0.1:${gateway.ports.http}/echo`, 'plain.test'],
  ])(
    'a WebSocket over %s lives past every connection deadline while frames flow',
    async (_scheme, url, name) => {
      const socket = new WebSocket(url(), { headers: { host: name }, rejectUnauthorized: false })
      await new Promise((resolve, reject) => {
        socket.once('open', resolve)
        socket.once('error', reject)
      })
      const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
      // 3 s: past --headers-timeout (1 s) and --keep-alive-timeout (2 s).
      for (let index = 0; index < 6; index++) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        const echoed = new Promise<string>((resolve) =>
          socket.once('message', (data) => resolve(String(data))),
        )
        socket.send(`tick ${index}`)
        expect(await echoed).toBe(`tick ${index}`)
      }
      socket.close(1000)
      expect(await closed).toBe(1000)
      await backToBaseline()
    },
  )

  it('a keep-alive connection that trickles its second request head gets a 408 within the deadline', async () => {
    const socket = netConnect(gateway.ports.http, '127.0.0.1')
    let received = ''
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1')
    })
    const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())))
    socket.write('GET / HTTP/1.1\r\nHost: redirect.test\r\n\r\n')
    await eventually(
      () => received,
      (text) => text.includes('\r\n\r\n'),
    )
    const trickleStarted = Date.now()
    const second = 'GET / HTTP/1.1\r\nHost: redirect.test\r\nX-Slow: '
    let index = 0
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write(second.charAt(index++ % second.length) || 'x')
    }, 200)
    const ended = await closedAt
    clearInterval(trickle)
    expect(ended - trickleStarted).toBeLessThan(3000)
    expect(received).toContain('408')
    await backToBaseline()
  })

  it('an upload trickled past timeouts.upload is cut with a 408, and what it held comes back', async () => {
    const socket = netConnect(gateway.ports.http, '127.0.0.1')
    let received = ''
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1')
    })
    const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())))
    const started = Date.now()
    socket.write('POST /upload HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 1000\r\n\r\n')
    // Never silent long enough for any idle deadline, but far too slow for the whole body.
    const trickle = setInterval(() => socket.writable && socket.write('x'), 100)
    const ended = await closedAt
    clearInterval(trickle)
    expect(received).toMatch(/^HTTP\/1\.1 408 /)
    expect(ended - started).toBeLessThan(4000)
    await backToBaseline()
  })

  it('a ClientHello trickled byte by byte is cut at the handshake deadline', async () => {
    const socket = netConnect(gateway.ports.https, '127.0.0.1')
    const started = Date.now()
    const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())))
    socket.on('error', () => undefined)
    // A TLS record header and the start of a ClientHello, one byte every 200 ms.
    const bytes = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...Array(40).fill(1)]
    let index = 0
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write(Buffer.from([bytes[index++ % bytes.length] as number]))
    }, 200)
    const ended = await closedAt
    clearInterval(trickle)
    expect(ended - started).toBeLessThan(3000)
    await backToBaseline()
  })

  it('an HTTP/2 session that never opens a stream is closed; one whose streams ended closes when idle', async () => {
    const started = Date.now()
    const idle = http2Connect(`https://127.0.0.1:${gateway.ports.https}`, {
      servername: host,
      rejectUnauthorized: false,
    })
    idle.on('error', () => undefined)
    await new Promise((resolve) => idle.once('close', resolve))
    expect(Date.now() - started).toBeLessThan(3000)

    const used = await http2Session(gateway.ports.https, host)
    const stream = used.request({ ':path': '/', ':authority': host })
    stream.resume()
    await new Promise((resolve) => stream.once('close', resolve))
    const finished = Date.now()
    await new Promise((resolve) => used.once('close', resolve))
    expect(Date.now() - finished).toBeLessThan(4000)
    await backToBaseline()
  })

  it('HTTP/2 streams reset right after their headers, or while the upstream holds them, take their upstream requests with them', async () => {
    const session = await http2Session(gateway.ports.https, host)
    // A burst reset in the turn after their headers: most never reach a handler, none stays upstream.
    for (let index = 0; index < 50; index++) {
      const stream = session.request({ ':path': `/stuck/${index}`, ':authority': host })
      stream.on('error', () => undefined)
      setImmediate(() => stream.close(http2Constants.NGHTTP2_CANCEL))
    }
    await eventually(
      () => metric('portcullis_upstream_active_requests'),
      (value) => value === 0,
    )
    // Streams reset once the gateway holds them upstream (four at the connection cap, the rest queued).
    const held = Array.from({ length: 12 }, (_, index) => {
      const stream = session.request({ ':path': `/stuck/held-${index}`, ':authority': host })
      stream.on('error', () => undefined)
      return stream
    })
    await eventually(
      () => metric('portcullis_upstream_active_requests'),
      (value) => value === held.length,
    )
    for (const stream of held) stream.close(http2Constants.NGHTTP2_CANCEL)
    await eventually(
      () => metric('portcullis_upstream_active_requests'),
      (value) => value === 0,
    )
    session.destroy()
    await backToBaseline()
    const cancelledLines = () =>
      gateway.logs.filter((line) => line.msg === 'request' && String(line.path).startsWith('/stuck/'))
    // A line can trail the metric that said the request ended.
    await eventually(
      () => cancelledLines().filter((line) => String(line.path).startsWith('/stuck/held-')).length,
      (count) => count >= held.length,
    )
    const cancelled = cancelledLines()
    // 499: the client left; 503: refused at once, past the upstream's connection cap and queue.
    expect(
      cancelled.filter((line) => String(line.path).startsWith('/stuck/held-') && line.status === 499).length,
    ).toBe(12)
    expect(cancelled.map((line) => line.status).filter((status) => status !== 499 && status !== 503)).toEqual(
      [],
    )
  })

  it('an HTTP/2 body longer than its content-length, or cut by a reset, never reaches the upstream complete', async () => {
    upstream.completeBodies.length = 0
    const session = await http2Session(gateway.ports.https, host)
    const outcomes = await Promise.all(
      Array.from(
        { length: 20 },
        (_, index) =>
          new Promise<number | undefined>((resolve) => {
            const stream = session.request({
              ':method': 'POST',
              ':path': `/upload/${index}`,
              ':authority': host,
              'content-length': '5',
            })
            stream.on('error', () => undefined)
            stream.on('response', () => undefined)
            stream.once('close', () => resolve(stream.rstCode))
            stream.end(Buffer.alloc(100, 120))
          }),
      ),
    )
    expect(outcomes.every((code) => code === http2Constants.NGHTTP2_PROTOCOL_ERROR)).toBe(true)
    // Bodies of undeclared length whose streams are reset halfway, as a browser does (RST_STREAM alone).
    const raw = await rawHttp2Connection(gateway.ports.https, host)
    for (let index = 0; index < 10; index++) {
      const stream = 2 * index + 1
      raw.write(
        Buffer.concat([
          h2.headers(
            stream,
            { ':method': 'POST', ':scheme': 'https', ':path': `/partial/${index}`, ':authority': host },
            false,
          ),
          h2.data(stream, Buffer.alloc(1000, 121), false),
        ]),
      )
      await eventually(
        () => metric('portcullis_upstream_active_requests'),
        (value) => value === 1,
      )
      raw.write(h2.reset(stream))
    }
    raw.destroy()
    session.destroy()
    await backToBaseline()
    expect(upstream.completeBodies).toEqual([])
  })

  it('an HTTP/2 long poll lives past every keep-alive period while its client answers PINGs, and leaves nothing behind', async () => {
    const session = await http2Session(gateway.ports.https, host)
    const stream = session.request({ ':path': '/longpoll/h2', ':authority': host })
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      let status = 0
      let body = ''
      stream.on('response', (head) => {
        status = Number(head[':status'])
      })
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        body += chunk
      })
      stream.on('end', () => resolve({ status, body }))
      stream.on('error', reject)
    })
    expect(answer).toEqual({ status: 200, body: 'late news' })
    session.close()
    await backToBaseline()
  })

  it('closes an HTTP/2 session that a protocol error stopped, although its stream never ended', async () => {
    const socket = await rawHttp2Connection(gateway.ports.https, host)
    const closed = new Promise<number>((resolve) => {
      const started = Date.now()
      socket.once('close', () => resolve(Date.now() - started))
    })
    socket.on('error', () => {})
    // A request to a path the upstream never answers, then a PRIORITY making its stream depend on
    // itself: nghttp2 sends GOAWAY PROTOCOL_ERROR and writes nothing more; the stream stays open.
    const priority = Buffer.alloc(5)
    priority.writeUInt32BE(1)
    priority[4] = 15
    socket.write(
      Buffer.concat([
        h2.headers(
          1,
          { ':method': 'GET', ':scheme': 'https', ':path': '/stuck/h2', ':authority': host },
          true,
        ),
        h2.frame(0x2, 0, 1, priority),
      ]),
    )
    // Within two keep-alive periods (2 s here) of sending nothing it had to send.
    expect(await closed).toBeLessThan(8000)
    await backToBaseline()
  })

  it.each(['https', 'http'] as const)(
    'an HTTP/1.1 CONNECT on the %s listener gets a JSON 400, and the gateway keeps serving',
    async (listener) => {
      const secure = listener === 'https'
      for (const target of ['x:1', `${host}:443`, '127.0.0.1:22']) {
        const answer = await rawHttp1(secure ? gateway.ports.https : gateway.ports.http, {
          method: 'CONNECT',
          target,
          host: secure ? host : 'plain.test',
          ...(secure ? { servername: host } : {}),
        })
        expect(answer.status).toBe(400)
        expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'PCL_BAD_REQUEST' } })
      }
      expect(gateway.process.exitCode).toBeNull()
      await servedNormally()
    },
  )

  it('hostile upgrade targets are refused and give their cap places back', async () => {
    const upgrade = async (target: string, extra: string[] = []) => {
      const answer = await rawHttp1(gateway.ports.https, {
        target,
        host,
        servername: host,
        headers: [
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Version: 13',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          ...extra,
        ],
      })
      return answer.status
    }
    const answers = []
    for (let index = 0; index < 15; index++) {
      answers.push(
        await upgrade('/ws#x'),
        await upgrade('/ws', ['Sec-WebSocket-Protocol: a, a']),
        await upgrade('/.;/ws'),
      )
    }
    expect(answers.every((status) => status === 400)).toBe(true)
    await backToBaseline()
    // All 10 places per client are free: 10 WebSockets open at once.
    const open = await Promise.all(
      Array.from(
        { length: 10 },
        () =>
          new Promise<WebSocket>((resolve, reject) => {
            const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/`, {
              headers: { host },
              rejectUnauthorized: false,
            })
            socket.once('open', () => resolve(socket))
            socket.once('error', reject)
          }),
      ),
    )
    for (const socket of open) socket.close()
    await backToBaseline()
  })

  it('concurrent upgrades cannot overshoot the per-client cap', async () => {
    const attempts = await Promise.all(
      Array.from(
        { length: 30 },
        () =>
          new Promise<WebSocket | undefined>((resolve) => {
            const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/`, {
              headers: { host },
              rejectUnauthorized: false,
            })
            socket.once('open', () => resolve(socket))
            socket.once('error', () => resolve(undefined))
          }),
      ),
    )
    const opened = attempts.filter((socket): socket is WebSocket => socket !== undefined)
    expect(opened).toHaveLength(10)
    for (const socket of opened) socket.close()
    await backToBaseline()
  })

  it('a WebSocket client that stops reading costs bounded memory: the upstream is paused instead', async () => {
    const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/flood`, {
      headers: { host },
      rejectUnauthorized: false,
    })
    await new Promise((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
    })
    // Stop reading: the kernel buffers fill, then the gateway must push back instead of buffering.
    ;(socket as unknown as { _socket: Socket })._socket.pause()
    const before = rssMb()
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const grown = rssMb() - before
    expect(grown).toBeLessThan(64)
    socket.terminate()
    await backToBaseline()
  })

  it('HTTP/1.0 keep-alive with a pipelined second request leaves nothing in flight', async () => {
    await Promise.all(
      Array.from(
        { length: 50 },
        () =>
          new Promise<void>((resolve) => {
            const socket = tlsConnect({
              port: gateway.ports.https,
              host: '127.0.0.1',
              servername: host,
              rejectUnauthorized: false,
              ALPNProtocols: ['http/1.1'],
            })
            socket.on('error', () => undefined)
            socket.resume()
            socket.once('close', () => resolve())
            socket.once('secureConnect', () =>
              socket.write(
                `GET /a HTTP/1.0\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: ${host}\r\n\r\n`,
              ),
            )
          }),
      ),
    )
    await backToBaseline()
  })

  it('upstream connections are capped: a flood of HTTP/2 streams queues, past the queue it is a 503', async () => {
    upstream.slow.peak = 0
    const session: ClientHttp2Session = await http2Session(gateway.ports.https, host)
    const statuses = await Promise.all(
      Array.from(
        { length: 100 },
        (_, index) =>
          new Promise<number>((resolve) => {
            const stream = session.request({ ':path': `/slow/${index}`, ':authority': host })
            let status = 0
            stream.on('response', (headers) => {
              status = Number(headers[':status'])
            })
            stream.on('error', () => undefined)
            stream.resume()
            stream.once('close', () => resolve(status))
          }),
      ),
    )
    session.destroy()
    expect(upstream.slow.peak).toBeLessThanOrEqual(4)
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(12)
    expect(statuses.filter((status) => status === 503).length).toBeGreaterThan(0)
    expect(statuses.every((status) => status === 200 || status === 503)).toBe(true)
    await backToBaseline()
    expect(rssMb() - baseline.rss).toBeLessThan(100)
  })

  it('SIGTERM ends within the grace period plus the margin though a request is stuck upstream', async () => {
    // A WebSocket older than every connection deadline, told 1001 (going away) when the grace period ends.
    const socket = new WebSocket(`ws://127.0.0.1:${gateway.ports.http}/echo`, {
      headers: { host: 'plain.test' },
    })
    await new Promise((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
    })
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const stuck = fetchOnce(`https://${host}/stuck/forever`, {
      port: gateway.ports.https,
      timeoutMs: 30_000,
    }).catch((error: Error) => error)
    // The WebSocket counts on its target too.
    await eventually(
      () => metric('portcullis_upstream_active_requests'),
      (value) => value === 2,
    )
    const started = Date.now()
    gateway.process.kill('SIGTERM')
    expect(await gateway.exited).toBe(0)
    // --grace-period 2s, then at most 3 s to close what is left.
    expect(Date.now() - started).toBeLessThan(2000 + 3000 + 1000)
    expect(await closed).toBe(1001)
    await stuck
  })
})
