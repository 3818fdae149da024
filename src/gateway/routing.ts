import { isIP } from 'node:net'
import type { ErrorCode } from '../errors.js'
import { defaultTlsProfile, type TlsProfile } from '../net/tls-profiles.js'
import type { App } from '../policy/compile.js'

/**
 * Host → app. Exact names win over wildcards; `*.example.com` matches exactly one more label, as in
 * TLS certificates, so `a.b.example.com` and `example.com` itself do not match it.
 */
export class HostRouter {
  private readonly exact = new Map<string, App>()
  private readonly wildcard = new Map<string, App>()
  /** The distinct TLS profiles of the apps served over TLS: with one, the listener reads no ClientHello. */
  readonly tlsProfiles: readonly TlsProfile[]

  constructor(apps: readonly App[]) {
    const profiles = new Map<string, TlsProfile>()
    for (const app of apps) {
      if (app.tls.mode !== 'off') profiles.set(app.tls.profile.key, app.tls.profile)
      for (const host of app.hosts) {
        if (host.startsWith('*.')) this.wildcard.set(host.slice(2), app)
        else this.exact.set(host, app)
      }
    }
    this.tlsProfiles = [...profiles.values()]
  }

  /**
   * The TLS settings a connection for this SNI name is made with: those of the app it routes to, or the
   * default (intermediate) ones for no name, an unknown one, or an app served on plain HTTP.
   */
  tlsProfileFor(servername: string | undefined): TlsProfile {
    const app = this.find(servername)
    return app && app.tls.mode !== 'off' ? app.tls.profile : defaultTlsProfile
  }

  /** `host` may carry a port, brackets, upper case or a trailing dot, as Host headers and SNI do. */
  find(host: string | undefined): App | undefined {
    if (!host) return undefined
    const name = hostnameOf(host)
    const exact = this.exact.get(name)
    if (exact) return exact
    const dot = name.indexOf('.')
    return dot > 0 ? this.wildcard.get(name.slice(dot + 1)) : undefined
  }
}

/** `Example.COM.:8443` → `example.com`; `[::1]:443` → `::1`. */
export function hostnameOf(host: string): string {
  let name = host.toLowerCase()
  if (name.startsWith('[')) {
    const end = name.indexOf(']')
    return end > 0 ? name.slice(1, end) : name
  }
  const colon = name.lastIndexOf(':')
  if (colon >= 0) name = name.slice(0, colon)
  return name.endsWith('.') ? name.slice(0, -1) : name
}

export type RouteDecision =
  | { kind: 'proxy'; app: App }
  | { kind: 'redirect'; location: string }
  | { kind: 'reject'; code: ErrorCode; rule: string; message: string; app?: App }

export interface ArrivingRequest {
  /** Host header (HTTP/1) or :authority (HTTP/2). */
  host: string | undefined
  /** Origin-form request target: path and query. */
  url: string
  /** Set on TLS connections. */
  tls?: TlsFacts
}

/** What routing needs of a TLS connection. */
export interface TlsFacts {
  /** The SNI name the connection was made for. */
  servername: string | undefined
  /** The negotiated version, `TLSv1.3`. */
  protocol: string | null
  /** The key of the profile of the server that accepted the connection. */
  profile?: string
}

const tlsVersionRank: Record<string, number> = { 'TLSv1.2': 2, 'TLSv1.3': 3 }

/**
 * Which app serves a request, or why none does. On plain HTTP, apps with TLS are redirected to HTTPS and
 * only `tls.mode: off` apps are proxied. On TLS, the Host must belong to the app whose certificate the
 * connection was made with, so one app's TLS settings can never be used to reach another (RFC 9110 421).
 */
export function decideRoute(router: HostRouter, request: ArrivingRequest, httpsPort: number): RouteDecision {
  if (!request.url.startsWith('/')) {
    return {
      kind: 'reject',
      code: 'PCL_BAD_REQUEST',
      rule: 'request',
      message: 'The request target must be a path such as /index.html',
    }
  }
  const app = router.find(request.host)
  if (!app) {
    return {
      kind: 'reject',
      code: 'PCL_UNKNOWN_HOST',
      rule: 'hosts',
      message: `No app is configured for host "${request.host ?? ''}"`,
    }
  }
  if (!request.tls) {
    if (app.tls.mode === 'off') return { kind: 'proxy', app }
    const port = httpsPort === 443 ? '' : `:${httpsPort}`
    const host = hostnameOf(request.host ?? '')
    return {
      kind: 'redirect',
      location: `https://${host.includes(':') ? `[${host}]` : host}${port}${request.url}`,
    }
  }
  if (app.tls.mode === 'off') {
    return {
      kind: 'reject',
      code: 'PCL_MISDIRECTED_REQUEST',
      rule: 'tls.mode',
      message: `App ${app.id} is served over plain HTTP only (tls.mode: off)`,
      app,
    }
  }
  const { servername, protocol, profile } = request.tls
  // RFC 6066 forbids IP literals in SNI; some clients (wrk, old libraries) send them anyway: no name given.
  if (servername && !isIP(servername) && router.find(servername) !== app) {
    return {
      kind: 'reject',
      code: 'PCL_MISDIRECTED_REQUEST',
      rule: 'hosts',
      message: `This TLS connection was made for "${servername}", not for this host`,
      app,
    }
  }
  // The front door hands a connection to its SNI app's server; one that reached another (no SNI, a
  // ClientHello it could not read, a reload in between) never gets this app's answers with other settings.
  if (profile !== undefined && profile !== app.tls.profile.key) {
    return {
      kind: 'reject',
      code: 'PCL_MISDIRECTED_REQUEST',
      rule: 'tls.profile',
      message: `This TLS connection was not made with the TLS settings of app ${app.id} (profile ${app.tls.profile.name})`,
      app,
    }
  }
  if ((tlsVersionRank[protocol ?? ''] ?? 0) < (tlsVersionRank[app.tls.minVersion] ?? 0)) {
    return {
      kind: 'reject',
      code: 'PCL_TLS_VERSION_TOO_OLD',
      rule: 'tls.minVersion',
      message: `App ${app.id} requires ${app.tls.minVersion} or later`,
      app,
    }
  }
  return { kind: 'proxy', app }
}

/**
 * Behind a TLS-terminating load balancer (`tls.mode: off`, the balancer a trusted proxy), the protocol
 * the client used is the one the balancer forwards. For an app that asks for HSTS, a client on plain
 * HTTP is redirected to HTTPS, as the gateway does on its own port 80: the redirect's location, or
 * undefined when the request goes on.
 */
export function redirectBehindTerminator(
  app: App,
  request: { host: string | undefined; url: string; forwardedProto: 'http' | 'https' | undefined },
): string | undefined {
  if (app.tls.mode !== 'off' || !app.hstsHeader || request.forwardedProto !== 'http') return undefined
  const host = hostnameOf(request.host ?? '')
  return `https://${host.includes(':') ? `[${host}]` : host}${request.url}`
}
