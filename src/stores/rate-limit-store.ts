/**
 * Rate-limit state behind one small interface, with two implementations: Redis (shared by every
 * replica) and memory (per replica). Both run GCRA, the generic cell rate algorithm: each key stores a
 * single "theoretical arrival time" (TAT), so a check is O(1) in time and memory. A full budget admits
 * `burst` requests at once, then one every `interval` ms (limit per window, sustained).
 */
export interface LimitCheck {
  key: string
  /** Milliseconds between two requests at the sustained rate: window / limit. */
  intervalMs: number
  /** burst × interval: how far ahead of now the TAT may run. */
  toleranceMs: number
}

export interface LimitOutcome {
  allowed: boolean
  /** Requests still allowed at once after this one. */
  remaining: number
  /** For a refusal: when a retry can succeed. */
  retryAfterMs: number
  /** When the budget is full again. */
  resetMs: number
}

export interface RateLimitStore {
  /** Redis Cluster runs a script only on keys of one hash slot; other stores take any keys together. */
  readonly sameSlotOnly: boolean
  /** Checks all limits at once: either every one admits the request and all are spent, or none is. */
  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]>
}

/** One GCRA step. `storedTat` is undefined for a key never seen or expired. */
export function gcra(
  check: LimitCheck,
  storedTat: number | undefined,
  now: number,
): { outcome: LimitOutcome; tat: number } {
  const tat = Math.max(storedTat ?? now, now)
  const nextTat = tat + check.intervalMs
  const excess = nextTat - now - check.toleranceMs
  if (excess > 0) {
    return {
      outcome: { allowed: false, remaining: 0, retryAfterMs: excess, resetMs: tat - now },
      tat,
    }
  }
  return {
    outcome: {
      allowed: true,
      remaining: Math.floor((check.toleranceMs - (nextTat - now)) / check.intervalMs),
      retryAfterMs: 0,
      resetMs: nextTat - now,
    },
    tat: nextTat,
  }
}

/**
 * Limits in this process's memory: used when no Redis is configured, and as the `local` fallback while
 * Redis is unreachable. Entries expire once their budget is full again, and the map is capped.
 */
export class MemoryStore implements RateLimitStore {
  readonly sameSlotOnly = false
  private readonly tats = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout

  constructor(private readonly maxKeys = 100_000) {
    this.sweeper = setInterval(() => this.sweep(), 10_000).unref()
  }

  async check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return this.checkNow(checks, Date.now())
  }

  checkNow(checks: readonly LimitCheck[], now: number): LimitOutcome[] {
    const steps = checks.map((check) => gcra(check, this.tats.get(check.key), now))
    // As in the Redis script: one refusal refuses the request for every limit, and nothing is spent.
    if (!steps.every((step) => step.outcome.allowed))
      return steps.map((step) => ({ ...step.outcome, allowed: false }))
    for (const [index, step] of steps.entries()) {
      const key = (checks[index] as LimitCheck).key
      this.tats.delete(key) // re-insert: the map's order is its eviction order
      this.tats.set(key, step.tat)
    }
    this.evictOverflow()
    return steps.map((step) => step.outcome)
  }

  get size(): number {
    return this.tats.size
  }

  close(): void {
    clearInterval(this.sweeper)
  }

  private sweep(): void {
    const now = Date.now()
    for (const [key, tat] of this.tats) if (tat <= now) this.tats.delete(key)
  }

  private evictOverflow(): void {
    for (const key of this.tats.keys()) {
      if (this.tats.size <= this.maxKeys) break
      this.tats.delete(key)
    }
  }
}
