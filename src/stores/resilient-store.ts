import type { BreakerState, CircuitBreaker } from './breaker.js'
import { KnownTats } from './known-tats.js'
import type { LimitCheck, LimitOutcome, RateLimitStore } from './rate-limit-store.js'

/** The store counting in this process's memory: the last resort, which always answers. */
export type LocalStore = RateLimitStore & { close(): void }

/** What a limit does while the shared store cannot answer. */
export type OnStoreError = 'local' | 'allow' | 'deny'

export interface ResilientCheck extends LimitCheck {
  onStoreError: OnStoreError
}

/** A limit's outcome; or, while the shared store cannot answer, the `allow` or `deny` its limit chose. */
export type ResilientOutcome = LimitOutcome | 'allow' | 'deny'

/** A store that can fail or be slow: Redis, or with workers the primary. */
export interface RemoteStore {
  /** For health, metrics and logs: `redis` or `primary`. */
  name: string
  store: RateLimitStore
  /** A breaker for one part of the store (a Redis Cluster master; the whole store otherwise). */
  breaker(part: string): CircuitBreaker
  /** How many stores like this one each limit is spread over: each counts 1/share of it. */
  share: number
  /** Told of every failed call (metrics). */
  onError?(): void
}

export interface ResilientOptions {
  /** First choice first: Redis, then (with workers and Redis) the primary. Empty: memory only. */
  remote: RemoteStore[]
  local: LocalStore
  /** How many processes count each limit in their memory when all of them fall back to it. */
  localShare: number
}

/** A remote store's breakers as health and metrics see them. */
export interface StoreHealth {
  name: string
  /** The worst of its parts' breakers (those serving now). */
  state: BreakerState
  /** The parts whose breaker is not closed (Cluster masters by host:port). */
  failing: Record<string, BreakerState>
}

const severity: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 }

/**
 * Rate-limit state as the guard sees it: one store, whatever is behind it. Each call goes to the first
 * remote store through the breaker of the part that holds its keys (a Cluster master: one master's
 * failure touches only its keys). When it cannot answer, each limit does what its `onStoreError`
 * says: `allow` passes, `deny` refuses, `local` is counted by the next store down (the primary with
 * workers, then this process's memory), each holding 1/share of the limit's rate and burst so that
 * the replicas together stay near the limit.
 *
 * Every outcome tells the key's TAT, kept for recently used keys: a store counting in another's place
 * starts each key from what the other last said (the same TAT leaves the same fraction of a burst
 * spent whatever the share), and the store that answers again is told what was counted meanwhile.
 */
export class ResilientRateLimitStore {
  private readonly known = new KnownTats()
  private readonly breakers: Map<string, CircuitBreaker>[]

  constructor(private readonly options: ResilientOptions) {
    this.breakers = options.remote.map(() => new Map())
  }

  /** Redis Cluster runs a script only on keys of one hash slot. */
  get sameSlotOnly(): boolean {
    return this.options.remote[0]?.store.sameSlotOnly ?? false
  }

  /** The worst breaker of the first remote store, for health and metrics; undefined without one. */
  get breakerState(): BreakerState | undefined {
    return this.health()[0]?.state
  }

  /** Each remote store's breakers; those of parts that serve no more (a replaced master) are forgotten. */
  health(): StoreHealth[] {
    return this.options.remote.map((remote, tier) => {
      const breakers = this.breakers[tier] as Map<string, CircuitBreaker>
      const serving = remote.store.parts ? new Set(remote.store.parts()) : undefined
      let state: BreakerState = 'closed'
      const failing: Record<string, BreakerState> = {}
      for (const [part, breaker] of breakers) {
        if (serving && !serving.has(part)) {
          breakers.delete(part)
          continue
        }
        if (breaker.current === 'closed') continue
        failing[part] = breaker.current
        if (severity[breaker.current] > severity[state]) state = breaker.current
      }
      return { name: remote.name, state, failing }
    })
  }

  /** Checks all limits at once, all-or-nothing as the underlying stores do. */
  check(checks: readonly ResilientCheck[]): Promise<ResilientOutcome[]> {
    const { remote, local, localShare } = this.options
    if (remote.length === 0 && localShare === 1) return local.check(checks)
    return this.at(0, checks)
  }

  close(): void {
    this.options.local.close()
  }

  /** Counts in the store of this rank (past the remote ones: memory), or below it when it cannot answer. */
  private at(tier: number, checks: readonly ResilientCheck[]): Promise<ResilientOutcome[]> {
    const remote = this.options.remote[tier]
    if (!remote) {
      const sent = this.prepared(tier, checks, this.options.localShare)
      return this.options.local.check(sent).then((outcomes) => this.learned(tier, sent, outcomes))
    }
    const breaker = this.breakerOf(tier, remote, (checks[0] as ResilientCheck).key)
    if (!breaker.allows()) return this.below(tier, checks)
    const sent = this.prepared(tier, checks, remote.share)
    return remote.store.check(sent).then(
      (outcomes) => {
        breaker.succeeded()
        return this.learned(tier, sent, outcomes)
      },
      (error: unknown) => {
        breaker.failed(error)
        remote.onError?.()
        return this.below(tier, checks)
      },
    )
  }

  /** The store of this rank cannot answer: below the first one, each limit's onStoreError decides. */
  private async below(tier: number, checks: readonly ResilientCheck[]): Promise<ResilientOutcome[]> {
    if (tier > 0) return this.at(tier + 1, checks)
    const counted = checks.filter((check) => check.onStoreError === 'local')
    if (counted.length === checks.length) return this.at(1, checks)
    const outcomes = counted.length > 0 ? await this.at(1, counted) : []
    let next = 0
    return checks.map((check) =>
      check.onStoreError === 'local' ? (outcomes[next++] as LimitOutcome) : check.onStoreError,
    )
  }

  private breakerOf(tier: number, remote: RemoteStore, key: string): CircuitBreaker {
    const part = remote.store.partOf?.(key) ?? ''
    const breakers = this.breakers[tier] as Map<string, CircuitBreaker>
    let breaker = breakers.get(part)
    if (!breaker) {
      breaker = remote.breaker(part)
      breakers.set(part, breaker)
    }
    return breaker
  }

  /**
   * The checks as the store of this rank takes them: its share of each limit, and the key's known TAT
   * where another store said it last. The checks themselves when neither changes anything.
   */
  private prepared(tier: number, checks: readonly LimitCheck[], share: number): readonly LimitCheck[] {
    const now = Date.now()
    let sent: LimitCheck[] | undefined
    for (let index = 0; index < checks.length; index++) {
      const check = checks[index] as LimitCheck
      const known = this.known.get(check.key)
      const knownTat = known && known.tier !== tier && known.tat > now ? known.tat : undefined
      if (share === 1 && knownTat === undefined) {
        sent?.push(check)
        continue
      }
      sent ??= checks.slice(0, index)
      const spread = share === 1 ? check : shareOf(check, share)
      sent.push(
        knownTat === undefined
          ? { key: spread.key, intervalMs: spread.intervalMs, toleranceMs: spread.toleranceMs }
          : { key: spread.key, intervalMs: spread.intervalMs, toleranceMs: spread.toleranceMs, knownTat },
      )
    }
    return sent ?? checks
  }

  private learned(tier: number, sent: readonly LimitCheck[], outcomes: LimitOutcome[]): LimitOutcome[] {
    this.known.learn(tier, sent, outcomes, Date.now())
    return outcomes
  }
}

/**
 * A limit spread over `share` stores: each gets 1/share of the rate and of the burst (at least one).
 * The tolerance stays about the same time, so a TAT leaves each store the same fraction of its burst.
 */
export function shareOf(check: LimitCheck, share: number): LimitCheck {
  const burst = Math.max(1, Math.floor(Math.round(check.toleranceMs / check.intervalMs) / share))
  const intervalMs = check.intervalMs * share
  return { key: check.key, intervalMs, toleranceMs: burst * intervalMs }
}
