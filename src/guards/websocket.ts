import { fetchSiteIsForeign, isSameOrigin, OriginMatcher } from '../net/origin.js'
import { compilePathPattern } from '../net/path-pattern.js'
import {
  allow,
  type Decision,
  deny,
  type Guard,
  type GuardExchange,
  type GuardServices,
  type LiveWebSockets,
} from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'
import type { PlaceCaps } from '../stores/counts.js'

interface PathRule {
  id: string
  pattern: RegExp
  origins: OriginMatcher
  requireOrigin: boolean
}

/**
 * Decides WebSocket upgrades before they happen: the Origin must be allowed (per path, defaulting to
 * the CORS origins) and the app's and the client's connection caps must have room. Refusals are plain
 * HTTP answers (403, 429), so the browser never gets an open socket.
 */
export class WebSocketGuard implements Guard {
  readonly name = 'websocket'
  readonly maxMessageSize: number
  readonly idleTimeout: number | undefined
  private readonly rules: PathRule[]
  private readonly defaultOrigins: OriginMatcher
  private readonly maxConnections: number | undefined
  private readonly maxConnectionsPerIp: number | undefined
  /** The caps, for the place the listener takes once every guard admitted the upgrade. */
  readonly caps: PlaceCaps | undefined

  constructor(
    /** Whose connections count against the caps: the app, or a route with caps of its own. */
    private readonly scope: string,
    section: Policy['websocket'],
    corsOrigins: readonly string[] | undefined,
  ) {
    this.maxMessageSize = section.maxMessageSize
    this.idleTimeout = section.idleTimeout
    this.maxConnections = section.maxConnections
    this.maxConnectionsPerIp = section.maxConnectionsPerIp
    this.caps =
      section.maxConnections === undefined && section.maxConnectionsPerIp === undefined
        ? undefined
        : { app: section.maxConnections, ip: section.maxConnectionsPerIp }
    this.defaultOrigins = new OriginMatcher(corsOrigins ?? [])
    this.rules = section.paths.map((rule, index) => ({
      id: `websocket.paths[${index}]`,
      pattern: compilePathPattern(rule.path, true),
      origins: rule.allowedOrigins ? new OriginMatcher(rule.allowedOrigins) : this.defaultOrigins,
      requireOrigin: rule.requireOrigin,
    }))
  }

  /** Browsers apply no CORS to WebSocket handshakes: this guard judges their Origin, per path. */
  applies(exchange: Pick<GuardExchange, 'upgrade'>): boolean {
    return exchange.upgrade
  }

  check(
    request: Pick<GuardExchange, 'path' | 'rewritten' | 'headers' | 'identity' | 'secure'> & {
      services: Pick<GuardServices, 'liveWebSockets'>
    },
  ): Decision {
    // The path's Origin rule, and after a route's rewrite the rewritten path's too.
    const origin = this.checkOrigin(request, request.path)
    if (origin.kind !== 'allow') return origin
    if (request.rewritten) {
      const rewritten = this.checkOrigin(request, request.rewritten.path)
      if (rewritten.kind !== 'allow') return rewritten
    }
    return this.checkCapacity(request.services.liveWebSockets(this.scope, request.identity.ip))
  }

  private checkOrigin(request: Pick<GuardExchange, 'headers' | 'secure'>, path: string): Decision {
    const rule = this.rules.find((candidate) => candidate.pattern.test(path))
    const origins = rule?.origins ?? this.defaultOrigins
    const origin = request.headers.origin
    const ruleId = rule?.id ?? 'cors.origins'
    const site = request.headers['sec-fetch-site']
    if (origin === undefined) {
      if (rule?.requireOrigin)
        return deny('PCL_WS_ORIGIN_DENIED', `${rule.id}.requireOrigin`, 'An Origin header is required')
      // Browsers always send an Origin with a WebSocket handshake; one that says it comes from another
      // site without naming it is refused where an origin check applies.
      if (!origins.isEmpty && fetchSiteIsForeign(site))
        return deny(
          'PCL_WS_ORIGIN_DENIED',
          ruleId,
          `A WebSocket without an Origin from another site (Sec-Fetch-Site: ${String(site)}) is not allowed`,
        )
    } else if (!origins.isEmpty && !origins.match(origin) && !isSameOrigin(request.headers, request.secure)) {
      return deny('PCL_WS_ORIGIN_DENIED', ruleId, `WebSocket connections from ${origin} are not allowed`)
    }
    return allow
  }

  /**
   * The caps alone. The listener asks again right before it reserves a place, in the same turn of the
   * event loop: guards that wait (rate limits) let other upgrades pass `check` in the meantime.
   */
  checkCapacity(live: LiveWebSockets): Decision {
    if (this.maxConnections !== undefined && live.app >= this.maxConnections) {
      return deny(
        'PCL_WS_TOO_MANY_CONNECTIONS',
        'websocket.maxConnections',
        'The app has too many open WebSockets',
      )
    }
    if (this.maxConnectionsPerIp !== undefined && live.ip >= this.maxConnectionsPerIp) {
      return deny(
        'PCL_WS_TOO_MANY_CONNECTIONS',
        'websocket.maxConnectionsPerIp',
        'This client has too many open WebSockets',
      )
    }
    return allow
  }
}
