import Fastify, { type FastifyInstance, type FastifyReply, LogController } from 'fastify'
import type { Logger } from 'pino'
import { type DashboardSources, dashboardData } from './dashboard.js'
import { dashboardCss, dashboardHtml, dashboardJs } from './dashboard-page.js'
import type { GatewayMetrics } from './metrics.js'

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy'

export interface HealthCheck {
  status: 'pass' | 'warn' | 'fail'
  [detail: string]: unknown
}

export interface HealthReport {
  status: HealthStatus
  uptime_ms: number
  checks: Record<string, HealthCheck>
}

/** healthy when every check passes, degraded when one warns, unhealthy when one fails. */
export function overallStatus(checks: Record<string, HealthCheck>): HealthStatus {
  const statuses = Object.values(checks).map((check) => check.status)
  if (statuses.includes('fail')) return 'unhealthy'
  if (statuses.includes('warn')) return 'degraded'
  return 'healthy'
}

/**
 * The admin listener. `/health` (liveness) answers 200 while the gateway can serve (healthy or degraded),
 * else 503. `/ready` (readiness) adds what traffic needs: Redis when configured, a healthy target per
 * app. `/metrics` is the Prometheus text format; `/dashboard` a read-only page over the same numbers.
 */
export function createAdmin(
  log: Logger,
  report: () => HealthReport,
  readiness: () => HealthReport,
  metrics: GatewayMetrics,
  dashboard: DashboardSources,
): FastifyInstance {
  const admin = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
  }) as unknown as FastifyInstance
  admin.get('/health', async (_request, reply) => {
    const health = report()
    return reply.code(health.status === 'unhealthy' ? 503 : 200).send(health)
  })
  admin.get('/ready', async (_request, reply) => {
    const ready = readiness()
    return reply.code(ready.status === 'unhealthy' ? 503 : 200).send(ready)
  })
  // The dashboard: read-only, same-origin only, nothing loaded from elsewhere.
  const page = (type: string, body: string) => async (_request: unknown, reply: FastifyReply) =>
    reply
      .type(type)
      .header('content-security-policy', "default-src 'self'; frame-ancestors 'none'; base-uri 'none'")
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .send(body)
  admin.get('/dashboard', page('text/html; charset=utf-8', dashboardHtml))
  admin.get('/dashboard.js', page('text/javascript; charset=utf-8', dashboardJs))
  admin.get('/dashboard.css', page('text/css; charset=utf-8', dashboardCss))
  // Browsers ask for it on every page; an empty answer keeps a 404 out of their console.
  admin.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
  admin.get('/dashboard/data', async (_request, reply) =>
    reply.header('cache-control', 'no-store').send(await dashboardData(dashboard)),
  )
  admin.get('/metrics', async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  )
  return admin
}
