import type { CircuitBreaker } from './breaker.js'
import type { LimitCheck, LimitOutcome, RateLimitStore } from './rate-limit-store.js'

/** The store counting in this replica: its memory, or its primary's for workers. */
export type LocalStore = RateLimitStore & { close(): void }

/** What a limit does while the shared store cannot answer. */
export type OnStoreError = 'local' | 'allow' | 'deny'

export interface ResilientCheck extends LimitCheck {
  onStoreError: OnStoreError
}

/** A limit's outcome; or, while the shared store cannot answer, the `allow` or `deny` its limit chose. */
export type ResilientOutcome = LimitOutcome | 'allow' | 'deny'

export interface SharedStore {
  store: RateLimitStore
  breaker: CircuitBreaker
  /** Told of every failed call (metrics). */
  onError?(): void
}

/**
 * Rate-limit state as the guard sees it: one store, whatever is behind it. With a shared store (Redis,
 * for every replica), each call goes through a circuit breaker, and while the store cannot answer each
 * limit does what its `onStoreError` says: `local` counts in this replica's memory at 1/replicas of
 * the rate and burst (so the replicas together stay near the limit), `allow` passes, `deny` refuses.
 * Without one, every limit is counted in memory.
 */
export class ResilientRateLimitStore {
  constructor(private readonly options: { shared?: SharedStore; local: LocalStore; replicas: number }) {}

  /** Redis Cluster runs a script only on keys of one hash slot. */
  get sameSlotOnly(): boolean {
    return this.options.shared?.store.sameSlotOnly ?? false
  }

  /** The breaker of the shared store, for health and metrics; undefined without one. */
  get breakerState(): CircuitBreaker['current'] | undefined {
    return this.options.shared?.breaker.current
  }

  /** Checks all limits at once, all-or-nothing as the underlying stores do. */
  check(checks: readonly ResilientCheck[]): Promise<ResilientOutcome[]> {
    const { shared, local } = this.options
    if (!shared) return local.check(checks)
    if (!shared.breaker.allows()) return this.fallBack(checks)
    return shared.store.check(checks).then(
      (outcomes) => {
        shared.breaker.succeeded()
        return outcomes
      },
      (error: unknown) => {
        shared.breaker.failed(error)
        shared.onError?.()
        return this.fallBack(checks)
      },
    )
  }

  close(): void {
    this.options.local.close()
  }

  private async fallBack(checks: readonly ResilientCheck[]): Promise<ResilientOutcome[]> {
    const counted = checks.filter((check) => check.onStoreError === 'local')
    const outcomes =
      counted.length > 0 ? await this.options.local.check(counted.map((check) => this.perReplica(check))) : []
    let next = 0
    return checks.map((check) =>
      check.onStoreError === 'local' ? (outcomes[next++] as LimitOutcome) : check.onStoreError,
    )
  }

  /** A limit spread over the replicas: each gets 1/replicas of the rate and of the burst (at least one). */
  private perReplica(check: LimitCheck): LimitCheck {
    const { replicas } = this.options
    const burst = Math.max(1, Math.floor(Math.round(check.toleranceMs / check.intervalMs) / replicas))
    const intervalMs = check.intervalMs * replicas
    return { key: check.key, intervalMs, toleranceMs: burst * intervalMs }
  }
}
