import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ErrorCode } from '../errors.js'
import type { PublicView } from '../gateway/headers.js'
import type { ClientIdentity } from '../guards/client-ip.js'
import type { OpenPlaces } from '../stores/counts.js'
import type { ResilientRateLimitStore } from '../stores/resilient-store.js'

/**
 * What a guard says about a request. Guards never throw or write responses: the runner acts on the
 * decision, so enforcement, report-only mode and `explain` all run the same code.
 */
export type Decision =
  /** Pass on; `responseHeaders` are added to whatever answer the client gets. */
  | { kind: 'allow'; responseHeaders?: OutgoingHttpHeaders }
  /**
   * The gateway answers itself without an error (a CORS preflight), or relays another service's
   * answer: `relayed` are that answer's own headers, edited like an app's (cookies hardened).
   */
  | {
      kind: 'answer'
      status: number
      headers: OutgoingHttpHeaders
      rule: string
      body?: string
      relayed?: OutgoingHttpHeaders
    }
  /** Refused, with the code, the policy rule that decided and a message for the client. */
  | { kind: 'deny'; code: ErrorCode; rule: string; message: string; headers?: OutgoingHttpHeaders }

export const allow: Decision = { kind: 'allow' }

export function deny(
  code: ErrorCode,
  rule: string,
  message: string,
  headers?: OutgoingHttpHeaders,
): Decision {
  return headers ? { kind: 'deny', code, rule, message, headers } : { kind: 'deny', code, rule, message }
}

/**
 * Whether a path rule covers the request: on its canonical path, or on the path a route rewrites it to
 * (stripPrefix, addPrefix), so that no rewrite lands the request past a rule of the app.
 */
export function coversEitherPath(
  exchange: Pick<GuardExchange, 'path' | 'rewritten'>,
  covers: (path: string) => boolean,
): boolean {
  return covers(exchange.path) || (exchange.rewritten !== undefined && covers(exchange.rewritten.path))
}

/** Open WebSockets of a cap scope (an app, or a route with caps of its own) and of one client IP. */
export type LiveWebSockets = OpenPlaces

/** Where limits are counted: the guard neither knows nor cares whether Redis is behind the store. */
export interface RateLimitStores {
  store: ResilientRateLimitStore
  /** Told of every rate-limited request's outcome (metrics). */
  onDecision?(appId: string, allowed: boolean): void
}

/** What guards may consult besides the request: the listener's live state, or explain's stand-ins. */
export interface GuardServices {
  readonly rateLimits: RateLimitStores
  liveWebSockets(scope: string, ip: string): LiveWebSockets
}

/** The body limit that applies to a request, for bodies of undeclared length. */
export interface BodyLimit {
  max: number
  rule: string
}

/**
 * The request side of an exchange, as guards see it. `identity` is resolved before the chain runs;
 * the path guard (early in every chain) sets `path` and `target`, which later guards match on.
 */
export interface GuardExchange {
  readonly method: string
  /** The raw request target: path and query. */
  readonly url: string
  /** Host header (HTTP/1) or :authority (HTTP/2). */
  readonly host: string | undefined
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  readonly upgrade: boolean
  readonly services: GuardServices
  identity: ClientIdentity
  /** The canonical path, as every rule matches it. */
  path: string
  /** The canonical path and the query as sent. */
  target: string
  /** Set when a route rewrites the path (stripPrefix, addPrefix): the path and target the upstream receives. */
  rewritten: { readonly path: string; readonly target: string } | undefined
  bodyLimit: BodyLimit | undefined
  /** Whether the client's side is HTTPS. */
  readonly secure: boolean
  /** The host and protocol the client used, as the app and an auth service are told. */
  forwarded: PublicView
  /** The claims of a verified bearer token (the jwt guard); unverified claims are never kept. */
  claims: Readonly<Record<string, unknown>> | undefined
  /** Who the client is, when an auth step said so (forward auth, a token's sub), for the access log. */
  user: string | undefined
  /** Identity headers an auth service named, for the app. */
  identityHeaders: Readonly<Record<string, string>> | undefined
}

/**
 * One request guard, compiled once from its policy section. `check` returns a decision, a promise
 * only when it must wait (a store, a password hash); `applies` skips it (untraced) for requests it
 * has no say on; `describe` adds what it found to `explain`'s trace.
 */
export interface Guard {
  readonly name: string
  applies?(exchange: GuardExchange): boolean
  check(exchange: GuardExchange): Decision | Promise<Decision>
  describe?(exchange: GuardExchange): string
}

/**
 * One edit of the answer's headers, the app's or the gateway's own: `drops` removes a header of the
 * app's answer, `edit` adds or rewrites headers once that is done.
 */
export interface ResponseEdit {
  drops?(name: string): boolean
  edit?(headers: OutgoingHttpHeaders, secure: boolean): void
  /** What the edit does to every answer, for `explain`. */
  explainEdit(): string
}

/** One guard's verdict, recorded for `portcullis explain`. */
export interface TraceStep {
  guard: string
  decision: Decision
  detail?: string
}
