import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { createSecureContext } from 'node:tls'
import { AccessGuard } from '../guards/access.js'
import { BasicAuthGuard } from '../guards/basic-auth.js'
import { ClientIpResolver } from '../guards/client-ip.js'
import { CookieHardener } from '../guards/cookies.js'
import { CorsGuard } from '../guards/cors.js'
import { ForwardAuthGuard } from '../guards/forward-auth.js'
import { SecurityHeaders, StrictTransportSecurity } from '../guards/headers.js'
import { JwtGuard } from '../guards/jwt.js'
import { BodyLimitsGuard, HeadLimitsGuard } from '../guards/limits.js'
import { PathGuard } from '../guards/path.js'
import { RateLimitGuard } from '../guards/rate-limit.js'
import { WebSocketGuard } from '../guards/websocket.js'
import { parseCidr } from '../net/ip.js'
import { coveredMethods } from '../net/methods.js'
import { compilePathPattern } from '../net/path-pattern.js'
import { type TlsProfile, tlsProfile } from '../net/tls-profiles.js'
import { VouchedHeaders } from '../net/vouched-headers.js'

import type { Guard, ResponseEdit } from '../pipeline/guard.js'
import { ResponseEdits } from '../pipeline/run.js'
import { type DiscoveredTarget, discoveredTarget } from '../upstreams/discovery.js'
import type { LoadedPolicy, LoadedRoute, PolicyProblem } from './load.js'
import { acmeDirectories, type Policy } from './schema.js'

export interface PemPair {
  cert: string
  key: string
}

/** Everything the request path needs about one app, computed once at load time. */
export interface App {
  readonly id: string
  readonly file: string
  readonly mode: Policy['mode']
  readonly hosts: readonly string[]
  readonly upstream: {
    /** Fixed origins such as `http://127.0.0.1:8080`. */
    readonly targets: readonly string[]
    /** Targets looked up in DNS (`dns+` and `srv+`), each address becoming a target. */
    readonly discovered: readonly DiscoveredTarget[]
    readonly dns: Policy['upstream']['dns']
    readonly timeouts: Policy['upstream']['timeouts']
    readonly balance: Policy['upstream']['balance']
    readonly hashOn: Policy['upstream']['hashOn']
    readonly healthCheck: Policy['upstream']['healthCheck']
    readonly passive: Policy['upstream']['passive']
    readonly retries: number
    readonly maxConnections: number
    readonly maxQueue: number
    readonly maxPerClient: number
  }
  readonly tls: {
    readonly mode: Policy['tls']['mode']
    readonly minVersion: Policy['tls']['minVersion']
    /** The settings of the HTTPS server its connections are handed to. */
    readonly profile: TlsProfile
    /** The certificate files' contents, for `manual`. */
    readonly manual?: PemPair
    readonly acme?: AcmeSettings
  }
  readonly healthPath: string | undefined
  readonly compression: Policy['compression']
  /** Static directories, resolved to absolute paths. */
  readonly static: readonly StaticEntry[]
  /** The Strict-Transport-Security value, or undefined when HSTS is off (max-age 0). */
  readonly hstsHeader: string | undefined
  /** Who the client is: resolved before any guard runs, from the peer and the proxies it trusts. */
  readonly clientIp: ClientIpResolver
  /** The request guards, each built once from its policy section, in the order they run. */
  readonly chain: readonly Guard[]
  /** The edits every answer's headers go through. */
  readonly responseEdits: ResponseEdits
  /** The WebSocket settings the relay applies, and the caps it asks again right before it admits. */
  readonly websocket: WebSocketGuard
  /** Whether any rate limit applies: apps that have one need a store (Redis for several replicas). */
  readonly rateLimited: boolean
  /** The request headers the upstream gets from the gateway's word, in every spelling; the client's are not forwarded. */
  readonly vouched: VouchedHeaders
  /** The app's routes, tried in order on the canonical path; none on a route's own settings. */
  readonly routes: readonly Route[]
  /** Set on a route's settings: which route, as logs, metrics and explain name it, and its path rewrite. */
  readonly route: RouteInfo | undefined
  /** The upstream pool the requests go to: the app's, or a route's own when it sets `upstream`. */
  readonly poolId: string
  /** Whose WebSocket caps count the connection: the app's, or a route's own when it sets `websocket`. */
  readonly websocketScope: string
}

/** One `static` entry, its directory resolved against the policy file. */
export type StaticEntry = Readonly<Omit<Policy['static'][number], 'dir' | 'index'>> & {
  readonly root: string
  readonly index: readonly string[]
}

/** A route: which requests it takes, and the settings they get. */
export interface Route {
  readonly pattern: RegExp
  readonly methods: ReadonlySet<string> | undefined
  /** The app's settings with the route's merged in, compiled like an app. */
  readonly app: App
}

export interface RouteInfo {
  readonly index: number
  /** Its name, or its index in `routes`. */
  readonly label: string
  readonly path: string
  readonly stripPrefix: string | undefined
  readonly addPrefix: string | undefined
  /** The settings the route sets itself; the rest are the app's. */
  readonly sets: readonly string[]
}

export interface AcmeSettings {
  readonly email: string
  readonly directoryUrl: string
  readonly challenge: 'http-01' | 'tls-alpn-01'
  readonly eab?: { readonly kid: string; readonly hmacKey: string }
}

/**
 * The one place where guard order is written. Head limits come first (no parsing yet), then the
 * canonical path every later rule matches, the bearer token (its verified claims feed access rules
 * and rate-limit keys), access rules, the WebSocket guard (upgrades) or CORS (the rest), the declared
 * body size, then rate limits, so that only requests every other guard admits spend budget, then
 * Basic authentication and forward authentication: after the rate limits on purpose, so a limit on
 * the path also bounds password guessing and the auth service is not flooded. Adding a guard is a
 * file and one line here.
 */
function requestChain(
  policy: Policy,
  websocket: WebSocketGuard,
  cors: CorsGuard | undefined,
  rateLimits: RateLimitGuard | undefined,
  access: readonly AccessGuard[],
): Guard[] {
  const chain: (Guard | undefined)[] = [
    new HeadLimitsGuard(policy.limits),
    new PathGuard(),
    policy.jwt ? new JwtGuard(policy.jwt) : undefined,
    ...access,
    websocket,
    cors,
    new BodyLimitsGuard(policy.limits),
    rateLimits,
    policy.basicAuth ? new BasicAuthGuard(policy.basicAuth) : undefined,
    policy.forwardAuth ? new ForwardAuthGuard(policy.forwardAuth) : undefined,
  ]
  return chain.filter((guard) => guard !== undefined)
}

/** The response side, in order: the app's CORS headers dropped, security headers, cookies, HSTS. */
function responseEdits(policy: Policy, cors: CorsGuard | undefined): ResponseEdits {
  const hsts = hstsHeader(policy.hsts)
  const edits: (ResponseEdit | undefined)[] = [
    cors,
    new SecurityHeaders(policy.headers),
    new CookieHardener(policy.cookies),
    hsts ? new StrictTransportSecurity(hsts) : undefined,
  ]
  return new ResponseEdits(edits.filter((edit) => edit !== undefined))
}

export type CompileResult = { ok: true; apps: App[] } | { ok: false; problems: PolicyProblem[] }

export async function compilePolicies(policies: readonly LoadedPolicy[]): Promise<CompileResult> {
  const results = await Promise.all(policies.map(compilePolicy))
  const problems = results.flatMap((result) => (result.ok ? [] : result.problems))
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, apps: results.flatMap((result) => (result.ok ? [result.app] : [])) }
}

async function compilePolicy(
  loaded: LoadedPolicy,
): Promise<{ ok: true; app: App } | { ok: false; problems: PolicyProblem[] }> {
  const { policy, file } = loaded
  const trustedFromFile = await readTrustedProxiesFile(loaded)
  if (!trustedFromFile.ok) return trustedFromFile
  let manual: PemPair | undefined
  if (policy.tls.manual) {
    const result = await readManualCertificate(loaded, policy.tls.manual)
    if (!result.ok) return result
    manual = result.pair
  }
  const clientIp = new ClientIpResolver({
    ...policy.clientIp,
    trustedProxies: [...policy.clientIp.trustedProxies, ...trustedFromFile.networks],
  })
  // Headers an auth service vouches for, on the app or any route: no client may send them, anywhere
  // on the app, since its handlers may trust them whichever path they serve.
  const vouched = new VouchedHeaders({
    clientIpHeader: policy.clientIp.header,
    identityHeaders: [
      ...(policy.forwardAuth?.copyHeaders ?? []),
      ...loaded.routes.flatMap((route) => route.policy.forwardAuth?.copyHeaders ?? []),
    ],
    underscores: policy.requestHeaders.underscores,
  })
  const host = { file, clientIp, manual, vouched }
  const routes = policy.routes.map((route, index): Route => {
    const label = route.name ?? String(index)
    const loadedRoute = loaded.routes[index] as LoadedRoute
    const settings = compileSettings(loadedRoute.policy, host, {
      label,
      index,
      route,
      sets: loadedRoute.sets,
      appRateLimits: policy.rateLimits,
      appAccess: policy.access,
    })
    return Object.freeze({
      pattern: compilePathPattern(route.path, true),
      methods: coveredMethods(route.methods),
      app: settings,
    })
  })
  const app = compileSettings(policy, host, undefined, routes)
  return { ok: true, app }
}

/**
 * The app's settings compiled once: as the app's own, or (with `route`) for one route, from the
 * app's policy with the route's settings merged in, where the app's access and rate-limit rules
 * apply beside the route's.
 */
function compileSettings(
  policy: Policy,
  host: {
    file: string
    clientIp: ClientIpResolver
    manual: PemPair | undefined
    vouched: VouchedHeaders
  },
  route:
    | {
        label: string
        index: number
        route: Policy['routes'][number]
        sets: LoadedRoute['sets']
        appRateLimits: Policy['rateLimits']
        appAccess: Policy['access']
      }
    | undefined,
  routes: readonly Route[] = [],
): App {
  const { file, manual } = host
  const scope = route ? `${policy.app}#${route.label}` : policy.app
  // A route that sets a cap counts its WebSockets apart, against its caps merged over the app's; one
  // that sets only other fields (maxMessageSize, paths) keeps counting against the app's own.
  const ownCaps = route?.route.websocket
  const capsOfItsOwn = ownCaps?.maxConnections !== undefined || ownCaps?.maxConnectionsPerIp !== undefined
  const websocketScope = capsOfItsOwn ? scope : policy.app
  const cors = policy.cors ? new CorsGuard(policy.cors) : undefined
  const websocket = new WebSocketGuard(websocketScope, policy.websocket, policy.cors?.origins)
  const field = route ? `routes[${route.index}].` : ''
  const rateLimitGroups = [
    ...(route ? [{ field: 'rateLimits', rules: route.appRateLimits }] : []),
    { field: `${field}rateLimits`, rules: policy.rateLimits },
  ]
  const rateLimited = rateLimitGroups.some((group) => group.rules.length > 0)
  const app: App = Object.freeze({
    id: policy.app,
    file,
    mode: policy.mode,
    upstream: deepFreeze({
      targets: policy.upstream.targets
        .filter((target) => discoveredTarget(target) === undefined)
        .map((target) => new URL(target).origin),
      discovered: policy.upstream.targets.flatMap((target) => discoveredTarget(target) ?? []),
      dns: policy.upstream.dns,
      timeouts: policy.upstream.timeouts,
      balance: policy.upstream.balance,
      hashOn: policy.upstream.hashOn,
      healthCheck: policy.upstream.healthCheck,
      passive: policy.upstream.passive,
      retries: policy.upstream.retries,
      maxConnections: policy.upstream.maxConnections,
      maxQueue: policy.upstream.maxQueue,
      maxPerClient: policy.upstream.maxPerClient,
    }),
    hosts: Object.freeze([...policy.hosts]),
    tls: deepFreeze({
      mode: policy.tls.mode,
      minVersion: policy.tls.minVersion,
      profile: tlsProfile(policy.tls.profile, policy.tls),
      ...(manual ? { manual } : {}),
      ...(policy.tls.acme ? { acme: acmeSettings(policy.tls.acme) } : {}),
    }),
    healthPath: policy.healthPath,
    compression: deepFreeze({ ...policy.compression }),
    static: deepFreeze(
      policy.static.map(
        ({ dir, ...entry }): StaticEntry => ({
          ...entry,
          root: path.resolve(path.dirname(file), dir),
        }),
      ),
    ),
    hstsHeader: hstsHeader(policy.hsts),
    clientIp: host.clientIp,
    chain: Object.freeze(
      requestChain(
        policy,
        websocket,
        cors,
        rateLimited ? new RateLimitGuard(policy.app, rateLimitGroups) : undefined,
        accessGuards(policy, route),
      ),
    ),
    responseEdits: responseEdits(policy, cors),
    websocket,
    rateLimited,
    vouched: host.vouched,
    routes: Object.freeze([...routes]),
    route: route
      ? deepFreeze({
          index: route.index,
          label: route.label,
          path: route.route.path,
          stripPrefix: route.route.stripPrefix,
          addPrefix: route.route.addPrefix,
          sets: route.sets,
        })
      : undefined,
    poolId: route?.sets.includes('upstream') ? scope : policy.app,
    websocketScope,
  })
  return app
}

/**
 * The app's access rules and, on a route, the route's own beside them; both also judge the path a
 * route rewrites to, so `/v1/admin` stripped to `/admin` meets the app's `/admin/**` rule.
 */
function accessGuards(
  policy: Policy,
  route:
    | { index: number; label: string; route: Policy['routes'][number]; appAccess: Policy['access'] }
    | undefined,
): AccessGuard[] {
  if (!route) return [new AccessGuard(policy.access)]
  const rewrites = route.route.stripPrefix !== undefined || route.route.addPrefix !== undefined
  const name = `routes[${route.index}]${route.label === String(route.index) ? '' : ` ${route.label}`}`
  const rewrittenBy = rewrites ? name : undefined
  return [
    new AccessGuard(route.appAccess, 'access', rewrittenBy),
    ...(policy.access.length > 0
      ? [new AccessGuard(policy.access, `routes[${route.index}].access`, rewrittenBy)]
      : []),
  ]
}

async function readManualCertificate(
  loaded: LoadedPolicy,
  files: { cert: string; key: string },
): Promise<{ ok: true; pair: PemPair } | { ok: false; problems: PolicyProblem[] }> {
  const directory = path.dirname(loaded.file)
  const pair: Partial<PemPair> = {}
  const problems: PolicyProblem[] = []
  for (const field of ['cert', 'key'] as const) {
    try {
      pair[field] = await readFile(path.resolve(directory, files[field]), 'utf8')
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? String(error)
      problems.push(loaded.locate(['tls', 'manual', field], `cannot read ${files[field]} (${reason})`))
    }
  }
  if (problems.length > 0 || pair.cert === undefined || pair.key === undefined) return { ok: false, problems }
  try {
    createSecureContext({ cert: pair.cert, key: pair.key })
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    return {
      ok: false,
      problems: [loaded.locate(['tls', 'manual'], `unusable certificate or key (${reason})`)],
    }
  }
  return { ok: true, pair: { cert: pair.cert, key: pair.key } }
}

/** The networks of `clientIp.trustedProxiesFile`: one per line, `#` starts a comment, blank lines skipped. */
async function readTrustedProxiesFile(
  loaded: LoadedPolicy,
): Promise<{ ok: true; networks: string[] } | { ok: false; problems: PolicyProblem[] }> {
  const name = loaded.policy.clientIp.trustedProxiesFile
  if (name === undefined) return { ok: true, networks: [] }
  const field = ['clientIp', 'trustedProxiesFile']
  let text: string
  try {
    text = await readFile(path.resolve(path.dirname(loaded.file), name), 'utf8')
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error)
    return { ok: false, problems: [loaded.locate(field, `cannot read ${name} (${reason})`)] }
  }
  const networks: string[] = []
  for (const [index, line] of text.split('\n').entries()) {
    const entry = (line.split('#', 1)[0] ?? '').trim()
    if (!entry) continue
    if (!parseCidr(entry))
      return {
        ok: false,
        problems: [loaded.locate(field, `${name}:${index + 1}: "${entry}" is not an address or network`)],
      }
    networks.push(entry)
  }
  return { ok: true, networks }
}

function isNamedDirectory(name: string): name is keyof typeof acmeDirectories {
  return Object.hasOwn(acmeDirectories, name)
}

function acmeSettings(acme: NonNullable<Policy['tls']['acme']>): AcmeSettings {
  const directory = acme.directory
  return {
    email: acme.email,
    directoryUrl: isNamedDirectory(directory) ? acmeDirectories[directory] : directory,
    challenge: acme.challenge,
    ...(acme.eab ? { eab: acme.eab } : {}),
  }
}

function hstsHeader(hsts: Policy['hsts']): string | undefined {
  if (hsts.maxAge === 0) return undefined
  let value = `max-age=${hsts.maxAge}`
  if (hsts.includeSubDomains) value += '; includeSubDomains'
  if (hsts.preload) value += '; preload'
  return value
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner)
    Object.freeze(value)
  }
  return value
}
