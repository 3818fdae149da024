import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http'
import type { Http2SecureServer, Http2Session } from 'node:http2'
import type { Socket } from 'node:net'

/**
 * Knows every client connection and request in flight on the edge listeners, so shutdown can stop
 * accepting, let what is running finish, and close keep-alive connections as soon as they fall idle.
 */
export class ConnectionTracker {
  private readonly sockets = new Map<Socket, number>()
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
      this.sockets.set(socket, 0)
      socket.once('close', () => this.sockets.delete(socket))
    })
    server.on('session', (session: Http2Session) => {
      this.sessions.add(session)
      session.once('close', () => this.sessions.delete(session))
      if (this.draining) session.close()
    })
  }

  /** Counts a request until its response is finished or its connection is gone. */
  requestStarted(request: IncomingMessage, response: ServerResponse): void {
    const socket = request.httpVersionMajor === 1 ? request.socket : undefined
    this.requests += 1
    if (socket) this.sockets.set(socket, (this.sockets.get(socket) ?? 0) + 1)
    response.once('close', () => {
      this.requests -= 1
      if (socket && this.sockets.has(socket)) {
        const active = (this.sockets.get(socket) ?? 1) - 1
        this.sockets.set(socket, active)
        if (this.draining && active === 0) socket.end()
      }
      if (this.requests === 0) this.resolveIdle()
    })
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
    for (const [socket, active] of this.sockets) {
      if (active === 0 && !this.isHttp2(socket)) socket.end()
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
