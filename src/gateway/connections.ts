import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http'
import type { Http2SecureServer, Http2Session } from 'node:http2'
import type { Socket } from 'node:net'

/**
 * Knows every client connection and request in flight on the edge listeners, so shutdown can stop
 * accepting, let what is running finish, and close keep-alive connections as soon as they fall idle.
 */
export class ConnectionTracker {
  /** HTTP/1 (and HTTP/2 fallback) sockets, each with how to finish the requests in flight on it. */
  private readonly sockets = new Map<Socket, Set<() => void>>()
  private readonly sessions = new Set<Http2Session>()
  private requests = 0
  private draining = false
  private idleResolvers: (() => void)[] = []

  get inFlight(): number {
    return this.requests
  }

  get isDraining(): boolean {
    return this.draining
  }

  watch(server: HttpServer | Http2SecureServer): void {
    const connectionEvent = 'setSecureContext' in server ? 'secureConnection' : 'connection'
    server.on(connectionEvent, (socket: Socket) => {
      const running = new Set<() => void>()
      this.sockets.set(socket, running)
      // A response that never got its turn on the connection (pipelined behind one that closed it)
      // emits nothing: the socket's end finishes it.
      socket.once('close', () => {
        this.sockets.delete(socket)
        for (const finish of running) finish()
      })
    })
    server.on('session', (session: Http2Session) => {
      this.sessions.add(session)
      session.once('close', () => this.sessions.delete(session))
      if (this.draining) session.close()
    })
  }

  /** Counts a request until its response is finished or its connection is gone, whichever comes first. */
  requestStarted(request: IncomingMessage, response: ServerResponse): void {
    const running = request.httpVersionMajor === 1 ? this.sockets.get(request.socket) : undefined
    this.requests += 1
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      this.requests -= 1
      if (running) {
        running.delete(finish)
        if (this.draining && running.size === 0) request.socket.end()
      }
      if (this.requests === 0) this.resolveIdle()
    }
    running?.add(finish)
    response.once('close', finish)
  }

  /** An upgraded socket belongs to the WebSocket relay from now on, which drains it on its own terms. */
  release(socket: Socket): void {
    this.sockets.delete(socket)
  }

  /**
   * From now on: HTTP/2 sessions get GOAWAY (running streams finish), idle HTTP/1 keep-alive connections
   * are closed, and busy ones close after their current response.
   */
  startDraining(): void {
    this.draining = true
    for (const session of this.sessions) session.close()
    for (const [socket, running] of this.sockets) {
      if (running.size === 0 && !this.isHttp2(socket)) socket.end()
    }
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.requests === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleResolvers.push(resolve))
  }

  destroyAll(): void {
    for (const session of this.sessions) session.destroy()
    for (const socket of this.sockets.keys()) socket.destroy()
  }

  private isHttp2(socket: Socket): boolean {
    return (socket as Socket & { alpnProtocol?: string | false }).alpnProtocol === 'h2'
  }

  private resolveIdle(): void {
    for (const resolve of this.idleResolvers) resolve()
    this.idleResolvers = []
  }
}
