/**
 * `X_Auth-Request_user` → `x-auth-request-user`: the one name that WSGI and CGI servers (and gunicorn
 * before 22) give every spelling, as `HTTP_X_AUTH_REQUEST_USER`. Node has already lowered the case.
 */
export function foldedHeaderName(name: string): string {
  return ordinaryName.test(name) ? name : name.replace(/[^a-z0-9]/g, '-')
}

/** Letters (lower case: Node lowers them), digits and `-`: what every server reads the same way. */
const ordinaryName = /^[a-z0-9-]+$/
/** With `_` too, which servers fold or keep. Anything else (`.`, `~`, `+`) PHP and CGI servers fold into `_`. */
const underscoredName = /^[a-z0-9_-]+$/

/** Why a client header name is not forwarded whatever it is called, if it is not: undefined when it may be. */
export function unusualName(name: string, forwardsUnderscores: boolean): 'underscore' | 'name' | undefined {
  if (ordinaryName.test(name)) return undefined
  if (!underscoredName.test(name)) return 'name'
  return forwardsUnderscores ? undefined : 'underscore'
}

/** What the gateway does with a client header of a name it vouches for. */
type Vouched =
  /** Written by the gateway from what it verified (the chain, the protocol, the host, the request id). */
  | 'written'
  /** A client-IP header an app may read (request-ip, a CDN's): the client's is replaced with the verified address. */
  | 'client-ip'
  /** A forwarding header the gateway does not write: an app that trusts its proxy for it trusts no client. */
  | 'removed'
  /** Only the app's auth service may set it (forwardAuth.copyHeaders). */
  | 'identity'

const written = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip', 'x-request-id']
const clientIpHeaders = [
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-cluster-client-ip',
]
const removed = [
  'forwarded',
  'x-forwarded',
  'forwarded-for',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
  'x-forwarded-scheme',
  'x-forwarded-ssl',
  'front-end-https',
  'x-url-scheme',
  // IIS and old Symfony route by these: a client's would move the request past every path rule.
  'x-original-url',
  'x-rewrite-url',
]

/** Why a client header did not reach the app. */
export type DropReason = 'underscore' | 'name' | 'forwarding' | 'identity'

export interface DroppedHeader {
  name: string
  reason: DropReason
}

/**
 * The request headers an app's upstream gets from the gateway's word, compiled once per app: every
 * forwarding and client-IP header, the `clientIp.header`, the identity headers of forward auth. A client
 * header whose name folds (case, `_` for `-`) to one of them is removed or rewritten on every path,
 * HTTP/1.1, HTTP/2 and upgrades. Other names with underscores are dropped unless the policy forwards
 * them, as nginx does (`underscores_in_headers off`): a WSGI app would read them as a dashed name.
 */
export class VouchedHeaders {
  private readonly vouched = new Map<string, Vouched>()
  /** Client-IP headers set to the verified address even when the client sent none. */
  readonly alwaysClientIp: readonly string[]
  readonly forwardsUnderscores: boolean

  constructor(options: {
    clientIpHeader: string
    identityHeaders: Iterable<string>
    underscores: 'drop' | 'forward'
  }) {
    this.forwardsUnderscores = options.underscores === 'forward'
    for (const name of removed) this.vouched.set(name, 'removed')
    for (const name of clientIpHeaders) this.vouched.set(name, 'client-ip')
    for (const name of written) this.vouched.set(name, 'written')
    const own = foldedHeaderName(options.clientIpHeader.toLowerCase())
    const chain = own === 'x-forwarded-for' || own === 'forwarded'
    if (!chain) this.vouched.set(own, 'client-ip')
    this.alwaysClientIp = chain || own === 'x-real-ip' ? [] : [own]
    for (const name of options.identityHeaders)
      this.vouched.set(foldedHeaderName(name.toLowerCase()), 'identity')
  }

  /** How the gateway treats a client header of this (lower-case) name; undefined: it is the client's. */
  of(name: string): Vouched | undefined {
    return this.vouched.get(foldedHeaderName(name))
  }
}

/**
 * `Admin.Example.COM.:443` → `admin.example.com`: the host as routing matched it, keeping a port that
 * is not the scheme's default, so the app and an auth service see one spelling of each name.
 */
export function normalisedHost(host: string, proto: string): string {
  let name = host.toLowerCase()
  let port = ''
  const close = name.lastIndexOf(']')
  const colon = name.lastIndexOf(':')
  if (colon > close) {
    // `:0443` is port 443, as a URL parser reads it.
    port = String(Number(name.slice(colon + 1)))
    name = name.slice(0, colon)
  }
  if (name.endsWith('.')) name = name.slice(0, -1)
  const standard = proto === 'https' ? '443' : '80'
  return port === '' || port === standard ? name : `${name}:${port}`
}

const hostAndPort =
  /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/

/**
 * Whether a Host (or :authority, or a trusted proxy's X-Forwarded-Host) is a host name or address and
 * an optional port, nothing more: `app.test:443@evil.test` routes by its first part but reads as
 * `evil.test` to a URL parser, so it is refused, never forwarded.
 */
export function isHostAndPort(host: string): boolean {
  const match = hostAndPort.exec(host)
  return match !== null && (match[1] === undefined || (Number(match[1]) >= 1 && Number(match[1]) <= 65_535))
}
