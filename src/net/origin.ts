const originShape = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]+$/i

/**
 * `HTTPS://App.Example.com:443` → `https://app.example.com`: lowercase scheme and host, default port
 * dropped. Undefined for anything that is not a bare http(s) origin. `null` stays `null`.
 */
export function canonicalOrigin(text: string): string | undefined {
  if (text === 'null') return 'null'
  if (!originShape.test(text) || !URL.canParse(text)) return undefined
  const url = new URL(text)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
  return url.origin
}

interface OriginPattern {
  scheme: string
  /** `.example.com`: the host must end with it and have at least one more label. */
  suffix: string
  port: string
}

function parsePattern(text: string): OriginPattern | undefined {
  const match = /^(https?):\/\/\*\.([^/:?#@\s]+)(?::(\d{1,5}))?$/i.exec(text)
  if (!match) return undefined
  const sample = canonicalOrigin(`${match[1]}://x.${match[2]}${match[3] ? `:${match[3]}` : ''}`)
  if (!sample) return undefined
  const url = new URL(sample)
  return { scheme: url.protocol, suffix: url.hostname.slice(1), port: url.port }
}

/** What a policy may list: an origin, a `https://*.example.com` pattern, `null` or `*`. */
export function isOriginSpec(text: string): boolean {
  return text === '*' || canonicalOrigin(text) !== undefined || parsePattern(text) !== undefined
}

/**
 * An origin allowlist, compiled at load. Exact origins are compared after canonicalisation; patterns
 * match subdomains only, never by plain suffix, so `https://*.example.com` admits
 * `https://a.example.com` but not `https://evilexample.com` or `https://example.com.evil.net`.
 */
export class OriginMatcher {
  private readonly exact = new Set<string>()
  private readonly patterns: OriginPattern[] = []
  readonly anyOrigin: boolean

  constructor(specs: readonly string[]) {
    this.anyOrigin = specs.includes('*')
    for (const spec of specs) {
      const origin = canonicalOrigin(spec)
      if (origin) this.exact.add(origin)
      const pattern = parsePattern(spec)
      if (pattern) this.patterns.push(pattern)
    }
  }

  get isEmpty(): boolean {
    return !this.anyOrigin && this.exact.size === 0 && this.patterns.length === 0
  }

  /** The canonical origin if the Origin header value is allowed; undefined otherwise. */
  match(header: string): string | undefined {
    const origin = canonicalOrigin(header)
    if (!origin) return undefined
    if (this.exact.has(origin)) return origin
    if (origin === 'null') return undefined
    if (this.anyOrigin) return origin
    const url = new URL(origin)
    for (const pattern of this.patterns) {
      if (
        url.protocol === pattern.scheme &&
        url.port === pattern.port &&
        url.hostname.length > pattern.suffix.length &&
        url.hostname.endsWith(pattern.suffix)
      ) {
        return origin
      }
    }
    return undefined
  }
}

/**
 * Whether `Sec-Fetch-Site` says the request may come from another origin: any value but exactly
 * `same-origin` or `none` (browsers send one lower-case value; `Cross-Site`, two headers or a
 * made-up value are read as the worst case, never as absent).
 */
export function fetchSiteIsForeign(site: string | string[] | undefined): site is string | string[] {
  return site !== undefined && site !== 'same-origin' && site !== 'none'
}

/**
 * Whether a browser says the request comes from the page's own origin: scheme, host and port. As Go's
 * CrossOriginProtection reads it, `Sec-Fetch-Site` decides when present (`same-origin`, or `none` for
 * a navigation the user typed; `same-site` and `cross-site` never are, whatever `Origin` says); else
 * an `Origin` whose scheme is the request's (`secure`: HTTPS at the client's side) and whose host and
 * port are the request's Host. A page can forge neither.
 */
export function isSameOrigin(
  headers: {
    origin?: string | undefined
    host?: string | undefined
    ':authority'?: string | string[] | undefined
    'sec-fetch-site'?: string | string[] | undefined
  },
  secure: boolean,
): boolean {
  const site = headers['sec-fetch-site']
  if (site !== undefined) return site === 'same-origin' || site === 'none'
  const { origin } = headers
  // HTTP/2 requests name their host in :authority (a Host beside it must be the same).
  const host = (headers[':authority'] as string | undefined) ?? headers.host
  if (!origin || !host) return false
  const canonical = canonicalOrigin(origin)
  if (!canonical || canonical === 'null') return false
  // As the browser names the page's origin: case and the default port folded, a trailing dot kept
  // (https://app.test. is another origin than https://app.test to a browser).
  return canonical === canonicalOrigin(`${secure ? 'https' : 'http'}://${host}`)
}
