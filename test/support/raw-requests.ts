import { type ClientHttp2Session, connect as http2Connect } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

export interface RawAnswer {
  status: number
  body: string
}

/**
 * One HTTP/1.1 request with the target written byte for byte as given (latin1), over a fresh
 * connection: no client library normalises it first. TLS when `servername` is set. Status 0: the
 * server closed the connection without an answer.
 */
export function rawHttp1(
  port: number,
  request: { method?: string; target: string; host: string; servername?: string; headers?: string[] },
): Promise<RawAnswer> {
  const head = [
    `${request.method ?? 'GET'} ${request.target} HTTP/1.1`,
    `Host: ${request.host}`,
    'Connection: close',
    'Content-Length: 0',
    ...(request.headers ?? []),
  ].join('\r\n')
  return new Promise((resolve, reject) => {
    const socket: Socket = request.servername
      ? tlsConnect({
          host: '127.0.0.1',
          port,
          servername: request.servername,
          ALPNProtocols: ['http/1.1'],
          rejectUnauthorized: false,
        })
      : netConnect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.once(request.servername ? 'secureConnect' : 'connect', () =>
      socket.write(Buffer.from(`${head}\r\n\r\n`, 'latin1')),
    )
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to ${request.target}`)))
    socket.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'ECONNRESET' ? resolve(parseAnswer(Buffer.concat(chunks))) : reject(error),
    )
    socket.once('close', () => resolve(parseAnswer(Buffer.concat(chunks))))
  })
}

function parseAnswer(bytes: Buffer): RawAnswer {
  const text = bytes.toString('latin1')
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0)
  const bodyStart = text.indexOf('\r\n\r\n')
  return { status, body: bodyStart >= 0 ? text.slice(bodyStart + 4) : '' }
}

/**
 * One HTTP/2 request on `session` with `:path` exactly as given. Status 0: the stream was refused or
 * reset, or the client library would not send such a `:path` at all.
 */
export function rawHttp2(
  session: ClientHttp2Session,
  request: { method?: string; target: string; host: string },
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    let stream: ReturnType<ClientHttp2Session['request']>
    try {
      stream = session.request({
        ':method': request.method ?? 'GET',
        ':path': request.target,
        ':authority': request.host,
      })
    } catch {
      resolve({ status: 0, body: '' })
      return
    }
    let status = 0
    let body = ''
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    stream.setEncoding('latin1')
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.once('close', () => resolve({ status, body }))
    stream.once('error', () => undefined)
    stream.end()
  })
}

export function http2Session(port: number, servername: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`https://127.0.0.1:${port}`, { servername, rejectUnauthorized: false })
    session.once('connect', () => resolve(session))
    session.once('error', reject)
  })
}

/**
 * HTTP/2 frames written by hand, for what client libraries do not do: Node's client sends END_STREAM
 * before it resets a stream with a body, where a browser sends RST_STREAM alone.
 */
export const h2 = {
  preface: Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
  frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
    const head = Buffer.alloc(9)
    head.writeUIntBE(payload.length, 0, 3)
    head.writeUInt8(type, 3)
    head.writeUInt8(flags, 4)
    head.writeUInt32BE(stream, 5)
    return Buffer.concat([head, payload])
  },
  /** A HEADERS frame (END_HEADERS, and END_STREAM when `end`) of literal, never-indexed fields. */
  headers(stream: number, fields: Record<string, string>, end: boolean): Buffer {
    const block = Buffer.concat(
      Object.entries(fields).map(([name, value]) =>
        Buffer.concat([
          Buffer.from([0x10, name.length]),
          Buffer.from(name),
          Buffer.from([value.length]),
          Buffer.from(value),
        ]),
      ),
    )
    return h2.frame(0x1, 0x4 | (end ? 0x1 : 0), stream, block)
  },
  data(stream: number, payload: Buffer, end: boolean): Buffer {
    return h2.frame(0x0, end ? 0x1 : 0, stream, payload)
  },
  reset(stream: number, code = 0x8): Buffer {
    const payload = Buffer.alloc(4)
    payload.writeUInt32BE(code)
    return h2.frame(0x3, 0, stream, payload)
  },
  settings(): Buffer {
    return h2.frame(0x4, 0, 0)
  },
}

/** A TLS connection speaking HTTP/2 (ALPN h2) on which frames are written raw; resolves once connected. */
export function rawHttp2Connection(port: number, servername: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername,
      ALPNProtocols: ['h2'],
      rejectUnauthorized: false,
    })
    socket.once('secureConnect', () => {
      socket.write(Buffer.concat([h2.preface, h2.settings()]))
      resolve(socket)
    })
    socket.once('error', reject)
    socket.resume()
  })
}
