import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import { type RawData, WebSocket, WebSocketServer } from 'ws'
import type { SharedWebSocketCaps } from '../cluster/clients.js'
import { type ErrorCode, errorStatus, rawHttpError, rawHttpHead } from '../errors.js'
import type { DroppedHeader } from '../net/vouched-headers.js'
import type { LiveWebSockets } from '../pipeline/guard.js'
import type { App } from '../policy/compile.js'
import { type PlaceCaps, PlaceCounts } from '../stores/counts.js'
import type { UpstreamPools } from '../upstreams/pools.js'
import type { Upstream } from '../upstreams/target.js'
import { downstreamResponseHeaders, type ForwardedFacts, upstreamRequestHeaders } from './headers.js'
import { upstreamErrorCode } from './proxy.js'

interface Link {
  client: WebSocket
  upstream: WebSocket
  reservation: Reservation
}

export interface UpgradeOutcome {
  status: number
  code?: ErrorCode
}

/** A place counted against the WebSocket caps, from the guard's check until the connection ends. */
export interface Reservation {
  release(): void
}

export interface UpgradeRequest {
  request: IncomingMessage
  socket: Duplex
  head: Buffer
  /** The canonical path and query sent upstream. */
  target: string
  reservation: Reservation
  /** The headers of an answer to the client, from the upstream's (the policy's response edits). */
  responseHeaders(fromApp: OutgoingHttpHeaders): OutgoingHttpHeaders
  /** Where the client headers not forwarded for their name are kept (the exchange). */
  dropped: { droppedHeaders: DroppedHeader[] | undefined }
}

const negotiatedProtocol = new WeakMap<IncomingMessage, string>()

/** Caps spread over `share` workers: each gets 1/share of each cap, at least one place. */
function shareOfCaps(caps: PlaceCaps, share: number): PlaceCaps {
  const each = (cap: number | undefined) =>
    cap === undefined ? undefined : Math.max(1, Math.floor(cap / share))
  const app = each(caps.app)
  const ip = each(caps.ip)
  return { ...(app === undefined ? {} : { app }), ...(ip === undefined ? {} : { ip }) }
}

/**
 * Relays WebSocket connections. The upstream handshake happens first and the client's is completed only
 * once the upstream accepted, so a refusal or an outage reaches the client as a plain HTTP answer
 * (the upstream's own, or a JSON 502/504) instead of a socket that opens and dies. Frames, pings, pongs
 * and close codes pass through unchanged in both directions.
 */
export class WebSocketRelay {
  /** One server per message size limit: ws sets maxPayload per server. */
  private readonly servers = new Map<number, WebSocketServer>()
  private readonly links = new Set<Link>()
  /** This process's places: for metrics, and for the caps unless the primary counts them. */
  private readonly places = new PlaceCounts()
  private idleResolvers: (() => void)[] = []

  constructor(
    private readonly pools: UpstreamPools,
    /** With workers: the caps counted in the primary. */
    private readonly shared?: SharedWebSocketCaps,
  ) {}

  get size(): number {
    return this.links.size
  }

  /** Open (and just admitted) WebSockets per cap scope: the app, or `app#route` for a route with caps of its own. */
  openByScope(): ReadonlyMap<string, number> {
    return this.places.byScope
  }

  /** Open and reserved WebSockets of a cap scope and of one of its clients, in this process. */
  live(scope: string, ip: string): LiveWebSockets {
    return this.places.open(scope, ip)
  }

  /**
   * Takes a place under the caps unless they are full, in one step with the check, so concurrent
   * upgrades cannot overshoot; `live` is what was open before. Without caps the place is always taken
   * (report-only still counts). With workers the step happens in the primary, over all of them; while
   * the primary cannot answer, this worker holds its share of the caps (1/workers, at least one).
   */
  async reserve(
    scope: string,
    ip: string,
    caps: PlaceCaps | undefined,
  ): Promise<{ reservation?: Reservation; live: LiveWebSockets }> {
    const { shared } = this
    if (!shared) return this.reserveHere(scope, ip, caps)
    const place = await shared.reserve(scope, ip, caps).catch(() => undefined)
    if (!place) return this.reserveHere(scope, ip, caps && shareOfCaps(caps, shared.share))
    if (!place.taken) return { live: place.live }
    const release = this.places.take(scope, ip)
    return {
      live: place.live,
      reservation: {
        release: () => {
          release()
          place.release()
        },
      },
    }
  }

  private reserveHere(
    scope: string,
    ip: string,
    caps: PlaceCaps | undefined,
  ): { reservation?: Reservation; live: LiveWebSockets } {
    const live = this.places.open(scope, ip)
    if (PlaceCounts.full(live, caps)) return { live }
    return { live, reservation: { release: this.places.take(scope, ip) } }
  }

  relay(
    upgrade: UpgradeRequest,
    app: App,
    upstream: Upstream,
    facts: ForwardedFacts,
  ): Promise<UpgradeOutcome> {
    const { request, socket, head, reservation } = upgrade
    const { maxMessageSize, idleTimeout } = app.websocket
    // An open WebSocket counts on its target for least-connections until the client side closes;
    // passive health hears whether the target could be reached at all.
    let unreachable = false
    this.pools.begin(upstream)
    socket.once('close', () => this.pools.end(app, upstream, unreachable))
    return new Promise((resolve) => {
      let settled = false
      const settle = (outcome: UpgradeOutcome) => {
        settled = true
        if (outcome.status !== 101) reservation.release()
        unreachable =
          outcome.code === 'PCL_UPSTREAM_UNREACHABLE' || outcome.code === 'PCL_UPSTREAM_CONNECT_TIMEOUT'
        resolve(outcome)
      }
      let target: WebSocket
      try {
        target = this.connectUpstream(upgrade, app, upstream, facts)
      } catch (error) {
        // ws refuses some handshakes before connecting (a duplicated or malformed subprotocol).
        const code: ErrorCode = error instanceof SyntaxError ? 'PCL_BAD_REQUEST' : 'PCL_INTERNAL'
        socket.end(rawHttpError(code, facts.requestId, upgrade.responseHeaders({})))
        settle({ status: errorStatus(code), code })
        return
      }
      socket.once('close', () => {
        if (!settled) {
          target.terminate()
          settle({ status: 499 })
        }
      })

      target.once('unexpected-response', (_upstreamRequest, response) => {
        // The upstream refused the upgrade: the client gets its answer, edited like every other answer
        // (CORS, security headers, HSTS), its body delimited by closing the connection.
        const headers = upgrade.responseHeaders(downstreamResponseHeaders(response.headers))
        const status = response.statusCode ?? 502
        socket.write(rawHttpHead(status, response.statusMessage ?? '', { ...headers, connection: 'close' }))
        response.pipe(socket)
        response.once('end', () => target.terminate())
        settle({ status })
      })
      target.once('error', (error) => {
        if (settled) return
        const code = /timed out/i.test(error.message) ? 'PCL_UPSTREAM_TIMEOUT' : upstreamErrorCode(error)
        socket.end(rawHttpError(code, facts.requestId, upgrade.responseHeaders({})))
        settle({ status: errorStatus(code), code })
      })
      target.once('open', () => {
        if (target.protocol) negotiatedProtocol.set(request, target.protocol)
        this.serverFor(maxMessageSize).handleUpgrade(request, socket, head, (client) => {
          this.link({ client, upstream: target, reservation }, idleTimeout)
          settle({ status: 101 })
        })
      })
    })
  }

  private connectUpstream(
    upgrade: UpgradeRequest,
    app: App,
    upstream: Upstream,
    facts: ForwardedFacts,
  ): WebSocket {
    const url = new URL(upgrade.target, upstream.origin)
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    const offered = (upgrade.request.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((protocol) => protocol.trim())
      .filter(Boolean)
    const { connect, headers } = app.upstream.timeouts
    return new WebSocket(url, offered, {
      headers: upstreamRequestHeaders(upgrade.request.headers, facts, {
        websocket: true,
        dropped: upgrade.dropped,
      }) as Record<string, string>,
      handshakeTimeout: connect + headers,
      autoPong: false,
      perMessageDeflate: false,
      followRedirects: false,
      maxPayload: app.websocket.maxMessageSize,
    })
  }

  private serverFor(maxPayload: number): WebSocketServer {
    let server = this.servers.get(maxPayload)
    if (!server) {
      server = new WebSocketServer({
        noServer: true,
        autoPong: false,
        perMessageDeflate: false,
        maxPayload,
        handleProtocols: (_offered, request) => negotiatedProtocol.get(request) ?? false,
      })
      this.servers.set(maxPayload, server)
    }
    return server
  }

  private link(link: Link, idleTimeout: number | undefined): void {
    const { client, upstream } = link
    this.links.add(link)
    // No frame either way for idleTimeout: both sides are told 1001 (going away).
    const idle = idleTimeout
      ? setTimeout(() => {
          client.close(1001, 'idle timeout')
          upstream.close(1001, 'idle timeout')
        }, idleTimeout)
      : undefined
    const activity = () => idle?.refresh()
    pipe(client, upstream, activity)
    pipe(upstream, client, activity)
    let closed = 0
    const onClose = () => {
      closed += 1
      if (closed === 2) {
        clearTimeout(idle)
        this.unlink(link)
      }
    }
    client.once('close', onClose)
    upstream.once('close', onClose)
  }

  private unlink(link: Link): void {
    this.links.delete(link)
    link.reservation.release()
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

/**
 * Bytes a relayed direction may hold in the gateway (sent to the slow side but not yet written to its
 * socket) before the fast side stops being read: past it, TCP pushes back on the sender, so a client
 * that stops reading costs one message plus this much memory, not the whole stream.
 */
const highWaterMark = 1024 * 1024

function pipe(from: WebSocket, to: WebSocket, activity: () => void): void {
  let paused = false
  // Called as each message reaches the slow side's socket: bytes that move count as activity.
  const resumeOnceDrained = () => {
    activity()
    if (paused && to.bufferedAmount < highWaterMark / 2 && from.readyState === WebSocket.OPEN) {
      paused = false
      from.resume()
    }
  }
  from.on('message', (data: RawData, isBinary: boolean) => {
    activity()
    if (to.readyState !== WebSocket.OPEN) return
    to.send(data, { binary: isBinary }, resumeOnceDrained)
    if (!paused && to.bufferedAmount > highWaterMark) {
      paused = true
      from.pause()
    }
  })
  from.on('ping', (data) => {
    activity()
    if (to.readyState === WebSocket.OPEN) to.ping(data)
  })
  from.on('pong', (data) => {
    activity()
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
