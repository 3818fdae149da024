import type { OutgoingHttpHeaders } from 'node:http'
import { fetchSiteIsForeign, isSameOrigin, OriginMatcher } from '../net/origin.js'
import { type Decision, deny, type Guard, type GuardExchange, type ResponseEdit } from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

type CorsSection = NonNullable<Policy['cors']>

/**
 * Strict CORS. The gateway answers preflights itself and decides the CORS headers of every answer:
 * the app's own Access-Control-* headers are always removed (see `isCorsHeader`), so the app cannot
 * widen the policy. `Vary: Origin` is always sent, so caches never serve one origin's grant to another.
 */
export class CorsGuard implements Guard, ResponseEdit {
  readonly name = 'cors'
  readonly origins: OriginMatcher
  private readonly credentials: boolean
  private readonly methods: ReadonlySet<string>
  private readonly allowedHeaders: ReadonlySet<string>
  private readonly preflightHeaders: OutgoingHttpHeaders
  private readonly exposed: string | undefined
  private readonly onDisallowed: CorsSection['onDisallowed']

  constructor(section: CorsSection) {
    this.origins = new OriginMatcher(section.origins)
    this.credentials = section.credentials
    this.methods = new Set(section.methods)
    this.allowedHeaders = new Set(section.allowedHeaders)
    this.exposed = section.exposedHeaders.length > 0 ? section.exposedHeaders.join(', ') : undefined
    this.onDisallowed = section.onDisallowed
    this.preflightHeaders = {
      'access-control-allow-methods': section.methods.join(', '),
      'access-control-allow-headers': section.allowedHeaders.join(', '),
      'access-control-max-age': String(Math.floor(section.maxAge / 1000)),
    }
  }

  /** WebSocket handshakes are judged by the WebSocket guard: browsers apply no CORS to them. */
  applies(exchange: Pick<GuardExchange, 'upgrade'>): boolean {
    return !exchange.upgrade
  }

  /** The app's own CORS headers never reach the client: the grant is the gateway's alone. */
  drops(name: string): boolean {
    return isCorsHeader(name)
  }

  explainEdit(): string {
    return "Access-Control-*: the app's removed, the gateway's grant added for allowed origins; Vary: Origin"
  }

  check(request: Pick<GuardExchange, 'method' | 'headers' | 'secure'>): Decision {
    const originHeader = request.headers.origin
    const requestedMethod = request.headers['access-control-request-method']
    const isPreflight = request.method === 'OPTIONS' && typeof requestedMethod === 'string'
    // A write a browser says comes from another site, without naming the origin (an old browser, or a
    // stripped header): refused as Go's CrossOriginProtection does. Navigations (GET) pass.
    if (originHeader === undefined && this.onDisallowed === 'reject' && !safeMethods.has(request.method)) {
      const site = request.headers['sec-fetch-site']
      if (fetchSiteIsForeign(site))
        return deny(
          'PCL_CORS_ORIGIN_DENIED',
          'cors.origins',
          `A ${request.method} without an Origin from another site (Sec-Fetch-Site: ${String(site)}) is not allowed`,
          {
            vary: 'Origin',
          },
        )
    }
    // Same-origin requests need no CORS grant and are never refused for their Origin: a form post or a
    // fetch from the app's own pages, whether or not its origin is listed.
    if (originHeader === undefined || isSameOrigin(request.headers, request.secure))
      return { kind: 'allow', responseHeaders: { vary: 'Origin' } }

    const origin = this.origins.match(originHeader)
    if (!origin) {
      if (isPreflight || this.onDisallowed === 'reject') {
        return deny('PCL_CORS_ORIGIN_DENIED', 'cors.origins', `Origin ${originHeader} is not allowed`, {
          vary: 'Origin',
        })
      }
      return { kind: 'allow', responseHeaders: { vary: 'Origin' } }
    }
    const grant: OutgoingHttpHeaders = {
      'access-control-allow-origin': this.origins.anyOrigin && !this.credentials ? '*' : origin,
      vary: 'Origin',
    }
    if (this.credentials) grant['access-control-allow-credentials'] = 'true'

    if (!isPreflight) {
      if (this.exposed) grant['access-control-expose-headers'] = this.exposed
      return { kind: 'allow', responseHeaders: grant }
    }
    if (!this.methods.has(requestedMethod.toUpperCase())) {
      return deny('PCL_CORS_METHOD_DENIED', 'cors.methods', `Method ${requestedMethod} is not allowed`, {
        vary: 'Origin',
      })
    }
    const requestedHeaders = String(request.headers['access-control-request-headers'] ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter(Boolean)
    const refused = requestedHeaders.find((name) => !this.allowedHeaders.has(name))
    if (refused) {
      return deny('PCL_CORS_HEADER_DENIED', 'cors.allowedHeaders', `Header ${refused} is not allowed`, {
        vary: 'Origin',
      })
    }
    return { kind: 'answer', status: 204, rule: 'cors', headers: { ...grant, ...this.preflightHeaders } }
  }
}

/** Methods a navigation or a safe fetch uses (RFC 9110 §9.2.1): no Origin needed to judge them. */
const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS'])

export function isCorsHeader(name: string): boolean {
  return name.startsWith('access-control-')
}
