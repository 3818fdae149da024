import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import type { App } from '../policy/compile.js'
import { type BalancedClient, Balancer, type Picked, type Rotation } from './balance.js'
import { type HealthChange, inRotation, recordOutcome, usableTargets, watchHealth } from './health.js'
import type { Upstream } from './target.js'

interface AppTargets extends Rotation {
  app: App
  targets: Upstream[]
  timers: NodeJS.Timeout[]
}

/**
 * Keep-alive connection pools, one per (app, target), with the accounting balancing and health need.
 * Reloading keeps the pools and health of targets whose settings did not change, so a reload does not
 * cost every upstream connection; pools that are gone close gracefully, letting their in-flight
 * requests finish. Selection is `balance.ts`, health checks `health.ts`.
 */
export class UpstreamPools {
  private apps = new Map<string, AppTargets>()
  private readonly balancer: Balancer

  constructor(
    private readonly options: {
      log: Logger
      /** Signs sticky cookies, so a client cannot pin itself to a target of its choosing. */
      stickySecret: Buffer
      onHealthChange?: HealthChange
    },
  ) {
    this.balancer = new Balancer(options.stickySecret)
  }
  update(apps: readonly App[]): void {
    const previous = new Map<string, Upstream>()
    for (const entry of this.apps.values()) {
      for (const timer of entry.timers) clearInterval(timer)
      for (const target of entry.targets) previous.set(poolKey(entry.app, target.origin), target)
    }
    const next = new Map<string, AppTargets>()
    const kept = new Set<Upstream>()
    for (const app of apps.flatMap(withOwnPools)) {
      const targets = app.upstream.targets.map((origin) => {
        const reused = previous.get(poolKey(app, origin))
        if (reused) {
          kept.add(reused)
          return reused
        }
        return newUpstream(app, origin)
      })
      const entry: AppTargets = { app, targets, turn: 0, timers: [] }
      if (app.upstream.healthCheck)
        entry.timers = targets.map((target) =>
          watchHealth(app, target, this.options.log, this.options.onHealthChange),
        )
      next.set(app.poolId, entry)
    }
    for (const target of previous.values()) if (!kept.has(target)) void target.pool.close()
    this.apps = next
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
    for (const entry of entries) for (const timer of entry.timers) clearInterval(timer)
    await Promise.all(entries.flatMap((entry) => entry.targets.map((target) => target.pool[how]())))
  }
}

/** The app's pool, then each of its routes' own. */
function withOwnPools(app: App): App[] {
  return [app, ...app.routes.map((route) => route.app).filter((settings) => settings.poolId !== app.poolId)]
}

function poolKey(app: App, origin: string): string {
  return `${app.poolId} ${origin} ${app.upstream.timeouts.connect} ${app.upstream.maxConnections}`
}

function newUpstream(app: App, origin: string): Upstream {
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
    healthy: true,
    downUntil: 0,
    consecutiveFailures: 0,
    checkStreak: 0,
  }
}
