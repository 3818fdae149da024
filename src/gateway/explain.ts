import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import { errorStatus } from '../errors.js'
import { canonicalIp } from '../net/ip.js'
import type { DroppedHeader } from '../net/vouched-headers.js'
import { decide } from '../pipeline/decide.js'
import { Exchange, type Outcome } from '../pipeline/exchange.js'
import type { TraceStep } from '../pipeline/guard.js'
import type { App } from '../policy/compile.js'
import { MemoryStore } from '../stores/rate-limit-store.js'
import { ResilientRateLimitStore } from '../stores/resilient-store.js'
import { upstreamRequestHeaders } from './headers.js'
import { HostRouter } from './routing.js'
import { locateStatic, type StaticAnswer } from './static-lookup.js'

export interface ExplainRequest {
  method: string
  url: string
  /** The address the request comes from, as the gateway's socket would see it. */
  ip: string
  headers: Record<string, string>
  tlsVersion: 'TLSv1.2' | 'TLSv1.3'
}

export interface Explanation {
  route: string
  app?: { id: string; file: string; mode: App['mode'] }
  /** Over TLS: the profile the app's connections are made with. */
  tls?: { profile: string; minVersion: string; ciphers: string; groups: string }
  steps: TraceStep[]
  status: number
  outcome: string
  code?: string
  rule?: string
  /** What the client's answer would carry from the gateway. */
  responseHeaders: OutgoingHttpHeaders
  /** What the gateway does to the headers of the app's answers (removed, added, cookies). */
  responseEdits?: readonly string[]
  /** For a proxied request: what the upstream would receive. */
  upstream?: {
    target: string
    requestTarget: string
    headers: Record<string, string | string[]>
    /** The client's headers it would not receive, for their name. */
    dropped: readonly DroppedHeader[]
  }
}

/**
 * The decision trace of one request: the listeners' own `decide()` over an exchange built from the
 * request, formatted. Rate limits are checked against a fresh in-memory budget and no WebSocket is
 * open: explaining a request never spends anyone's budget.
 */
export async function explain(apps: readonly App[], request: ExplainRequest): Promise<Explanation> {
  const url = new URL(request.url)
  const secure = url.protocol === 'https:'
  const host = url.host
  const headers: IncomingHttpHeaders = { host }
  for (const [name, value] of Object.entries(request.headers)) headers[name.toLowerCase()] = value
  const store = new ResilientRateLimitStore({ remote: [], local: new MemoryStore(), localShare: 1 })
  const router = new HostRouter(apps)
  const exchange = new Exchange(
    {
      id: '(generated per request)',
      method: request.method.toUpperCase(),
      // The target exactly as written: WHATWG URL parsing would resolve dots and drop a fragment first.
      url: rawTargetOf(request.url),
      host,
      headers,
      rawHeaders: Object.entries(headers).flatMap(([name, value]) => [name, String(value)]),
      peer: canonicalIp(request.ip),
      upgrade: headers.upgrade?.toLowerCase() === 'websocket',
      ...(secure
        ? {
            tls: {
              servername: url.hostname,
              protocol: request.tlsVersion,
              // The server the front door hands a connection for this name to.
              profile: router.tlsProfileFor(url.hostname).key,
            },
          }
        : {}),
    },
    router,
    { rateLimits: { store }, liveWebSockets: () => ({ app: 0, ip: 0 }) },
  )
  const steps: TraceStep[] = []
  try {
    const outcome = await decide(exchange, secure ? Number(url.port || 443) : 443, steps)
    // The same lookup that answers: which file (index, fallback, precompressed variant) or none.
    const found =
      outcome.kind === 'static'
        ? await locateStatic(outcome.entry, outcome.file, (exchange.app as App).compression, exchange)
        : undefined
    return describe(exchange, outcome, steps, found)
  } finally {
    store.close()
  }
}

/** An outcome as the report says it: what the client gets and, when proxied, what the upstream gets. */
function describe(
  exchange: Exchange,
  outcome: Outcome,
  steps: TraceStep[],
  found: StaticAnswer | undefined,
): Explanation {
  const { app } = exchange
  if (outcome.kind === 'redirect') {
    return {
      route: `redirect to ${outcome.location}`,
      steps: [],
      status: 308,
      outcome:
        outcome.reason === 'https'
          ? 'redirected to HTTPS'
          : 'redirected to HTTPS (the trusted balancer in front says the client used HTTP)',
      responseHeaders: { location: outcome.location },
    }
  }
  if (!app) {
    const refused = outcome as Outcome & { kind: 'refuse' }
    return {
      route: `no route: ${refused.message ?? refused.code}`,
      steps: [],
      status: errorStatus(refused.code),
      outcome: 'refused',
      code: refused.code,
      rule: refused.rule,
      responseHeaders: {},
    }
  }
  const route = app.route
    ? `app ${app.id}, route ${app.route.label} (${app.route.path}${app.route.sets.length > 0 ? `; sets ${app.route.sets.join(', ')}` : ''})`
    : `app ${app.id}`
  const { profile } = app.tls
  const base = {
    route,
    app: { id: app.id, file: app.file, mode: app.mode },
    ...(exchange.tls && app.tls.mode !== 'off'
      ? {
          tls: {
            profile: profile.name,
            minVersion: profile.minVersion,
            ciphers: profile.ciphers,
            groups: profile.groups,
          },
        }
      : {}),
    steps,
    responseEdits: app.responseEdits.explained,
  }
  const responseHeaders = (fromApp: OutgoingHttpHeaders = {}) =>
    app.responseEdits.apply(fromApp, exchange.addedHeaders, exchange.secure)
  switch (outcome.kind) {
    case 'health':
      return {
        ...base,
        status: 200,
        outcome:
          'answered by the gateway before any guard (healthPath): 200 while a target is healthy, else 503',
        rule: 'healthPath',
        responseHeaders: {},
      }
    case 'answer':
      return {
        ...base,
        status: outcome.status,
        outcome: outcome.rule === 'forwardAuth' ? 'answered by the auth service' : 'answered by the gateway',
        rule: outcome.rule,
        responseHeaders: responseHeaders(exchange.relayedHeaders),
      }
    case 'refuse':
      return {
        ...base,
        status: errorStatus(outcome.code),
        outcome: 'refused',
        code: outcome.code,
        rule: outcome.rule,
        responseHeaders: responseHeaders(),
      }
    case 'static':
      return describeStatic(base, exchange, found as StaticAnswer, responseHeaders)
    case 'proxy': {
      const target = app.upstream.targets[0] ?? app.upstream.discovered[0]?.spec ?? ''
      const headers = upstreamRequestHeaders(exchange.headers, outcome.facts, {
        websocket: exchange.upgrade,
        dropped: exchange,
      })
      return {
        ...base,
        status: 0,
        outcome: `${reportOnly(exchange)}proxied to ${target} as ${exchange.method} ${exchange.target}`,
        ...exchange.wouldBlock,
        responseHeaders: responseHeaders(),
        upstream: {
          target,
          requestTarget: exchange.target,
          headers,
          dropped: exchange.droppedHeaders ?? [],
        },
      }
    }
  }
}

/** A static answer as the report says it: the file and why, its encoding, or the redirect or 404. */
function describeStatic(
  base: Pick<Explanation, 'route' | 'app' | 'steps'>,
  exchange: Exchange,
  found: StaticAnswer,
  responseHeaders: (fromApp?: OutgoingHttpHeaders) => OutgoingHttpHeaders,
): Explanation {
  if (found.kind === 'redirect')
    return {
      ...base,
      status: 308,
      outcome: `redirected by the gateway to ${found.location}, the directory's URL with its slash`,
      rule: 'static',
      responseHeaders: responseHeaders({ location: found.location }),
    }
  if (found.kind === 'missing')
    return {
      ...base,
      status: errorStatus('PCL_NOT_FOUND'),
      outcome: `${reportOnly(exchange)}refused: ${found.reason}`,
      code: 'PCL_NOT_FOUND',
      rule: 'static',
      responseHeaders: responseHeaders(),
    }
  const why = {
    path: '',
    index: ' (the index of the directory)',
    fallback: ' (the fallback: no file for this path)',
  }[found.via]
  const { encoding } = found
  const how = !encoding
    ? ''
    : encoding.precompressed
      ? `, precompressed (${encoding.name})`
      : `, compressed on the fly (${encoding.name})`
  return {
    ...base,
    status: 200,
    outcome: `${reportOnly(exchange)}served by the gateway from ${found.file}${why}${how}`,
    rule: 'static',
    responseHeaders: responseHeaders({ ...found.headers }),
  }
}

const droppedBecause: Record<DroppedHeader['reason'], string> = {
  underscore: 'a name with _ (requestHeaders.underscores: drop)',
  name: 'a name with characters other than letters, digits, - and _ (which PHP and CGI servers fold)',
  forwarding: 'a forwarding header from a peer the app does not trust (clientIp.trustedProxies)',
  identity: 'only the auth service may set it (forwardAuth.copyHeaders)',
}

/** In report-only mode, the refusal that was not enforced, ahead of what happens instead. */
function reportOnly(exchange: Exchange): string {
  const { wouldBlock } = exchange
  return wouldBlock
    ? `passes (report-only), would be refused: ${wouldBlock.code} by ${wouldBlock.rule}; `
    : ''
}

export function formatExplanation(explanation: Explanation): string {
  const lines: string[] = []
  lines.push(
    `route: ${explanation.route}${explanation.app ? ` (${explanation.app.file}, mode ${explanation.app.mode})` : ''}`,
  )
  const { tls } = explanation
  if (tls)
    lines.push(
      `tls: profile ${tls.profile} (${tls.minVersion} and later; groups ${tls.groups}; ciphers ${tls.ciphers})`,
    )
  for (const [index, step] of explanation.steps.entries()) {
    const { decision } = step
    const verdict =
      decision.kind === 'deny'
        ? `DENY  ${decision.code} by ${decision.rule}: ${decision.message}`
        : decision.kind === 'answer'
          ? `ANSWER ${decision.status} (${decision.rule})`
          : 'allow'
    lines.push(
      `${String(index + 1).padStart(2)}. ${step.guard.padEnd(24)} ${verdict}${step.detail ? `  ${step.detail}` : ''}`,
    )
  }
  const status = explanation.status === 0 ? 'the upstream’s status' : String(explanation.status)
  lines.push(
    `result: ${explanation.outcome}; status ${status}${explanation.code && explanation.status !== 0 ? ` ${explanation.code} (rule ${explanation.rule})` : ''}`,
  )
  if (explanation.upstream) {
    lines.push('upstream request headers set by the gateway:')
    for (const name of ['host', 'x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host']) {
      lines.push(`  ${name}: ${String(explanation.upstream.headers[name])}`)
    }
    const { dropped } = explanation.upstream
    if (dropped.length > 0) {
      lines.push('client request headers not forwarded:')
      for (const { name, reason } of dropped) lines.push(`  ${name}: ${droppedBecause[reason]}`)
    }
  }
  const headers = Object.entries(explanation.responseHeaders)
  if (headers.length > 0) {
    lines.push('response headers added by the gateway:')
    for (const [name, value] of headers) lines.push(`  ${name}: ${String(value)}`)
  }
  if (explanation.responseEdits && explanation.responseEdits.length > 0) {
    lines.push("edits of the app's answers:")
    for (const edit of explanation.responseEdits) lines.push(`  ${edit}`)
  }
  return lines.join('\n')
}

/** `https://host:8443/a/../b?q#f` → `/a/../b?q#f`; `https://host` → `/`. */
function rawTargetOf(url: string): string {
  const afterScheme = url.indexOf('//') + 2
  const pathStart = url.slice(afterScheme).search(/[/?#]/)
  if (pathStart < 0) return '/'
  const rest = url.slice(afterScheme + pathStart)
  return rest.startsWith('/') ? rest : `/${rest}`
}
