import {
  AggregatorRegistry,
  Counter,
  collectDefaultMetrics,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client'

/** What the metrics read from the running gateway when scraped. */
export interface MetricSources {
  inFlight(): number
  /** Open WebSockets per app. */
  websockets(): ReadonlyMap<string, number>
  /** Each remote rate-limit store (`redis`, and `primary` in a worker) with its worst breaker. */
  stores(): readonly { name: string; state: 'closed' | 'open' | 'half-open' }[]
  /** Certificate expiry per app, in epoch seconds. */
  certificateExpiry(): ReadonlyMap<string, number>
  /** Per app, each target and whether it is in rotation. */
  upstreams(): ReadonlyMap<string, readonly { origin: string; healthy: boolean; active: number }[]>
  /**
   * With workers: every worker's metrics (and the primary's), which /metrics and the dashboard add up
   * (counters and most gauges summed, health and expiry gauges by their minimum).
   */
  everyWorker?(): Promise<MetricObjectWithValues<MetricValue<string>>[][]>
}

const breakerValue = { closed: 0, 'half-open': 1, open: 2 } as const

/**
 * Prometheus metrics on the admin listener. Labels are bounded: app ids, status classes, error codes
 * and rule ids all come from the policies, never from request data such as paths.
 */
export class GatewayMetrics {
  readonly registry = new Registry()
  private readonly requests: Counter<'app' | 'route' | 'status_class'>
  private readonly duration: Histogram<'app' | 'route' | 'status_class'>
  /**
   * The request counter's and histogram's children by app, route and status class, bound once:
   * prom-client otherwise sorts and joins the labels of every call, twice per request.
   */
  private readonly perRequest = new Map<
    string,
    { requests: { inc(): void }; duration: { observe(value: number): void } }
  >()
  private readonly refusals: Counter<'app' | 'code' | 'rule' | 'enforced'>
  private readonly reloads: Counter<'result'>
  private readonly acmeOrders: Counter<'app' | 'result'>
  private readonly upstreamDuration: Histogram<'app'>
  private readonly storeErrors: Counter<'store'>
  private readonly dnsFailures: Counter<'app'>
  private readonly rateLimitDecisions: Counter<'app' | 'result'>
  private readonly droppedHeaders: Counter<'app' | 'reason'>
  private readonly rapidResets: Counter

  constructor(private readonly sources: MetricSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_' })
    this.requests = new Counter({
      name: 'portcullis_requests_total',
      help: 'Requests answered, by app, route (its name or index; no label for the app’s own settings) and status class.',
      labelNames: ['app', 'route', 'status_class'],
      registers,
    })
    this.duration = new Histogram({
      name: 'portcullis_request_duration_seconds',
      help: 'Time to the end of the answer (to the upgrade for WebSockets).',
      labelNames: ['app', 'route', 'status_class'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.upstreamDuration = new Histogram({
      name: 'portcullis_upstream_duration_seconds',
      help: 'Time from sending a request to its upstream until the response head arrived.',
      labelNames: ['app'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.dnsFailures = new Counter({
      name: 'portcullis_upstream_dns_failures_total',
      help: 'Lookups of dns+ and srv+ upstream targets that failed (the last good targets kept serving).',
      labelNames: ['app'],
      registers,
    })
    this.storeErrors = new Counter({
      name: 'portcullis_rate_limit_store_errors_total',
      help: 'Rate-limit calls a shared store (redis, or a worker’s primary) failed or did not answer in time (each fell back as its rule onStoreError says).',
      labelNames: ['store'],
      registers,
    })
    this.rateLimitDecisions = new Counter({
      name: 'portcullis_rate_limit_decisions_total',
      help: 'Requests a rate limit applied to, by app and result (allowed or limited).',
      labelNames: ['app', 'result'],
      registers,
    })
    this.droppedHeaders = new Counter({
      name: 'portcullis_request_headers_dropped_total',
      help: 'Client request headers not forwarded for their name, by app and reason: underscore (a name with _), name (other punctuation), forwarding (a forwarding or client-IP header from a peer the app does not trust), identity (a header only the auth service may set).',
      labelNames: ['app', 'reason'],
      registers,
    })
    this.rapidResets = new Counter({
      name: 'portcullis_http2_rapid_reset_sessions_total',
      help: 'HTTP/2 sessions closed (GOAWAY ENHANCE_YOUR_CALM) for resetting more streams before their answer than their budget.',
      registers,
    })
    this.refusals = new Counter({
      name: 'portcullis_refusals_total',
      help: 'Requests a guard refused, by code and policy rule; enforced="false" for report-only (would block).',
      labelNames: ['app', 'code', 'rule', 'enforced'],
      registers,
    })
    this.reloads = new Counter({
      name: 'portcullis_policy_reloads_total',
      help: 'Policy reloads, by result.',
      labelNames: ['result'],
      registers,
    })
    this.acmeOrders = new Counter({
      name: 'portcullis_acme_orders_total',
      help: 'ACME certificate orders this replica made, by app and result.',
      labelNames: ['app', 'result'],
      registers,
    })
    new Gauge({
      name: 'portcullis_upstream_healthy',
      help: 'Whether each upstream target is in rotation (1) or out after failed health checks or errors (0); route is set for a route’s own pool.',
      labelNames: ['app', 'route', 'target'],
      registers,
      aggregator: 'min',
      collect() {
        this.reset()
        for (const [pool, targets] of sources.upstreams())
          for (const target of targets)
            this.set({ ...scopeLabels(pool), target: target.origin }, target.healthy ? 1 : 0)
      },
    })
    new Gauge({
      name: 'portcullis_upstream_active_requests',
      help: 'Requests in progress on each upstream target (what least-connections balances on).',
      labelNames: ['app', 'route', 'target'],
      registers,
      collect() {
        this.reset()
        for (const [pool, targets] of sources.upstreams())
          for (const target of targets)
            this.set({ ...scopeLabels(pool), target: target.origin }, target.active)
      },
    })
    new Gauge({
      name: 'portcullis_requests_in_flight',
      help: 'HTTP requests being answered now.',
      registers,
      collect() {
        this.set(sources.inFlight())
      },
    })
    new Gauge({
      name: 'portcullis_websockets_open',
      help: 'Open WebSockets, by app, and by route for a route with WebSocket caps of its own.',
      labelNames: ['app', 'route'],
      registers,
      collect() {
        this.reset()
        for (const [scope, open] of sources.websockets()) this.set(scopeLabels(scope), open)
      },
    })
    new Gauge({
      name: 'portcullis_rate_limit_store_breaker',
      help: 'The circuit breaker of each shared rate-limit store (redis; primary in a worker), the worst of its parts (Cluster masters): 0 closed (store used), 1 half-open, 2 open (onStoreError applies).',
      labelNames: ['store'],
      registers,
      aggregator: 'max',
      collect() {
        this.reset()
        for (const { name, state } of sources.stores()) this.set({ store: name }, breakerValue[state])
      },
    })
    new Gauge({
      name: 'portcullis_certificate_expiry_timestamp_seconds',
      help: 'When the certificate each app serves expires.',
      labelNames: ['app'],
      registers,
      aggregator: 'min',
      collect() {
        this.reset()
        for (const [app, expiry] of sources.certificateExpiry()) this.set({ app }, expiry)
      },
    })
  }

  observeRequest(
    app: string | undefined,
    route: string | undefined,
    status: number,
    seconds: number,
    refusal: { code: string; rule: string } | undefined,
    wouldBlock: { code: string; rule: string } | undefined,
    upstreamSeconds?: number,
  ): void {
    const appLabel = app ?? '(none)'
    const statusClass = Math.floor(status / 100)
    const key = `${appLabel}\u0000${route ?? ''}\u0000${statusClass}`
    let children = this.perRequest.get(key)
    if (!children) {
      // No route label on requests no route took: the app's series stay what they were without routes.
      const labels =
        route === undefined
          ? { app: appLabel, status_class: `${statusClass}xx` }
          : { app: appLabel, route, status_class: `${statusClass}xx` }
      children = { requests: this.requests.labels(labels), duration: this.duration.labels(labels) }
      this.perRequest.set(key, children)
    }
    children.requests.inc()
    children.duration.observe(seconds)
    if (upstreamSeconds !== undefined) this.upstreamDuration.observe({ app: appLabel }, upstreamSeconds)
    if (refusal)
      this.refusals.inc({ app: appLabel, code: refusal.code, rule: refusal.rule, enforced: 'true' })
    if (wouldBlock)
      this.refusals.inc({ app: appLabel, code: wouldBlock.code, rule: wouldBlock.rule, enforced: 'false' })
  }

  rateLimited(app: string, allowed: boolean): void {
    this.rateLimitDecisions.inc({ app, result: allowed ? 'allowed' : 'limited' })
  }

  rapidResetSessionClosed(): void {
    this.rapidResets.inc()
  }

  headersDropped(app: string, dropped: readonly { reason: string }[]): void {
    for (const { reason } of dropped) this.droppedHeaders.inc({ app, reason })
  }

  storeFailed(store: string): void {
    this.storeErrors.inc({ store })
  }

  reloaded(success: boolean): void {
    this.reloads.inc({ result: success ? 'success' : 'failure' })
  }

  /** The registry /metrics serves: this process's, or every worker's added up. */
  async view(): Promise<Registry> {
    const { everyWorker } = this.sources
    return everyWorker ? AggregatorRegistry.aggregate(await everyWorker()) : this.registry
  }

  /** Requests per app and refusals per app and rule, read back from the counters /metrics serves. */
  async totals(): Promise<{
    requests: Map<string, number>
    refusals: Map<string, { code: string; rule: string; enforced: boolean; count: number }[]>
  }> {
    const view = await this.view()
    const valuesOf = async (name: string) => (await view.getSingleMetric(name)?.get())?.values ?? []
    const requests = new Map<string, number>()
    for (const { labels, value } of await valuesOf('portcullis_requests_total')) {
      const app = String(labels.app)
      requests.set(app, (requests.get(app) ?? 0) + value)
    }
    const refusals = new Map<string, { code: string; rule: string; enforced: boolean; count: number }[]>()
    for (const { labels, value } of await valuesOf('portcullis_refusals_total')) {
      const app = String(labels.app)
      const list = refusals.get(app) ?? []
      list.push({
        code: String(labels.code),
        rule: String(labels.rule),
        enforced: labels.enforced === 'true',
        count: value,
      })
      refusals.set(app, list)
    }
    return { requests, refusals }
  }

  dnsLookupFailed(app: string): void {
    this.dnsFailures.inc({ app })
  }

  acmeOrdered(app: string, success: boolean): void {
    this.acmeOrders.inc({ app, result: success ? 'success' : 'failure' })
  }
}

/**
 * The primary's `portcullis_workers_unanswered` as a worker reports it when the primary itself does not
 * answer: every other worker's figures are missing.
 */
export function unansweredWorkers(count: number): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
  const registry = new Registry()
  new Gauge({
    name: 'portcullis_workers_unanswered',
    help: 'Workers whose figures are missing from this answer: they did not answer the primary in time.',
    registers: [registry],
  }).set(count)
  return registry.getMetricsAsJSON()
}

/** A pool or WebSocket scope (`app`, or `app#route` for a route with its own) as metric labels. */
function scopeLabels(scope: string): { app: string; route?: string } {
  const separator = scope.indexOf('#')
  return separator < 0
    ? { app: scope }
    : { app: scope.slice(0, separator), route: scope.slice(separator + 1) }
}
