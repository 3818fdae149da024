import Fastify, { type FastifyInstance, LogController } from 'fastify'
import type { Logger } from 'pino'
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
 * app. `/metrics` is the Prometheus text format.
 */
export function createAdmin(
  log: Logger,
  report: () => HealthReport,
  readiness: () => HealthReport,
  metrics: GatewayMetrics,
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
  admin.get('/metrics', async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  )
  return admin
}
