import type { ErrorCode } from '../errors.js'
import { forwardedFacts, forwardedProto, publicView } from '../gateway/headers.js'
import { decideRoute, redirectBehindTerminator } from '../gateway/routing.js'
import { staticFor } from '../gateway/static-files.js'
import { canonicalTarget } from '../net/canonical-path.js'
import { rewrittenPath } from '../net/path-pattern.js'
import { isHostAndPort, normalisedHost } from '../net/vouched-headers.js'
import type { App } from '../policy/compile.js'
import type { Exchange, Outcome } from './exchange.js'
import type { Decision, TraceStep } from './guard.js'
import { applyMode, runGuards } from './run.js'

/**
 * What happens to a request: redirected, answered from health, refused, answered by a guard, served
 * from a static directory, or proxied with the forwarding facts the upstream receives. Both listeners
 * and `explain` call this; it reads the exchange's arrival and generation, records on the exchange
 * what the answer needs (app, identity, canonical target, added headers, refusal), and touches
 * nothing else: no socket, no pool. A promise only when a guard waits.
 */
export function decide(
  exchange: Exchange,
  httpsPort: number,
  trace?: TraceStep[],
): Outcome | Promise<Outcome> {
  const { headers } = exchange
  // A Host that is more than a name and a port (`app.test:1@evil.test`, a second Host) would route by
  // one reading and reach the app, an auth service or a redirect builder with another.
  if (exchange.host !== undefined && !isHostAndPort(exchange.host))
    return refuse(
      exchange,
      'PCL_BAD_REQUEST',
      'request',
      'The Host header must be a host name and an optional port',
    )
  if (hostHeaders(exchange.rawHeaders) > 1)
    return refuse(exchange, 'PCL_BAD_REQUEST', 'request', 'A request has one Host header')
  // RFC 9113 §8.3.1: a Host that names another server (or port) than :authority makes the request
  // malformed; the app, the same-origin check and an auth service would each read one of them.
  const authority = headers[':authority']
  if (
    authority &&
    headers.host &&
    normalisedHost(String(authority), 'https') !== normalisedHost(headers.host, 'https')
  )
    return refuse(
      exchange,
      'PCL_BAD_REQUEST',
      'request',
      'The Host header and :authority name different hosts',
    )
  const route = decideRoute(exchange.router, exchange, httpsPort)
  if (route.kind === 'redirect') return { kind: 'redirect', location: route.location, reason: 'https' }
  if (route.kind === 'reject') {
    exchange.app = route.app
    return refuse(exchange, route.code, route.rule, route.message)
  }
  const app = route.app
  exchange.app = app
  if (app.healthPath !== undefined && exchange.url === app.healthPath) return { kind: 'health' }
  if (!exchange.tls && app.tls.mode === 'off') {
    // Behind a TLS-terminating balancer that the app trusts, its forwarded protocol is the client's
    // (the health path above answers the balancer's own probes whatever they say).
    const viaProto = app.clientIp.isTrusted(exchange.peer) ? forwardedProto(headers) : undefined
    const location = redirectBehindTerminator(app, {
      host: exchange.host,
      url: exchange.url,
      forwardedProto: viaProto,
    })
    if (location) return { kind: 'redirect', location, reason: 'terminator' }
    if (viaProto === 'https') exchange.secure = true
  }
  const identity = app.clientIp.resolve(exchange.peer, headers)
  exchange.identity = identity
  exchange.forwarded = publicView({
    identity,
    headers,
    host: exchange.host ?? '',
    secure: exchange.secure,
    routesHere: (host) => exchange.router.find(host) === app,
  })
  trace?.push({
    guard: 'clientIp',
    decision: { kind: 'allow' },
    detail: `${identity.ip} (from ${identity.via}; forwarded chain: ${identity.chain.join(', ')})`,
  })
  const settings = routeFor(app, exchange)
  exchange.app = settings
  if (trace && app.routes.length > 0) {
    const { route } = settings
    trace.push({
      guard: 'route',
      decision: { kind: 'allow' },
      detail: route
        ? `routes[${route.index}]${route.label === String(route.index) ? '' : ` ${route.label}`} ${route.path}${route.sets.length > 0 ? ` sets ${route.sets.join(', ')}` : ''}`
        : "no route matches: the app's settings",
    })
  }
  const decision = runGuards(settings.chain, exchange, trace)
  return decision instanceof Promise
    ? decision.then((settled) => conclude(settings, exchange, settled))
    : conclude(settings, exchange, decision)
}

/**
 * The settings a request gets: the first of the app's routes whose path (and methods) it matches,
 * or the app's own. Routes match the same canonical path every guard judges, so no spelling of a
 * path can pick a route the guards would not; a path with no canonical form gets the app's settings,
 * whose path guard refuses it.
 */
function routeFor(app: App, exchange: Exchange): App {
  if (app.routes.length === 0) return app
  const canonical = canonicalTarget(exchange.url)
  if (!canonical.ok) return app
  // Computed once per request: the path guard takes it from here.
  exchange.path = canonical.path
  exchange.target = canonical.target
  for (const route of app.routes) {
    if (route.methods && !route.methods.has(exchange.method)) continue
    if (!route.pattern.test(canonical.path)) continue
    const info = route.app.route
    if (info?.stripPrefix || info?.addPrefix) {
      // Judged by the access rules and told to an auth service before it is sent.
      const path = rewrittenPath(canonical.path, info)
      exchange.rewritten = { path, target: path + canonical.target.slice(canonical.path.length) }
    }
    return route.app
  }
  return app
}

/** The chain's decision under the app's mode, and where an admitted request goes. */
function conclude(app: App, exchange: Exchange, chainDecision: Decision): Outcome {
  const { decision, wouldBlock } = applyMode(app.mode, chainDecision)
  exchange.wouldBlock = wouldBlock
  if (decision.kind === 'deny') {
    exchange.addedHeaders = decision.headers
    return refuse(exchange, decision.code, decision.rule, decision.message)
  }
  if (decision.kind === 'answer') {
    exchange.addedHeaders = decision.headers
    exchange.relayedHeaders = decision.relayed
    const { status, rule, body } = decision
    return body === undefined ? { kind: 'answer', status, rule } : { kind: 'answer', status, rule, body }
  }
  exchange.addedHeaders = decision.responseHeaders
  const files = exchange.upgrade ? undefined : staticFor(app, exchange.target)
  if (files) {
    if (exchange.method === 'GET' || exchange.method === 'HEAD') return { kind: 'static', ...files }
    // As nginx and Caddy answer for files: a POST to a client-side route never gets the app's HTML.
    exchange.addedHeaders = { ...exchange.addedHeaders, allow: 'GET, HEAD' }
    return refuse(
      exchange,
      'PCL_METHOD_NOT_ALLOWED',
      'static',
      `${files.entry.path} is static files: only GET and HEAD are answered`,
    )
  }
  if (exchange.rewritten) exchange.target = exchange.rewritten.target
  return {
    kind: 'proxy',
    facts: forwardedFacts({
      identity: exchange.identity,
      host: exchange.host ?? '',
      secure: exchange.tls !== undefined,
      forwarded: exchange.forwarded,
      requestId: exchange.id,
      vouched: app.vouched,
      identityHeaders: exchange.identityHeaders,
    }),
  }
}

/** How many Host headers the raw head has (RFC 9112 §3.2: more than one is a 400). */
function hostHeaders(rawHeaders: readonly string[]): number {
  let count = 0
  for (let index = 0; index < rawHeaders.length; index += 2)
    if ((rawHeaders[index] as string).length === 4 && (rawHeaders[index] as string).toLowerCase() === 'host')
      count++
  return count
}

function refuse(exchange: Exchange, code: ErrorCode, rule: string, message?: string): Outcome {
  exchange.refuse(code, rule, message)
  return message === undefined ? { kind: 'refuse', code, rule } : { kind: 'refuse', code, rule, message }
}
