import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import { errorStatus } from '../errors.js'
import { canonicalIp } from '../net/ip.js'
import type { App } from '../policy/compile.js'
import { MemoryStore } from '../stores/rate-limit-store.js'
import { ResilientRateLimitStore } from '../stores/resilient-store.js'
import { forwardedFacts, forwardedProto, upstreamRequestHeaders } from './headers.js'
import { answerHeaders, applyMode, runGuards, type TraceStep, withAsyncGuards } from './pipeline.js'
import { decideRoute, HostRouter, redirectBehindTerminator } from './routing.js'
import { staticFor } from './static-files.js'

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
  steps: TraceStep[]
  status: number
  outcome: string
  code?: string
  rule?: string
  /** What the client's answer would carry from the gateway. */
  responseHeaders: OutgoingHttpHeaders
  /** For a proxied request: what the upstream would receive. */
  upstream?: { target: string; requestTarget: string; headers: Record<string, string | string[]> }
}

/**
 * The decision trace of one request, computed by the server's own functions (decideRoute, runGuards,
 * withAsyncGuards, answerHeaders), not a copy of them. Rate limits are checked against a fresh
 * in-memory budget: explaining a request never spends anyone's.
 */
export async function explain(apps: readonly App[], request: ExplainRequest): Promise<Explanation> {
  const url = new URL(request.url)
  const secure = url.protocol === 'https:'
  const host = url.host
  // The target exactly as written: WHATWG URL parsing would resolve dots and drop a fragment first.
  const rawTarget = rawTargetOf(request.url)
  const route = decideRoute(
    new HostRouter(apps),
    {
      host,
      url: rawTarget,
      ...(secure ? { tls: { servername: url.hostname, protocol: request.tlsVersion } } : {}),
    },
    secure ? Number(url.port || 443) : 443,
  )
  if (route.kind === 'redirect') {
    return {
      route: `redirect to ${route.location}`,
      steps: [],
      status: 308,
      outcome: 'redirected to HTTPS',
      responseHeaders: { location: route.location },
    }
  }
  if (route.kind === 'reject') {
    return {
      route: `no route: ${route.message}`,
      steps: [],
      status: errorStatus(route.code),
      outcome: 'refused',
      code: route.code,
      rule: route.rule,
      responseHeaders: {},
    }
  }
  const app = route.app
  const headers: IncomingHttpHeaders = { host }
  for (const [name, value] of Object.entries(request.headers)) headers[name.toLowerCase()] = value
  const peer = canonicalIp(request.ip)
  // As the listener does: a trusted TLS-terminating balancer's forwarded protocol is the client's.
  const viaProto =
    !secure && app.tls.mode === 'off' && app.guards.clientIp.isTrusted(peer)
      ? forwardedProto(headers)
      : undefined
  const clientSecure = secure || viaProto === 'https'
  if (app.healthPath !== undefined && rawTarget === app.healthPath) {
    return {
      route: `app ${app.id}`,
      app: { id: app.id, file: app.file, mode: app.mode },
      steps: [],
      status: 200,
      outcome:
        'answered by the gateway before any guard (healthPath): 200 while a target is healthy, else 503',
      rule: 'healthPath',
      responseHeaders: {},
    }
  }
  const terminatorRedirect = redirectBehindTerminator(app, {
    host,
    url: rawTarget,
    forwardedProto: viaProto,
  })
  if (terminatorRedirect) {
    return {
      route: `redirect to ${terminatorRedirect}`,
      steps: [],
      status: 308,
      outcome: 'redirected to HTTPS (the trusted balancer in front says the client used HTTP)',
      responseHeaders: { location: terminatorRedirect },
    }
  }
  const input = {
    method: request.method.toUpperCase(),
    url: rawTarget,
    headers,
    rawHeaders: Object.entries(headers).flatMap(([name, value]) => [name, String(value)]),
    peer,
    upgrade: headers.upgrade?.toLowerCase() === 'websocket',
    liveWebSockets: () => ({ app: 0, ip: 0 }),
  }
  const steps: TraceStep[] = []
  const stores = { store: new ResilientRateLimitStore({ local: new MemoryStore(), replicas: 1 }) }
  const verdict = await withAsyncGuards(app, runGuards(app, input, steps), input, stores, steps)
  stores.store.close()
  const base = { route: `app ${app.id}`, app: { id: app.id, file: app.file, mode: app.mode }, steps }
  const { decision, wouldBlock } = applyMode(app, verdict.decision)
  if (decision.kind === 'answer') {
    return {
      ...base,
      status: decision.status,
      outcome: 'answered by the gateway',
      rule: decision.rule,
      responseHeaders: answerHeaders(app, {}, decision.headers, clientSecure),
    }
  }
  if (decision.kind === 'deny') {
    return {
      ...base,
      status: errorStatus(decision.code),
      outcome: 'refused',
      code: decision.code,
      rule: decision.rule,
      responseHeaders: answerHeaders(app, {}, decision.headers, clientSecure),
    }
  }
  const target = app.upstream.targets[0] ?? ''
  const requestTarget = verdict.target ?? input.url
  const files = input.upgrade ? undefined : staticFor(app, requestTarget)
  if (files && !wouldBlock) {
    return {
      ...base,
      status: 200,
      outcome: `served by the gateway from ${files.root}${files.file} (404 if there is no such file)`,
      rule: 'static',
      responseHeaders: answerHeaders(
        app,
        { 'cache-control': files.cacheControl },
        decision.responseHeaders,
        clientSecure,
      ),
    }
  }
  return {
    ...base,
    status: 0,
    outcome: wouldBlock
      ? `passes (report-only), would be refused: ${wouldBlock.code} by ${wouldBlock.rule}`
      : `proxied to ${target} as ${input.method} ${requestTarget}`,
    ...wouldBlock,
    responseHeaders: answerHeaders(app, {}, decision.responseHeaders, clientSecure),
    upstream: {
      target,
      requestTarget,
      headers: upstreamRequestHeaders(
        headers,
        forwardedFacts({
          identity: verdict.identity,
          headers,
          host,
          secure,
          requestId: '(generated per request)',
        }),
        { websocket: input.upgrade },
      ),
    },
  }
}

export function formatExplanation(explanation: Explanation): string {
  const lines: string[] = []
  lines.push(
    `route: ${explanation.route}${explanation.app ? ` (${explanation.app.file}, mode ${explanation.app.mode})` : ''}`,
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
  }
  const headers = Object.entries(explanation.responseHeaders)
  if (headers.length > 0) {
    lines.push('response headers added by the gateway:')
    for (const [name, value] of headers) lines.push(`  ${name}: ${String(value)}`)
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
