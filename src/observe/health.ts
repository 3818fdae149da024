import { createHash, timingSafeEqual } from 'node:crypto'
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

export interface Probes {
  report(): HealthReport
  readiness(): HealthReport
}

/**
 * `/health` (liveness) answers 200 while the gateway can serve (healthy or degraded), else 503.
 * `/ready` (readiness) adds what traffic needs: Redis when configured, a healthy target per app.
 */
function addProbes(server: FastifyInstance, probes: Probes): void {
  server.get('/health', async (_request, reply) => {
    const health = probes.report()
    return reply.code(health.status === 'unhealthy' ? 503 : 200).send(health)
  })
  server.get('/ready', async (_request, reply) => {
    const ready = probes.readiness()
    return reply.code(ready.status === 'unhealthy' ? 503 : 200).send(ready)
  })
}

function quietServer(log: Logger): FastifyInstance {
  return Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
  }) as unknown as FastifyInstance
}

/** The probe listener (`--probe-port`): `/health` and `/ready` alone, to face the pod network. */
export function createProbes(log: Logger, probes: Probes): FastifyInstance {
  const server = quietServer(log)
  addProbes(server, probes)
  return server
}

/**
 * The admin listener: the probes, `/metrics` (the Prometheus text format) and `/dashboard` (a
 * read-only page over the same numbers). With a token (`--admin-token-file`), `/metrics` and the
 * dashboard need it, as a bearer token (Prometheus' `bearer_token_file`) or as the password of a
 * Basic login (a browser's prompt); the probes stay open.
 */
export function createAdmin(
  log: Logger,
  probes: Probes,
  metrics: GatewayMetrics,
  dashboard: DashboardSources,
  token?: string,
): FastifyInstance {
  const admin = quietServer(log)
  addProbes(admin, probes)
  if (token !== undefined) {
    const expected = digest(token)
    admin.addHook('onRequest', async (request, reply) => {
      if (request.url === '/health' || request.url === '/ready') return
      if (timingSafeEqual(digest(presentedToken(request.headers.authorization)), expected)) return
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="Portcullis admin", Basic realm="Portcullis admin"')
        .header('cache-control', 'no-store')
        .send({ error: { code: 'PCL_AUTH_REQUIRED', message: 'The admin token is required' } })
    })
  }
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
    metrics.view().then(async (view) => reply.type(view.contentType).send(await view.metrics())),
  )
  return admin
}

/** Equal-length digests, so comparing them takes the same time whatever was presented. */
function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** The token of `Authorization: Bearer <token>`, or the password of `Basic <user:token>`. */
function presentedToken(authorization: string | undefined): string {
  if (!authorization) return ''
  const [scheme = '', value = ''] = authorization.split(' ', 2)
  if (scheme.toLowerCase() === 'bearer') return value.trim()
  if (scheme.toLowerCase() !== 'basic') return ''
  const decoded = Buffer.from(value.trim(), 'base64').toString('utf8')
  return decoded.slice(decoded.indexOf(':') + 1)
}
