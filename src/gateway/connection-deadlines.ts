import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http'
import type { Http2SecureServer, Http2Session } from 'node:http2'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'

export interface ConnectionDeadlines {
  /** Time to finish a TLS handshake, and to send a whole request head once its first byte arrived. */
  headersTimeout: number
  /** How long a connection with nothing in flight stays open (HTTP/1 keep-alive, HTTP/2 without streams). */
  keepAliveTimeout: number
}

/** Answers a connection whose request head did not arrive in time (the edge's JSON 408). */
export type AnswerTimeout = (error: NodeJS.ErrnoException, socket: Duplex) => void

interface Http1State {
  inFlight: number
  /** 'head': a request head is due; 'idle': the connection waits for the next request. */
  phase: 'head' | 'idle' | 'busy'
  /** One timer per deadline and connection, re-armed with refresh(): nothing is allocated per request. */
  head: NodeJS.Timeout
  idle: NodeJS.Timeout
}

const headTimeout = () =>
  Object.assign(new Error('request head not received in time'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' })

/**
 * Every phase of a client connection's life has a deadline that its own bytes cannot push back, so a
 * client that trickles bytes holds a connection no longer than the slowest honest one would:
 * - the TLS handshake must finish within `headersTimeout` of the connection (Node's own handshake timer
 *   starts over on every byte);
 * - an HTTP/1 request head must be complete within `headersTimeout`: of the connection for the first
 *   request, of the first byte for every later one on a keep-alive connection. Then a JSON 408.
 * - an HTTP/1 connection with no request in flight is closed after `keepAliveTimeout`;
 * - an HTTP/2 session must open a stream within `headersTimeout`, and is closed (GOAWAY) once it has had
 *   no stream for `keepAliveTimeout`.
 * Nothing applies once a connection is upgraded: a WebSocket lives as long as its frames flow.
 * The gateway times this itself: Node's checks run only on servers that listen themselves (ours accept
 * through the front door) and never on the HTTP/1.1 fallback of its HTTP/2 server.
 */
export function enforceDeadlines(
  server: HttpServer | Http2SecureServer,
  secure: boolean,
  deadlines: ConnectionDeadlines,
  answer: AnswerTimeout,
): void {
  const http1 = new WeakMap<Socket, Http1State>()
  // Node's own keep-alive timer (5 s by default) would close idle connections before ours.
  ;(server as { keepAliveTimeout?: number }).keepAliveTimeout = deadlines.keepAliveTimeout

  // A timer that fires in another phase than its own does nothing: phases change on every request,
  // timers are only re-armed when their phase begins.
  const arm = (state: Http1State, phase: 'head' | 'idle') => {
    state.phase = phase
    state[phase].refresh()
  }

  const watchHttp1 = (socket: Socket) => {
    const state: Http1State = {
      inFlight: 0,
      phase: 'head',
      head: setTimeout(() => {
        if (state.phase === 'head') answer(headTimeout(), socket)
      }, deadlines.headersTimeout),
      idle: setTimeout(() => {
        if (state.phase === 'idle') socket.destroy()
      }, deadlines.keepAliveTimeout),
    }
    state.idle.unref()
    state.head.unref()
    http1.set(socket, state)
    // The first byte of the next request starts its head's deadline.
    socket.on('data', () => {
      if (state.phase === 'idle') arm(state, 'head')
    })
    socket.once('close', () => {
      clearTimeout(state.head)
      clearTimeout(state.idle)
    })
  }

  if (secure) {
    server.on('connection', (raw: Socket) => {
      const handshake = setTimeout(() => raw.destroy(), deadlines.headersTimeout)
      handshakes.set(raw, handshake)
      raw.once('close', () => clearTimeout(handshake))
    })
    server.on('secureConnection', (socket: TLSSocket) => {
      const raw = (socket as TLSSocket & { _parent?: Socket })._parent
      if (raw) clearTimeout(handshakes.get(raw))
      if (socket.alpnProtocol !== 'h2') watchHttp1(socket)
    })
    server.on('session', (session: Http2Session) => watchHttp2(session, deadlines))
  } else {
    server.on('connection', watchHttp1)
  }

  const started = (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket
    const state = request.httpVersionMajor === 1 ? http1.get(socket) : undefined
    if (!state) return
    state.inFlight += 1
    state.phase = 'busy'
    response.once('close', () => {
      state.inFlight -= 1
      if (state.inFlight === 0 && !socket.destroyed) arm(state, 'idle')
    })
  }
  server.on('request', started)
  server.on('checkContinue', started)
  server.on('upgrade', (request: IncomingMessage) => {
    const state = http1.get(request.socket)
    if (!state) return
    state.phase = 'busy' // for good: the WebSocket relay owns the connection now
    clearTimeout(state.head)
    clearTimeout(state.idle)
  })
}

const handshakes = new WeakMap<Socket, NodeJS.Timeout>()

function watchHttp2(session: Http2Session, deadlines: ConnectionDeadlines): void {
  let open = 0
  // With no stream open: GOAWAY, then the socket goes once the peer had time to read it. A session
  // already going away (a GOAWAY for a protocol error, or the gateway's own) is not waited on: with no
  // stream, nothing it could still finish.
  const leave = () => {
    if (session.destroyed) return
    if (!session.closed) session.close()
    setTimeout(() => session.destroyed || session.destroy(), Math.min(1000, deadlines.headersTimeout)).unref()
  }
  let timer = setTimeout(leave, deadlines.headersTimeout)
  session.on('stream', (stream) => {
    open += 1
    clearTimeout(timer)
    stream.once('close', () => {
      open -= 1
      if (open === 0) timer = setTimeout(leave, session.closed ? 0 : deadlines.keepAliveTimeout)
    })
  })
  // A session that wrote nothing for a keep-alive period while it has streams open or frames to send
  // is asked for a PING; one that does not answer it within the next period is stuck and closed (as
  // nginx's send_timeout): a client that stopped reading, or one whose protocol error made nghttp2
  // stop (after its GOAWAY it writes and reads nothing more, and tells no one, so a stream waiting on
  // the upstream would hold the socket for as long as the upstream takes).
  let written = -1
  let unanswered = false
  const stuck = setInterval(() => {
    if (session.destroyed) return
    if (unanswered) return session.destroy()
    const now = (session.socket as { bytesWritten?: number } | undefined)?.bytesWritten ?? 0
    const idle = now === written
    written = now
    if (!idle || (open === 0 && (session.state.outboundQueueSize ?? 0) === 0)) return
    unanswered = true
    const asked = session.ping((error) => {
      if (!error) unanswered = false
    })
    if (!asked) session.destroy()
  }, deadlines.keepAliveTimeout)
  stuck.unref()
  session.once('close', () => {
    clearTimeout(timer)
    clearInterval(stuck)
  })
}
