import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ErrorCode } from '../errors.js'
import type { ForwardedFacts, PublicView } from '../gateway/headers.js'
import type { HostRouter, TlsFacts } from '../gateway/routing.js'
import type { ClientIdentity } from '../guards/client-ip.js'
import type { DroppedHeader } from '../net/vouched-headers.js'
import type { App, StaticEntry } from '../policy/compile.js'
import type { BodyLimit, GuardExchange, GuardServices } from './guard.js'

/** What the listener knows of a request when it arrives, before any policy is applied. */
export type Arrival = Pick<
  Exchange,
  'id' | 'method' | 'url' | 'host' | 'headers' | 'rawHeaders' | 'peer' | 'upgrade' | 'tls'
>

/** What `decide()` concluded; the listener turns it into a response, `explain` into a report. */
export type Outcome =
  | { kind: 'redirect'; location: string; reason: string }
  /** The app's `healthPath`: answered from the upstream pool's health. */
  | { kind: 'health' }
  | { kind: 'refuse'; code: ErrorCode; rule: string; message?: string }
  /** The gateway answers without an error (a CORS preflight), or relays an auth service's answer. */
  | { kind: 'answer'; status: number; rule: string; body?: string }
  /** A `static` entry's path (after its prefix), for GET and HEAD; the file is looked up when answering. */
  | { kind: 'static'; entry: StaticEntry; file: string }
  | { kind: 'proxy'; facts: ForwardedFacts }

/** Which code and policy rule refused (or, in report-only mode, would have). */
export interface Refusal {
  code: ErrorCode
  rule: string
  /** What was refused, as the client is told: the header, origin, method or limit that decided. */
  message?: string
}

/**
 * One request (or WebSocket upgrade), from its arrival to its access-log line: the policy generation
 * it arrived under, the app, who the client is, the canonical target, what was decided and what the
 * answer gets added, and what proxying measured. Created once at accept time and passed explicitly.
 */
export class Exchange implements GuardExchange {
  readonly id: string
  readonly method: string
  /** The raw request target: path and query. */
  readonly url: string
  /** Host header (HTTP/1) or :authority (HTTP/2). */
  readonly host: string | undefined
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  /** The canonical socket peer (or the PROXY protocol source). */
  readonly peer: string
  readonly upgrade: boolean
  /** Set on TLS connections. */
  readonly tls?: TlsFacts
  app: App | undefined = undefined
  /** The peer until an app's trusted proxies say otherwise. */
  identity: ClientIdentity
  path = ''
  target = ''
  rewritten: { readonly path: string; readonly target: string } | undefined = undefined
  bodyLimit: BodyLimit | undefined = undefined
  /** Whether the client's side is HTTPS: a TLS listener, or a trusted TLS-terminating balancer in front. */
  secure: boolean
  forwarded: PublicView
  claims: Readonly<Record<string, unknown>> | undefined = undefined
  user: string | undefined = undefined
  identityHeaders: Readonly<Record<string, string>> | undefined = undefined
  /** Client headers not forwarded for their name (an underscore, a forged forwarding or identity header). */
  droppedHeaders: DroppedHeader[] | undefined = undefined
  /** What the guards (and the edge) add to the answer, whatever it is: CORS grant, Vary, a sticky cookie. */
  addedHeaders: OutgoingHttpHeaders | undefined = undefined
  /** The headers of another service's answer the gateway relays (an auth service's sign-in redirect). */
  relayedHeaders: OutgoingHttpHeaders | undefined = undefined
  outcome: Outcome | undefined = undefined
  /** Set when the gateway refused, or cut an answer under way. */
  refusal: Refusal | undefined = undefined
  /** In report-only mode: the refusal that was not enforced. */
  wouldBlock: Refusal | undefined = undefined
  /** The upstream origin the request went to. */
  upstream: string | undefined = undefined
  /** From sending the request upstream to its response head, in ms. */
  upstreamMs: number | undefined = undefined
  /** The headers the answer went out with, for `--log-response-headers`. */
  responseHeaders: OutgoingHttpHeaders | undefined = undefined
  /** Body bytes sent to the client, when the gateway streamed them itself. */
  responseBytes: number | undefined = undefined
  /** An `Expect: 100-continue` request whose body the gateway asked for. */
  bodyInvited = false

  constructor(
    arrival: Arrival,
    /** The policy generation's router, read once when the request arrived. */
    readonly router: HostRouter,
    readonly services: GuardServices,
  ) {
    this.id = arrival.id
    this.method = arrival.method
    this.url = arrival.url
    this.host = arrival.host
    this.headers = arrival.headers
    this.rawHeaders = arrival.rawHeaders
    this.peer = arrival.peer
    this.upgrade = arrival.upgrade
    this.tls = arrival.tls
    this.secure = arrival.tls !== undefined
    this.forwarded = { host: arrival.host ?? '', proto: this.secure ? 'https' : 'http' }
    this.identity = { ip: arrival.peer, via: 'peer', chain: [arrival.peer], peerTrusted: false }
  }

  refuse(code: ErrorCode, rule: string, message?: string): void {
    this.refusal = message === undefined ? { code, rule } : { code, rule, message }
  }
}
