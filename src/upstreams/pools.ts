import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import { ipv6Network } from '../net/ip.js'
import type { App } from '../policy/compile.js'
import { type BalancedClient, Balancer, type Picked, type Rotation } from './balance.js'
import type { DiscoveredTarget, TargetResolver } from './discovery.js'
import { type HealthChange, inRotation, recordOutcome, usableTargets, watchHealth } from './health.js'
import type { Upstream } from './target.js'

interface AppTargets extends Rotation {
  app: App
  targets: Upstream[]
  /** Active health checks, one per target. */
  watchers: Map<Upstream, NodeJS.Timeout>
  /** When each discovered target is looked up again. */
  lookups: NodeJS.Timeout[]
}

/**
 * Keep-alive connection pools, one per (app, target), with the accounting balancing and health need.
 * Reloading keeps the pools and health of targets whose settings did not change, so a reload does not
 * cost every upstream connection; pools that are gone close gracefully, letting their in-flight
 * requests finish. Targets named in DNS (`dns+`, `srv+`) are looked up again on their records' TTL:
 * a new address becomes a target, one that disappears is drained the same way, and a failed lookup
 * keeps the last good set. Selection is `balance.ts`, health checks `health.ts`, lookups `discovery.ts`.
 */
export class UpstreamPools {
  private apps = new Map<string, AppTargets>()
  private readonly balancer: Balancer
  /** The last good origins of each discovered target, by pool: they outlive reloads. */
  private readonly discovered = new Map<string, readonly string[]>()
  private firstLookups: Promise<unknown> = Promise.resolve()
  private probing: boolean
  /** Verdicts another worker's checks reached, by pool and origin: targets made later start with them. */
  private readonly verdicts = new Map<string, boolean>()
  /** Requests in flight per pool and client address (`maxPerClient`). */
  private readonly perClient = new Map<string, number>()

  constructor(
    private readonly options: {
      log: Logger
      /** Signs sticky cookies, so a client cannot pin itself to a target of its choosing. */
      stickySecret: Buffer
      /** Looks up `dns+` and `srv+` targets. */
      resolver: TargetResolver
      /** Told of every verdict of this process's active health checks. */
      onHealthChange?: HealthChange
      /**
       * Whether this process runs the active health checks (default yes). With workers one of them
       * does, and the others take its verdicts through `applyHealth`.
       */
      probes?: boolean
      /** Told of each lookup of a discovered target that failed. */
      onLookupFailure?(app: string): void
    },
  ) {
    this.balancer = new Balancer(options.stickySecret)
    this.probing = options.probes ?? true
  }

  /** Starts or stops this process's active health checks (another worker took or left the job). */
  setProbing(on: boolean): void {
    this.probing = on
    for (const entry of this.apps.values()) {
      if (on) this.watchAll(entry)
      else {
        for (const timer of entry.watchers.values()) clearInterval(timer)
        entry.watchers.clear()
      }
    }
  }

  /** Verdicts of the worker that runs the health checks. */
  applyHealth(reports: readonly { pool: string; origin: string; healthy: boolean }[]): void {
    for (const { pool, origin, healthy } of reports) {
      this.verdicts.set(`${pool} ${origin}`, healthy)
      const target = this.apps.get(pool)?.targets.find((each) => each.origin === origin)
      if (!target) continue
      target.healthy = healthy
      target.checkStreak = 0
      if (healthy) target.downUntil = 0
    }
  }

  update(apps: readonly App[]): void {
    const previous = new Map<string, Upstream>()
    for (const entry of this.apps.values()) {
      for (const timer of [...entry.watchers.values(), ...entry.lookups]) clearTimeout(timer)
      for (const target of entry.targets) previous.set(poolKey(entry.app, target.origin), target)
    }
    const next = new Map<string, AppTargets>()
    const kept = new Set<Upstream>()
    for (const app of apps.flatMap(withOwnPools)) {
      const targets = this.originsOf(app).map((origin) => {
        const reused = previous.get(poolKey(app, origin))
        if (reused) kept.add(reused)
        return reused ?? this.newUpstream(app, origin)
      })
      const entry: AppTargets = { app, targets, turn: 0, watchers: new Map(), lookups: [] }
      this.watchAll(entry)
      next.set(app.poolId, entry)
    }
    for (const target of previous.values()) if (!kept.has(target)) void target.pool.close()
    this.apps = next
    this.firstLookups = Promise.all(
      [...next.values()].flatMap((entry) =>
        entry.app.upstream.discovered.map((found) => this.lookUp(entry, found)),
      ),
    )
  }

  /** Resolves once every discovered target has been looked up at least once since the last update. */
  settled(): Promise<void> {
    return this.firstLookups.then(() => undefined)
  }

  /**
   * A target for the request, or undefined when none is healthy. `avoid` holds targets that already
   * failed this request (retries).
   */
  pick(app: App, client: BalancedClient, avoid?: ReadonlySet<Upstream>): Picked | undefined {
    const entry = this.apps.get(app.poolId)
    if (!entry) return undefined
    const usable = usableTargets(entry.targets, avoid)
    return usable.length === 0 ? undefined : this.balancer.choose(app, usable, entry, client)
  }

  /** Every connection to the target is busy and the queue for one is full: the request is refused at once. */
  isSaturated(app: App, target: Upstream): boolean {
    return target.active >= app.upstream.maxConnections && target.pool.stats.queued >= app.upstream.maxQueue
  }

  /**
   * A place for one more request of this client to the app's pool, given back by the function it
   * returns; undefined when the client has `maxPerClient` in flight there already. An IPv6 client is
   * its /64: one host is routinely given a whole /64, and could take a place per address in it.
   */
  admitClient(app: App, clientIp: string): (() => void) | undefined {
    const key = `${app.poolId} ${ipv6Network(clientIp, 64)}`
    const held = this.perClient.get(key) ?? 0
    if (held >= app.upstream.maxPerClient) return undefined
    this.perClient.set(key, held + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = (this.perClient.get(key) ?? 1) - 1
      if (left > 0) this.perClient.set(key, left)
      else this.perClient.delete(key)
    }
  }

  /** A request started on the target (least-connections counts them). */
  begin(target: Upstream): void {
    target.active++
  }

  /** A request on the target ended; passive health hears whether it failed. */
  end(app: App, target: Upstream, failed: boolean): void {
    target.active--
    recordOutcome(app, target, failed, this.options.log)
  }

  /** How many of the app's targets are in rotation now. */
  healthyCount(poolId: string): number {
    const now = Date.now()
    return (this.apps.get(poolId)?.targets ?? []).filter((target) => inRotation(target, now)).length
  }

  /** Per app: each target's state, for readiness, metrics and the dashboard. */
  status(): Map<string, { origin: string; healthy: boolean; active: number }[]> {
    const now = Date.now()
    return new Map(
      [...this.apps].map(([poolId, entry]) => [
        poolId,
        entry.targets.map((target) => ({
          origin: target.origin,
          healthy: inRotation(target, now),
          active: target.active,
        })),
      ]),
    )
  }

  /** Lets requests in flight finish, then closes every pool; `destroy` cuts what is still running. */
  async close(how: 'close' | 'destroy' = 'close'): Promise<void> {
    const entries = [...this.apps.values()]
    this.apps.clear()
    for (const entry of entries)
      for (const timer of [...entry.watchers.values(), ...entry.lookups]) clearTimeout(timer)
    await Promise.all(entries.flatMap((entry) => entry.targets.map((target) => target.pool[how]())))
  }

  /** The fixed origins of a pool, then the last good addresses of each of its discovered targets. */
  private originsOf(app: App): string[] {
    const found = app.upstream.discovered.flatMap(
      (target) => this.discovered.get(discoveryKey(app, target)) ?? [],
    )
    return [...new Set([...app.upstream.targets, ...found])]
  }

  /** An active health check for every target that has none yet. */
  private watchAll(entry: AppTargets): void {
    if (!entry.app.upstream.healthCheck || !this.probing) return
    const { onHealthChange } = this.options
    for (const target of entry.targets) {
      if (!entry.watchers.has(target))
        entry.watchers.set(
          target,
          watchHealth(entry.app, target, this.options.log, (healthy) =>
            onHealthChange?.(entry.app.poolId, target.origin, healthy),
          ),
        )
    }
  }

  /** Looks a discovered target up, applies what it found, and schedules the next look on the TTL. */
  private lookUp(entry: AppTargets, found: DiscoveredTarget): Promise<void> {
    const { app } = entry
    const { minTtl, maxTtl } = app.upstream.dns
    const again = (delayMs: number) => {
      const timer = setTimeout(
        () => void this.lookUp(entry, found),
        Math.min(maxTtl, Math.max(minTtl, delayMs)),
      )
      timer.unref()
      entry.lookups.push(timer)
    }
    return this.options.resolver.resolve(found).then(
      ({ origins, ttlMs }) => {
        if (this.apps.get(app.poolId) !== entry) return // a reload replaced this pool meanwhile
        this.discovered.set(discoveryKey(app, found), origins)
        this.retarget(entry)
        again(ttlMs)
      },
      (error: unknown) => {
        if (this.apps.get(app.poolId) !== entry) return
        this.options.log.warn(
          { err: error, app: app.id, target: found.spec, rule: 'upstream.targets' },
          'upstream DNS lookup failed: keeping the last good targets',
        )
        this.options.onLookupFailure?.(app.id)
        again(minTtl)
      },
    )
  }

  /**
   * Puts a pool's targets in line with its origins: new ones join with their own health check, and
   * ones that are gone leave rotation at once and close once their requests in flight have finished.
   */
  private retarget(entry: AppTargets): void {
    const origins = this.originsOf(entry.app)
    const current = new Map(entry.targets.map((target) => [target.origin, target]))
    const next = origins.map((origin) => current.get(origin) ?? this.newUpstream(entry.app, origin))
    for (const target of entry.targets) {
      if (origins.includes(target.origin)) continue
      clearTimeout(entry.watchers.get(target))
      entry.watchers.delete(target)
      void target.pool.close()
      this.options.log.info(
        { app: entry.app.id, upstream: target.origin, rule: 'upstream.targets' },
        'upstream target gone from DNS: draining',
      )
    }
    entry.targets = next
    this.watchAll(entry)
  }

  /** A target with its own pool; its health as the probing worker last found it, else healthy. */
  private newUpstream(app: App, origin: string): Upstream {
    return {
      origin,
      pool: new Pool(origin, {
        connect: { timeout: app.upstream.timeouts.connect },
        connections: app.upstream.maxConnections,
        // An idle connection closes after 4 s whatever the target's Keep-Alive header offers.
        keepAliveTimeout: 4000,
        keepAliveMaxTimeout: 4000,
        pipelining: 1,
      }),
      id: createHash('sha256').update(origin).digest('base64url').slice(0, 12),
      active: 0,
      healthy: this.verdicts.get(`${app.poolId} ${origin}`) ?? true,
      downUntil: 0,
      consecutiveFailures: 0,
      checkStreak: 0,
    }
  }
}

function discoveryKey(app: App, target: DiscoveredTarget): string {
  return `${app.poolId} ${target.spec}`
}

/** The app's pool, then each of its routes' own. */
function withOwnPools(app: App): App[] {
  return [app, ...app.routes.map((route) => route.app).filter((settings) => settings.poolId !== app.poolId)]
}

function poolKey(app: App, origin: string): string {
  return `${app.poolId} ${origin} ${app.upstream.timeouts.connect} ${app.upstream.maxConnections}`
}
