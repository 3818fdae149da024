import type { TLSSocket } from 'node:tls'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { type Logger, symbols } from 'pino'
import type { RecentActivity } from '../observe/dashboard.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { Settings } from '../settings.js'

export interface AccessLogContext {
  readonly metrics: GatewayMetrics
  readonly listener: Pick<Settings, 'logHeaders' | 'logResponseHeaders' | 'logRedact'>
  /** The last minutes of traffic, for the dashboard. */
  readonly activity: RecentActivity
}

/** Writes one access line: the request id and the fields. */
export type AccessLineWriter = (requestId: string, fields: Record<string, unknown>) => void

/**
 * Access lines in pino's format (level, time, the logger's bindings, the fields, msg "request"), made
 * with one `JSON.stringify` of the fields and written to the logger's own destination. pino would
 * serialise field by field, a fifth of what the line costs the gateway (profile, `--cpu-prof`).
 */
export function accessLineWriter(log: Logger): AccessLineWriter {
  const destination = Reflect.get(log, symbols.streamSym) as { write(line: string): unknown }
  const bindings = JSON.stringify(log.bindings()).slice(1, -1)
  const head = bindings ? `,${bindings},"reqId":` : ',"reqId":'
  return (requestId, fields) => {
    if (!log.isLevelEnabled('info')) return
    destination.write(
      `{"level":30,"time":${Date.now()}${head}${JSON.stringify(requestId)},${JSON.stringify(fields).slice(1, -1)},"msg":"request"}\n`,
    )
  }
}

/** One line per request; fields are documented in docs/operations.md and stable. */
export function logAccess(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  durationMs: number,
  context: AccessLogContext,
  writeLine: AccessLineWriter,
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
          path: shortened(path) ?? path,
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
  const dropped = exchange?.droppedHeaders
  if (app && dropped) context.metrics.headersDropped(app.id, dropped)
  const queryStart = request.url.indexOf('?')
  const declaredLength = request.raw.method === 'HEAD' ? undefined : Number(reply.getHeader('content-length'))
  writeLine(String(request.id), {
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
    droppedHeaders: dropped && Object.fromEntries(dropped.map(({ name, reason }) => [name, reason])),
    websocket: exchange?.upgrade || undefined,
    code: exchange?.refusal?.code,
    rule: exchange?.refusal?.rule,
    // What was refused (the header, origin, method or limit), as the client was told.
    reason: shortened(exchange?.refusal?.message),
    wouldBlock: exchange?.wouldBlock,
  })
}

/** A client-chosen value (a path, an Origin in a refusal's message) is cut to keep lines short. */
function shortened(text: string | undefined): string | undefined {
  return text !== undefined && text.length > 200 ? `${text.slice(0, 200)}…` : text
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
