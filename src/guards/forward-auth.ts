import { createHash } from 'node:crypto'
import { request } from 'undici'
import { compilePathScope } from '../net/path-pattern.js'
import {
  allow,
  coversEitherPath,
  type Decision,
  deny,
  type Guard,
  type GuardExchange,
} from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

type Section = NonNullable<Policy['forwardAuth']>

/** Answers of the auth service are read up to this size (a sign-in page, an error). */
const maxAnswerBytes = 64 * 1024
/** Cached answers kept at most; the cache starts over when full. */
const maxCached = 10_000
/** Headers of a refusal the client gets from the auth service: where to sign in, and its cookies. */
const passedBack = ['location', 'set-cookie', 'www-authenticate', 'content-type']

interface Admitted {
  headers: Record<string, string>
  user: string | undefined
  until: number
}

/**
 * Forward authentication, as Traefik's forwardAuth, Caddy's forward_auth and nginx's auth_request:
 * the auth service (oauth2-proxy, Authelia, Authentik, Pomerium) is asked with the request's method,
 * URI, host, protocol, client address and credentials. A 2xx passes, with the identity headers it
 * names copied to the app; anything else is its answer to the client (a 302 to the sign-in page, a
 * 401); no answer is a 502 or 504, never a pass.
 */
export class ForwardAuthGuard implements Guard {
  readonly name = 'forwardAuth'
  private readonly covers: (path: string) => boolean
  private readonly cache = new Map<string, Admitted>()

  constructor(private readonly section: Section) {
    this.covers = compilePathScope(section.paths, section.except)
  }

  applies(exchange: Pick<GuardExchange, 'path' | 'rewritten'>): boolean {
    return coversEitherPath(exchange, this.covers)
  }

  async check(exchange: GuardExchange): Promise<Decision> {
    const { section } = this
    const headers = this.question(exchange)
    const key = section.cacheTtl > 0 ? questionKey(headers) : undefined
    const cached = key === undefined ? undefined : this.cache.get(key)
    if (cached && cached.until > Date.now()) return admit(exchange, cached)
    let answer: Awaited<ReturnType<typeof request>>
    try {
      answer = await request(section.url, {
        method: 'GET',
        headers,
        headersTimeout: section.timeout,
        bodyTimeout: section.timeout,
        signal: AbortSignal.timeout(section.timeout),
      })
    } catch (error) {
      const timedOut = /timeout|abort/i.test(String((error as { name?: string }).name ?? error))
      return timedOut
        ? deny(
            'PCL_AUTH_TIMEOUT',
            'forwardAuth.timeout',
            `The auth service did not answer within ${section.timeout} ms`,
          )
        : deny('PCL_AUTH_UNAVAILABLE', 'forwardAuth.url', 'The auth service could not be reached')
    }
    const body = await boundedText(answer.body).catch(() => '')
    if (answer.statusCode >= 200 && answer.statusCode < 300) {
      const copied: Record<string, string> = {}
      for (const name of section.copyHeaders) {
        const value = answer.headers[name]
        if (value !== undefined) copied[name] = Array.isArray(value) ? value.join(', ') : value
      }
      const ttl = key === undefined ? 0 : cacheableFor(answer.headers['cache-control'], section.cacheTtl)
      const admitted = {
        headers: copied,
        user: copied[section.userHeader] ?? single(answer.headers[section.userHeader]),
        until: Date.now() + ttl,
      }
      if (key !== undefined && ttl > 0) {
        if (this.cache.size >= maxCached) this.cache.clear()
        this.cache.set(key, admitted)
      }
      const decision = admit(exchange, admitted)
      // The session cookie the auth service refreshes on a pass (oauth2-proxy does) reaches the client.
      const cookies = answer.headers['set-cookie']
      return cookies === undefined ? decision : { kind: 'allow', responseHeaders: { 'set-cookie': cookies } }
    }
    const back: Record<string, string | string[]> = {}
    for (const name of passedBack) {
      const value = answer.headers[name]
      if (value !== undefined) back[name] = value
    }
    return {
      kind: 'answer',
      status: answer.statusCode,
      headers: {},
      relayed: back,
      rule: 'forwardAuth',
      body,
    }
  }

  /**
   * What the auth service is asked: the method, the target the upstream will receive (after a route's
   * rewrite), the host as routing read it, the protocol, the client's verified address and the
   * request headers the policy names. The app is told the same facts.
   */
  private question(exchange: GuardExchange): Record<string, string> {
    const headers: Record<string, string> = {
      'x-forwarded-method': exchange.method,
      'x-forwarded-uri': exchange.rewritten?.target ?? exchange.target,
      'x-forwarded-host': exchange.forwarded.host,
      'x-forwarded-proto': exchange.forwarded.proto,
      'x-forwarded-for': exchange.identity.ip,
    }
    for (const name of this.section.requestHeaders) {
      const value = exchange.headers[name]
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value
    }
    return headers
  }

  describe(exchange: Pick<GuardExchange, 'user'>): string {
    return exchange.user ? `user ${exchange.user}` : 'admitted'
  }
}

function admit(exchange: GuardExchange, admitted: Admitted): Decision {
  exchange.identityHeaders = admitted.headers
  if (admitted.user) exchange.user = admitted.user
  return allow
}

/**
 * An answer is reused only for the same question: every header sent to the auth service, names and
 * values, in the order they were sent (which is fixed: the forwarded facts, then `requestHeaders`).
 */
function questionKey(headers: Record<string, string>): string {
  return createHash('sha256')
    .update(JSON.stringify(Object.entries(headers)))
    .digest('base64url')
}

/**
 * How long a pass may be reused: `cacheTtl`, lowered by the answer's `s-maxage` or `max-age`; never
 * when the answer says `no-store`, `no-cache` or `private` (it is about this one request or user).
 */
export function cacheableFor(cacheControl: string | string[] | undefined, cacheTtl: number): number {
  if (cacheControl === undefined) return cacheTtl
  const ages = new Map<string, string>()
  for (const directive of String(cacheControl).split(',')) {
    const equals = directive.indexOf('=')
    const name = (equals < 0 ? directive : directive.slice(0, equals)).trim().toLowerCase()
    if (/^(?:no-store|no-cache|private)\b/.test(name)) return 0
    if (name !== 'max-age' && name !== 's-maxage') continue
    const value =
      equals < 0
        ? ''
        : directive
            .slice(equals + 1)
            .trim()
            .replace(/^"(.*)"$/, '$1')
    // RFC 9111 §4.2.1: an invalid or repeated, disagreeing age makes the answer stale.
    if (!/^\d+$/.test(value) || (ages.has(name) && ages.get(name) !== value)) return 0
    ages.set(name, value)
  }
  const seconds = ages.get('s-maxage') ?? ages.get('max-age')
  return seconds === undefined ? cacheTtl : Math.min(cacheTtl, Number(seconds) * 1000)
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

async function boundedText(body: AsyncIterable<Buffer>): Promise<string> {
  let text = ''
  for await (const chunk of body) {
    text += chunk
    if (text.length > maxAnswerBytes) return text.slice(0, maxAnswerBytes)
  }
  return text
}
