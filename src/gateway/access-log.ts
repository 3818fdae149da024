import type { TLSSocket } from 'node:tls'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RecentActivity } from '../observe/dashboard.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { Settings } from '../settings.js'

export interface AccessLogContext {
  readonly metrics: GatewayMetrics
  readonly listener: Pick<Settings, 'logHeaders' | 'logResponseHeaders' | 'logRedact'>
  /** The last minutes of traffic, for the dashboard. */
  readonly activity: RecentActivity
}

/** One line per request; fields are documented in the README and stable. */
export function logAccess(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  durationMs: number,
  context: AccessLogContext,
): void {
  const exchange = request.exchange
  const app = exchange?.app
  const refusal = exchange?.refusal ?? exchange?.wouldBlock
  const path = request.url.split('?', 1)[0] ?? '/'
  const clientIp = exchange?.identity.ip
  context.activity.record(
    app?.id,
    refusal
      ? {
          status,
          code: refusal.code,
          rule: refusal.rule,
          enforced: exchange?.refusal !== undefined,
          method: request.method,
          path: path.length > 200 ? `${path.slice(0, 200)}…` : path,
          clientIp: clientIp ?? '',
        }
      : undefined,
  )
  const upstreamMs = exchange?.upstreamMs
  context.metrics.observeRequest(
    app?.id,
    app?.route?.label,
    status,
    durationMs / 1000,
    exchange?.refusal,
    exchange?.wouldBlock,
    upstreamMs === undefined ? undefined : upstreamMs / 1000,
  )
  const queryStart = request.url.indexOf('?')
  const declaredLength = request.raw.method === 'HEAD' ? undefined : Number(reply.getHeader('content-length'))
  request.log.info(
    {
      app: app?.id,
      route: app?.route?.label,
      host: request.host,
      method: request.method,
      path: queryStart >= 0 ? request.url.slice(0, queryStart) : request.url,
      status,
      bytes: exchange?.responseBytes ?? (Number.isFinite(declaredLength) ? declaredLength : undefined),
      durationMs: Math.round(durationMs * 100) / 100,
      clientIp,
      clientIpVia: app ? exchange?.identity.via : undefined,
      user: exchange?.user,
      upstream: exchange?.upstream,
      upstreamMs,
      httpVersion: request.raw.httpVersion,
      tlsVersion: (request.raw.socket as TLSSocket).getProtocol?.() ?? undefined,
      headers: loggedHeaders(request.headers, context.listener.logHeaders, context.listener.logRedact),
      responseHeaders:
        context.listener.logResponseHeaders.length === 0
          ? undefined
          : loggedHeaders(
              // The gateway's own answers carry their headers on the reply; streamed ones on the exchange.
              { ...reply.getHeaders(), ...exchange?.responseHeaders },
              context.listener.logResponseHeaders,
              context.listener.logRedact,
            ),
      websocket: exchange?.upgrade || undefined,
      code: exchange?.refusal?.code,
      rule: exchange?.refusal?.rule,
      wouldBlock: exchange?.wouldBlock,
    },
    'request',
  )
}

/** Cookies being set are secrets whatever the settings say. */
const alwaysRedacted = new Set(['set-cookie'])

/** The headers a `--log-headers` list names, those in `--log-redact` masked; undefined when none. */
function loggedHeaders(
  headers: Record<string, string | string[] | number | undefined>,
  names: readonly string[],
  redacted: readonly string[],
): Record<string, string> | undefined {
  if (names.length === 0) return undefined
  const logged: Record<string, string> = {}
  for (const name of names) {
    const value = headers[name]
    if (value === undefined) continue
    logged[name] = redacted.includes(name) || alwaysRedacted.has(name) ? '[redacted]' : String(value)
  }
  return logged
}
