import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { rawHttp1 } from '../support/raw-requests.js'
import { httpUpstream, refusingPort, type Upstream, wsUpstream } from '../support/upstreams.js'

function open(
  url: string,
  protocols: string[] = [],
  headers: Record<string, string> = {},
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, protocols, { headers, rejectUnauthorized: false })
    socket.once('open', () => resolve(socket))
    socket.once('error', reject)
    socket.once('unexpected-response', (_request, response) =>
      reject(new Error(`HTTP ${response.statusCode}`)),
    )
  })
}

function next(socket: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) =>
    socket.once('message', (data: Buffer, isBinary) => resolve({ data, isBinary })),
  )
}

function closed(socket: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) =>
    socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  )
}

describe('WebSocket proxying', () => {
  let gateway: RunningGateway
  let upstream: Upstream & { sockets: import('ws').WebSocketServer }
  let refusing: Upstream
  const seenByUpstream: { headers: Record<string, string | string[] | undefined>; url: string }[] = []

  beforeAll(async () => {
    upstream = await wsUpstream(
      (socket, request) => {
        seenByUpstream.push({ headers: request.headers, url: request.url ?? '' })
        socket.on('message', (data, isBinary) => {
          const text = data.toString()
          if (!isBinary && text.startsWith('close:')) {
            const [, code, reason] = text.split(':')
            socket.close(Number(code), reason)
          } else if (!isBinary && text === 'ping-me') {
            socket.ping(Buffer.from('from-upstream'))
          } else {
            socket.send(data, { binary: isBinary })
          }
        })
      },
      { handleProtocols: (protocols) => (protocols.has('chat.v2') ? 'chat.v2' : false) },
    )
    refusing = await httpUpstream((_request, response) => {
      response.writeHead(403, {
        'content-type': 'text/plain',
        'x-upstream': 'refused',
        'access-control-allow-origin': 'https://evil.test',
        'access-control-allow-credentials': 'true',
        'x-powered-by': 'PHP/5',
      })
      response.end('no websocket for you')
    })
    const dead = refusingPort
    gateway = await startGateway({
      policies: {
        'ws.yaml': policyYaml({ app: 'ws', hosts: ['ws.test'], target: upstream.url }),
        'plainws.yaml': policyYaml({
          app: 'plainws',
          hosts: ['plainws.test'],
          target: upstream.url,
          tls: '  mode: off',
        }),
        'refusing.yaml': policyYaml({
          app: 'refusing',
          hosts: ['refusing.test'],
          target: refusing.url,
          extra: 'hsts: { maxAge: 31536000 }\ncors: { origins: [https://app.example.com] }',
        }),
        'capped.yaml': policyYaml({
          app: 'capped',
          hosts: ['capped.test'],
          target: upstream.url,
          extra: 'websocket: { maxConnections: 1 }',
        }),
        'dead.yaml': policyYaml({ app: 'deadws', hosts: ['dead.test'], target: `http://127.0.0.1:${dead}` }),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([upstream?.close(), refusing?.close()])
  })

  it('relays text and binary frames both ways over TLS, with the path, query and forwarding headers', async () => {
    const socket = await open(`wss://127.0.0.1:${gateway.ports.https}/socket?room=1`, [], { host: 'ws.test' })
    socket.send('hello')
    expect(await next(socket)).toMatchObject({ isBinary: false })
    socket.send(Buffer.from([0, 1, 2, 255]))
    const binary = await next(socket)
    expect(binary.isBinary).toBe(true)
    expect([...binary.data]).toEqual([0, 1, 2, 255])
    const seen = seenByUpstream.at(-1)
    expect(seen?.url).toBe('/socket?room=1')
    expect(seen?.headers['x-forwarded-proto']).toBe('https')
    expect(seen?.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen?.headers.host).toBe('ws.test')
    socket.close(1000)
  })

  it('relays pings and pongs in both directions', async () => {
    const socket = await open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'ws.test' })
    const pong = new Promise<string>((resolve) => socket.once('pong', (data) => resolve(data.toString())))
    socket.ping(Buffer.from('from-client'))
    expect(await pong).toBe('from-client')
    const ping = new Promise<string>((resolve) => socket.once('ping', (data) => resolve(data.toString())))
    socket.send('ping-me')
    expect(await ping).toBe('from-upstream')
    socket.close()
  })

  it('passes close codes and reasons through from the upstream and from the client', async () => {
    const socket = await open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'ws.test' })
    const done = closed(socket)
    socket.send('close:4001:room closed')
    expect(await done).toEqual({ code: 4001, reason: 'room closed' })

    const upstreamClosed = new Promise<{ code: number; reason: string }>((resolve) =>
      upstream.sockets.once('connection', (peer) =>
        peer.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
      ),
    )
    const client = await open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'ws.test' })
    client.close(4002, 'client leaves')
    expect(await upstreamClosed).toEqual({ code: 4002, reason: 'client leaves' })
  })

  it('negotiates the subprotocol the upstream chose', async () => {
    const socket = await open(`wss://127.0.0.1:${gateway.ports.https}/`, ['chat.v1', 'chat.v2'], {
      host: 'ws.test',
    })
    expect(socket.protocol).toBe('chat.v2')
    socket.close()
  })

  it('proxies WebSockets of a tls: off app on plain HTTP', async () => {
    const socket = await open(`ws://127.0.0.1:${gateway.ports.http}/`, [], { host: 'plainws.test' })
    socket.send('plain')
    expect((await next(socket)).data.toString()).toBe('plain')
    socket.close()
  })

  it('hands an upstream refusal to the client as that HTTP answer, edited like every other answer', async () => {
    await expect(
      open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'refusing.test' }),
    ).rejects.toThrow('HTTP 403')
    const answer = await new Promise<{ headers: Record<string, unknown>; body: string }>(
      (resolve, reject) => {
        const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/`, {
          headers: { host: 'refusing.test', origin: 'https://app.example.com' },
          rejectUnauthorized: false,
        })
        socket.once('error', reject)
        socket.once('unexpected-response', (_request, response) => {
          let body = ''
          response.on('data', (chunk: Buffer) => {
            body += chunk
          })
          response.once('end', () => resolve({ headers: response.headers, body }))
        })
      },
    )
    expect(answer.body).toBe('no websocket for you')
    expect(answer.headers['x-upstream']).toBe('refused')
    expect(answer.headers['access-control-allow-credentials']).toBeUndefined()
    expect(answer.headers['access-control-allow-origin']).not.toBe('https://evil.test')
    expect(answer.headers['x-powered-by']).toBeUndefined()
    expect(answer.headers['strict-transport-security']).toBe('max-age=31536000')
    expect(answer.headers['x-frame-options']).toBe('SAMEORIGIN')
    expect(answer.headers['x-request-id']).toEqual(expect.any(String))
  })

  it('releases the cap slot of every upgrade it refuses or cannot relay, and answers each', async () => {
    const upgrade = (target: string, extra: string[] = [], key = 'dGhlIHNhbXBsZSBub25jZQ==') =>
      rawHttp1(gateway.ports.https, {
        target,
        host: 'capped.test',
        servername: 'capped.test',
        headers: [
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Version: 13',
          `Sec-WebSocket-Key: ${key}`,
          ...extra,
        ],
      })
    // Each of these used to be admitted and then fail, holding the app's only slot for good.
    for (let round = 0; round < 3; round++) {
      expect((await upgrade('/ws#')).status).toBe(400)
      expect((await upgrade('/ws', ['Sec-WebSocket-Protocol: chat, chat'])).status).toBe(400)
    }
    expect((await upgrade('/ws', [], 'short')).status).toBe(400)
    const socket = await open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'capped.test' })
    await expect(
      open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'capped.test' }),
    ).rejects.toThrow('HTTP 429')
    socket.close()
  })

  it('answers 502 JSON before any upgrade when the upstream is down, and 404 for an unknown host', async () => {
    await expect(open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'dead.test' })).rejects.toThrow(
      'HTTP 502',
    )
    await expect(
      open(`wss://127.0.0.1:${gateway.ports.https}/`, [], { host: 'nobody.test' }),
    ).rejects.toThrow('HTTP 404')
    const line = await gateway.waitForLog((l) => l.app === 'deadws' && l.websocket === true)
    expect(line).toMatchObject({ status: 502, code: 'PCL_UPSTREAM_UNREACHABLE' })
    // The gateway still serves plain requests after refused upgrades.
    const answer = await fetchOnce('https://ws.test/', { port: gateway.ports.https })
    expect(answer.body).toBe('plain http')
  })
})
