import { describe, expect, it } from 'vitest'
import { decide } from '../../src/pipeline/decide.js'
import type { Arrival } from '../../src/pipeline/exchange.js'
import type { TraceStep } from '../../src/pipeline/guard.js'
import type { App } from '../../src/policy/compile.js'
import { parsePolicy } from '../../src/policy/load.js'
import { checkAlways } from '../../src/policy/rules.js'
import { compileApp } from '../support/apps.js'
import { exchangesFor } from '../support/exchanges.js'

const app = await compileApp({
  app: 'horizon',
  hosts: ['horizon.test'],
  tls: { mode: 'off' },
  upstream: { targets: ['http://10.0.0.5:8008'], timeouts: { read: '30s', connect: '2s' } },
  cors: { origins: ['https://horizon.example.com'] },
  websocket: { maxConnectionsPerIp: 20, maxConnections: 1000 },
  access: [{ path: '/media/private/**', deny: 'all' }],
  rateLimits: [{ name: 'all', limit: 100, window: '1m' }],
  limits: { maxBodySize: '1mb' },
  routes: [
    {
      name: 'sensors',
      path: '/sensors/ws/**',
      websocket: { maxConnectionsPerIp: 200, paths: [{ path: '/sensors/ws/**', allowedOrigins: ['*'] }] },
      upstream: { targets: ['http://10.0.0.6:9000'] },
    },
    { path: '/api/runs/*/events', methods: ['GET'], upstream: { timeouts: { read: '5m' } } },
    {
      name: 'media',
      path: '/media/**',
      stripPrefix: '/media',
      addPrefix: '/files',
      limits: { maxBodySize: '100mb' },
      access: [{ path: '/media/admin/**', allow: ['10.0.0.0/8'] }],
      rateLimits: [{ name: 'uploads', match: { methods: ['POST'] }, limit: 1, window: '1h' }],
      upstream: { targets: ['http://10.0.0.7:8080'] },
    },
  ],
})

const exchange = exchangesFor(app)

/** The route a request gets (its label, or `app` for the app's own settings) and its outcome. */
async function routed(overrides: Partial<Arrival>) {
  const subject = exchange(overrides)
  const outcome = await decide(subject, 443)
  return { route: subject.app?.route?.label ?? 'app', outcome, exchange: subject }
}

describe('routes', () => {
  it.each([
    ['GET', '/sensors/ws/42', 'sensors'],
    ['GET', '/sensors/ws', 'sensors'],
    ['GET', '/SENSORS/ws/42', 'sensors'],
    ['GET', '/sensors/x/../ws/42', 'sensors'],
    ['GET', '//sensors/./ws/42', 'sensors'],
    ['GET', '/sensorsx/ws', 'app'],
    ['GET', '/api/runs/7/events', '1'],
    ['POST', '/api/runs/7/events', 'app'],
    ['GET', '/api/runs/7/events/x', 'app'],
    ['GET', '/media/a.png', 'media'],
    ['GET', '/', 'app'],
  ])('%s %s → %s', async (method, url, expected) => {
    expect((await routed({ method, url })).route).toBe(expected)
  })

  it('merges a route’s settings over the app’s, field by field', () => {
    const [sensors, events, media] = app.routes.map((route) => route.app) as [App, App, App]
    expect(sensors.upstream.targets).toEqual(['http://10.0.0.6:9000'])
    expect(sensors.upstream.timeouts).toEqual(app.upstream.timeouts)
    expect(events.upstream.targets).toEqual(app.upstream.targets)
    expect(events.upstream.timeouts).toMatchObject({ headers: 300_000, connect: 2_000 })
    expect(sensors.poolId).toBe('horizon#sensors')
    expect(events.poolId).toBe('horizon#1')
    expect(media.route?.sets).toEqual(['upstream', 'limits', 'access', 'rateLimits'])
    // WebSocket caps: the route's own scope with its own numbers; the app's other caps carried over.
    expect(sensors.websocketScope).toBe('horizon#sensors')
    expect(events.websocketScope).toBe('horizon')
    expect(app.websocketScope).toBe('horizon')
  })

  it('rewrites the path the upstream receives with stripPrefix and addPrefix', async () => {
    const cases = [
      ['/media/a.png?v=2', '/files/a.png?v=2'],
      ['/media', '/files/'],
      ['/Media/x/../b', '/files/b'],
    ]
    for (const [url, target] of cases) {
      const { exchange: subject } = await routed({ url })
      expect(subject.target).toBe(target)
    }
  })

  it('applies the app’s access and rate-limit rules beside the route’s', async () => {
    expect((await routed({ url: '/media/private/x' })).outcome).toMatchObject({
      code: 'PCL_ACCESS_DENIED',
      rule: 'access[0] /media/private/**',
    })
    expect((await routed({ url: '/media/admin/x' })).outcome).toMatchObject({
      code: 'PCL_ACCESS_DENIED',
      rule: 'routes[2].access[0] /media/admin/**',
    })
    const post = await routed({ method: 'POST', url: '/media/upload' })
    expect(post.exchange.addedHeaders?.['ratelimit-policy']).toBe('"all";q=100;w=60, "uploads";q=1;w=3600')
    const elsewhere = await routed({ method: 'POST', url: '/other' })
    expect(elsewhere.exchange.addedHeaders?.['ratelimit-policy']).toBe('"all";q=100;w=60')
  })

  it('applies a route’s body limit to its requests only', async () => {
    const large = { host: 'horizon.test', 'content-length': String(50 * 1024 ** 2) }
    expect((await routed({ method: 'POST', url: '/media/up', headers: large })).outcome.kind).toBe('proxy')
    expect((await routed({ method: 'POST', url: '/other', headers: large })).outcome).toMatchObject({
      code: 'PCL_BODY_TOO_LARGE',
      rule: 'limits.maxBodySize',
    })
  })

  it('puts a route behind its own forward authentication, leaving the rest of the app as it was', async () => {
    const guarded = await compileApp({
      app: 'pgstack',
      hosts: ['db.test'],
      routes: [{ path: '/studio/**', forwardAuth: { url: 'http://127.0.0.1:4180/oauth2/auth' } }],
    })
    const studio = guarded.routes[0]?.app as App
    const names = (settings: App) => settings.chain.map((guard) => guard.name)
    expect(names(studio)).toContain('forwardAuth')
    expect(names(guarded)).not.toContain('forwardAuth')
    // Headers only the auth service may set are dropped from clients on every path of the app.
    expect(studio.vouched.of('x-auth-request-user')).toBe('identity')
    expect(guarded.vouched.of('x_auth_request_user')).toBe('identity')
  })

  it('shows the route in the trace', async () => {
    const steps: TraceStep[] = []
    await decide(exchange({ url: '/sensors/ws/1' }), 443, steps)
    expect(steps.find((step) => step.guard === 'route')?.detail).toBe(
      'routes[0] sensors /sensors/ws/** sets upstream, websocket',
    )
  })
})

describe('route validation', () => {
  const policy = (routes: unknown[]) =>
    JSON.stringify({ app: 'a', hosts: ['a.test'], upstream: { targets: ['http://127.0.0.1:1'] }, routes })

  it('locates a route’s mistakes in the route, including those only its merge reveals', () => {
    const result = parsePolicy(
      'a.yaml',
      policy([
        { path: '/x/**', websocket: { maxConnectionsPerIp: 0 } },
        { path: '/z', rateLimits: [{ name: 'n', limit: 1, window: '1m' }] },
        { path: '/w', rateLimits: [{ name: 'n', limit: 1, window: '1m' }], stripPrefix: '/w/' },
      ]),
    )
    const fields = (parsed: typeof result) =>
      parsed.ok ? [] : parsed.problems.map((problem) => problem.field)
    expect(fields(result)).toEqual([
      'routes[0].websocket.maxConnectionsPerIp',
      'routes[2].stripPrefix',
      'routes[2].rateLimits[0].name',
    ])
    // Only the merge shows this one: the route's wildcard meets credentials it did not set itself.
    const merged = parsePolicy(
      'a.yaml',
      JSON.stringify({
        app: 'a',
        hosts: ['a.test'],
        upstream: { targets: ['http://127.0.0.1:1'] },
        cors: { origins: ['https://a.example.com'], credentials: true },
        routes: [
          { path: '/y', cors: { origins: ['*'] } },
          { path: '/z', cors: { onDisallowed: 'omit' } },
        ],
      }),
    )
    expect(fields(merged)).toEqual(['routes[0].cors.origins[0]'])
  })

  it('warns of a route no request can reach, with its file position', () => {
    const result = parsePolicy(
      'a.yaml',
      policy([
        { path: '/api/**' },
        { path: '/api/v1/*' },
        { path: '/api', methods: ['GET'] },
        { path: '/static/**', methods: ['GET'] },
        { path: '/static/app.js' },
        { path: '/static/*/x', methods: ['GET'] },
      ]),
    )
    if (!result.ok) throw new Error(JSON.stringify(result.problems))
    const warnings = checkAlways([result.loaded])
    expect(warnings.map((warning) => [warning.rule, warning.field])).toEqual([
      ['PCL-ROUTE-SHADOWED', 'routes[1].path'],
      ['PCL-ROUTE-SHADOWED', 'routes[2].path'],
      ['PCL-ROUTE-SHADOWED', 'routes[5].path'],
    ])
    expect(warnings[0]).toMatchObject({ file: 'a.yaml', line: 1 })
  })
})
