import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { type RawData, WebSocket, WebSocketServer } from 'ws'
import { type ErrorCode, errorBody, errorStatus } from '../errors.js'
import type { App } from '../policy/compile.js'
import { type ForwardedFacts, upstreamRequestHeaders } from './headers.js'
import type { Upstream } from './proxy.js'
import { upstreamErrorCode } from './proxy.js'

interface Link {
  client: WebSocket
  upstream: WebSocket
  app: string
}

export interface UpgradeOutcome {
  status: number
  code?: ErrorCode
}

const negotiatedProtocol = new WeakMap<IncomingMessage, string>()

/**
 * Relays WebSocket connections. The upstream handshake happens first and the client's is completed only
 * once the upstream accepted, so a refusal or an outage reaches the client as a plain HTTP answer
 * (the upstream's own, or a JSON 502/504) instead of a socket that opens and dies. Frames, pings, pongs
 * and close codes pass through unchanged in both directions.
 */
export class WebSocketRelay {
  private readonly server = new WebSocketServer({
    noServer: true,
    autoPong: false,
    perMessageDeflate: false,
    handleProtocols: (_offered, request) => negotiatedProtocol.get(request) ?? false,
  })
  private readonly links = new Set<Link>()
  private idleResolvers: (() => void)[] = []

  get size(): number {
    return this.links.size
  }

  relay(
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    app: App,
    upstream: Upstream,
    facts: ForwardedFacts,
  ): Promise<UpgradeOutcome> {
    return new Promise((resolve) => {
      const url = new URL(request.url ?? '/', upstream.origin)
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
      const offered = (request.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((protocol) => protocol.trim())
        .filter(Boolean)
      const { connect, read } = app.upstream.timeouts
      const target = new WebSocket(url, offered, {
        headers: upstreamRequestHeaders(request.headers, facts, { websocket: true }) as Record<
          string,
          string
        >,
        handshakeTimeout: connect + read,
        autoPong: false,
        perMessageDeflate: false,
        followRedirects: false,
      })
      let settled = false
      const settle = (outcome: UpgradeOutcome) => {
        settled = true
        resolve(outcome)
      }
      socket.once('close', () => {
        if (!settled) target.terminate()
      })

      target.once('unexpected-response', (_upstreamRequest, response) => {
        // The upstream refused the upgrade: the client gets that answer verbatim.
        let head = `HTTP/1.1 ${response.statusCode} ${response.statusMessage}\r\n`
        for (let i = 0; i < response.rawHeaders.length; i += 2) {
          head += `${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}\r\n`
        }
        socket.write(`${head}\r\n`)
        response.pipe(socket)
        response.once('end', () => target.terminate())
        settle({ status: response.statusCode ?? 502 })
      })
      target.once('error', (error) => {
        if (settled) return
        const code = /timed out/i.test(error.message) ? 'PCL_UPSTREAM_TIMEOUT' : upstreamErrorCode(error)
        writeHttpError(socket, code, facts.requestId)
        settle({ status: errorStatus(code), code })
      })
      target.once('open', () => {
        if (target.protocol) negotiatedProtocol.set(request, target.protocol)
        this.server.handleUpgrade(request, socket, head, (client) => {
          this.link({ client, upstream: target, app: app.id })
          settle({ status: 101 })
        })
      })
    })
  }

  private link(link: Link): void {
    const { client, upstream } = link
    this.links.add(link)
    pipe(client, upstream)
    pipe(upstream, client)
    let closed = 0
    const onClose = () => {
      closed += 1
      if (closed === 2) this.unlink(link)
    }
    client.once('close', onClose)
    upstream.once('close', onClose)
  }

  private unlink(link: Link): void {
    this.links.delete(link)
    if (this.links.size === 0) {
      for (const resolve of this.idleResolvers) resolve()
      this.idleResolvers = []
    }
  }

  /** Resolves once every relayed connection has closed on its own. */
  idle(): Promise<void> {
    if (this.links.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleResolvers.push(resolve))
  }

  /** Closes every relayed connection with 1001 (going away); both peers are told. */
  closeAll(reason: string): void {
    for (const { client, upstream } of this.links) {
      client.close(1001, reason)
      upstream.close(1001, reason)
    }
  }
}

function pipe(from: WebSocket, to: WebSocket): void {
  from.on('message', (data: RawData, isBinary: boolean) => {
    if (to.readyState === WebSocket.OPEN) to.send(data, { binary: isBinary })
  })
  from.on('ping', (data) => {
    if (to.readyState === WebSocket.OPEN) to.ping(data)
  })
  from.on('pong', (data) => {
    if (to.readyState === WebSocket.OPEN) to.pong(data)
  })
  from.once('close', (code, reason) => closePeer(to, code, reason))
  from.once('error', () => to.terminate())
}

/** Passes a close on. 1005 (no code sent) and 1006 (connection lost) are never sent on the wire. */
function closePeer(peer: WebSocket, code: number, reason: Buffer): void {
  if (peer.readyState === WebSocket.CLOSED || peer.readyState === WebSocket.CLOSING) return
  if (code === 1006) peer.terminate()
  else if (code === 1005) peer.close()
  else peer.close(code, reason)
}

function writeHttpError(socket: Duplex, code: ErrorCode, requestId: string): void {
  const body = JSON.stringify(errorBody(code, requestId))
  socket.end(
    `HTTP/1.1 ${errorStatus(code)} ${code}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}
