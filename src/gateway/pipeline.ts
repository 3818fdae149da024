import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ErrorCode } from '../errors.js'
import type { ClientIdentity } from '../guards/client-ip.js'
import { isCorsHeader } from '../guards/cors.js'
import { allow, type Decision, deny } from '../guards/decision.js'
import type { RateLimitStores } from '../guards/rate-limit.js'
import type { LiveWebSockets } from '../guards/websocket.js'
import { canonicalTarget } from '../net/canonical-path.js'
import type { App } from '../policy/compile.js'

export interface GuardInput {
  method: string
  /** The raw request target: path and query. */
  url: string
  headers: IncomingHttpHeaders
  rawHeaders: readonly string[]
  /** The canonical socket peer (or the PROXY protocol source). */
  peer: string
  upgrade: boolean
  /** Open WebSockets of the app and of a client IP, for the connection caps. */
  liveWebSockets(ip: string): LiveWebSockets
}

export interface Verdict {
  decision: Decision
  identity: ClientIdentity
  /** What the upstream receives: the canonical path and the query as sent. Set once the path is valid. */
  target?: string
  /** The body limit that applies, for bodies of undeclared length. */
  bodyLimit?: { max: number; rule: string }
  /** The canonical path as rules match it; set with `target`. */
  matchPath?: string
}

/**
 * The one place where guard order is written: client IP, head limits, canonical path, access rules,
 * WebSocket upgrades, CORS, body limit, then (in `withRateLimits`) rate limits, last so that only
 * requests every other guard admits spend budget. Each guard reads what earlier steps computed (the client
 * identity, the canonical path) and none calls another. The first guard that does not allow decides;
 * headers that allowing guards add (CORS grants, Vary) are kept for the answer, whatever it is.
 */
/** One guard's verdict, recorded for `portcullis explain`. */
export interface TraceStep {
  guard: string
  decision: Decision
  detail?: string
}

export function runGuards(app: App, input: GuardInput, trace?: TraceStep[]): Verdict {
  const { guards } = app
  const note = (guard: string, decision: Decision, detail?: string): Decision => {
    trace?.push(detail === undefined ? { guard, decision } : { guard, decision, detail })
    return decision
  }
  const identity = guards.clientIp.resolve(input.peer, input.headers)
  note(
    'clientIp',
    allow,
    `${identity.ip} (from ${identity.via}; forwarded chain: ${identity.chain.join(', ')})`,
  )
  const verdict = (decision: Decision, rest: Partial<Verdict> = {}): Verdict => ({
    decision,
    identity,
    ...rest,
  })

  const head = note('limits: url and headers', guards.limits.checkHead(input))
  if (head.kind !== 'allow') return verdict(head)

  const canonical = canonicalTarget(input.url)
  if (!canonical.ok) {
    return verdict(note('path', deny('PCL_BAD_REQUEST', 'path', `Invalid path: ${canonical.reason}`)))
  }
  note('path', allow, `canonical ${canonical.path}`)
  const { target, path: matchPath } = canonical
  const request = { method: input.method, headers: input.headers, matchPath, clientIp: identity.ip }

  const access = note('access', guards.access.check(request))
  if (access.kind !== 'allow') return verdict(access, { target })

  // Browsers apply no CORS to WebSocket handshakes: the WebSocket guard judges their Origin, per path.
  if (input.upgrade) {
    const websocket = note('websocket', guards.websocket.check(request, input.liveWebSockets(identity.ip)))
    if (websocket.kind !== 'allow') return verdict(websocket, { target })
  }
  const cors = input.upgrade || !guards.cors ? allow : note('cors', guards.cors.check(request))
  if (cors.kind !== 'allow') return verdict(cors, { target })
  const added = cors.responseHeaders

  const body = note('limits: body', guards.limits.checkDeclaredBody(matchPath, input.headers))
  if (body.kind !== 'allow') return verdict(withHeaders(body, added), { target })
  return verdict(added ? { kind: 'allow', responseHeaders: added } : allow, {
    target,
    matchPath,
    bodyLimit: guards.limits.bodyLimit(matchPath),
  })
}

/**
 * The guards that wait: rate limits, then Basic authentication. Authentication comes after the rate
 * limits on purpose: every login attempt spends budget, so a limit on the path also bounds guessing.
 */
export function withAsyncGuards(
  app: App,
  verdict: Verdict,
  input: GuardInput,
  stores: RateLimitStores,
  trace?: TraceStep[],
): Verdict | Promise<Verdict> {
  const { decision } = verdict
  // Most requests of most apps have nothing to wait for: no promise for them.
  if (decision.kind !== 'allow' || (app.guards.rateLimits.isEmpty && !app.guards.basicAuth)) return verdict
  return waitForGuards(app, verdict, decision, input, stores, trace)
}

type Allowed = Extract<Decision, { kind: 'allow' }>

/** `admitted`: the decision of the guards that allowed the request, with what they add to its answer (CORS, Vary). */
async function waitForGuards(
  app: App,
  verdict: Verdict,
  admitted: Allowed,
  input: GuardInput,
  stores: RateLimitStores,
  trace?: TraceStep[],
): Promise<Verdict> {
  const { rateLimits, basicAuth } = app.guards
  const matchPath = verdict.matchPath ?? '/'
  let allowed = admitted
  if (!rateLimits.isEmpty) {
    const limited = await rateLimits.check(
      { method: input.method, matchPath, clientIp: verdict.identity.ip, headers: input.headers },
      stores,
    )
    trace?.push({ guard: 'rateLimits', decision: limited })
    if (limited.kind !== 'allow')
      return { ...verdict, decision: withHeaders(limited, admitted.responseHeaders) }
    // The rate-limit decision itself when no earlier guard added headers: no copy on the common path.
    allowed = admitted.responseHeaders
      ? { kind: 'allow', responseHeaders: { ...admitted.responseHeaders, ...limited.responseHeaders } }
      : limited
  }
  if (basicAuth?.applies(matchPath)) {
    const decision = await basicAuth.authenticate(input.headers.authorization)
    trace?.push({ guard: 'basicAuth', decision })
    if (decision.kind !== 'allow')
      return { ...verdict, decision: withHeaders(decision, allowed.responseHeaders) }
  }
  return allowed === admitted ? verdict : { ...verdict, decision: allowed }
}

/**
 * The app's mode applied to a decision. In report-only mode a policy refusal passes and is reported
 * as `wouldBlock`, keeping its informational headers (RateLimit, Vary) but not Retry-After. Malformed
 * requests (bad paths) are refused in either mode: there is no safe way to forward them.
 */
export function applyMode(
  app: App,
  decision: Decision,
): { decision: Decision; wouldBlock?: { code: ErrorCode; rule: string } } {
  if (decision.kind !== 'deny' || app.mode !== 'report-only' || decision.code === 'PCL_BAD_REQUEST')
    return { decision }
  const wouldBlock = { code: decision.code, rule: decision.rule }
  if (!decision.headers) return { decision: allow, wouldBlock }
  const { 'retry-after': _retryAfter, ...informational } = decision.headers
  return { decision: { kind: 'allow', responseHeaders: informational }, wouldBlock }
}

/** A refusal still carries the CORS headers of an allowed origin, so the page can read the error. */
function withHeaders(decision: Decision, added: OutgoingHttpHeaders | undefined): Decision {
  if (!added || decision.kind !== 'deny') return decision
  return { ...decision, headers: { ...added, ...decision.headers } }
}

/**
 * The headers of an answer to the client, from the app's (empty for the gateway's own answers): the
 * app's CORS headers are replaced when the policy manages CORS, security headers are added, cookies
 * hardened, then what the guards and the edge add (CORS grant, Vary, HSTS) goes on top.
 */
export function answerHeaders(
  app: App,
  fromApp: OutgoingHttpHeaders,
  added: OutgoingHttpHeaders | undefined,
  secure: boolean,
): OutgoingHttpHeaders {
  const { headers: security, cors, cookies } = app.guards
  // One pass into a fresh object: deleting keys would turn it into a slow dictionary on the hot path.
  const headers: OutgoingHttpHeaders = {}
  for (const name in fromApp) {
    if (security.removes(name) || (cors && isCorsHeader(name))) continue
    headers[name] = fromApp[name]
  }
  security.addTo(headers)
  const setCookie = headers['set-cookie']
  if (setCookie !== undefined) headers['set-cookie'] = cookies.harden(setCookie as string | string[], secure)
  if (added) {
    for (const name in added) {
      const existing = headers[name]
      const value = added[name]
      if (existing !== undefined && name === 'vary') headers[name] = `${existing}, ${value}`
      else if (existing !== undefined && name === 'set-cookie')
        headers[name] = [existing, value].flat() as string[]
      else headers[name] = value
    }
  }
  if (secure && app.hstsHeader) headers['strict-transport-security'] = app.hstsHeader
  return headers
}
