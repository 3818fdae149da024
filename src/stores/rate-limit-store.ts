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
  /**
   * The key's TAT as another store last told it (epoch ms by this process's clock): counting starts
   * from it where this store knows less, so a fallback does not hand out a fresh budget, and what a
   * fallback counted is not counted twice once the shared store answers again.
   */
  knownTat?: number
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
  /** Which part of the store holds a key (a Redis Cluster master, by its slot); one part if absent. */
  partOf?(key: string): string
  /** The parts serving now. */
  parts?(): string[]
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
 * Redis is unreachable. A key is forgotten only once its budget is full again, since forgetting a key
 * earlier hands its client a fresh budget. The map is capped: when every kept key is still live, a new
 * key is counted in a bucket it shares with every other new key of the same rate ("overflow"), so a
 * flood of fresh keys can neither reset anyone's budget nor grow memory, and each limit still holds
 * (a shared budget is never larger than the client's own).
 */
export class MemoryStore implements RateLimitStore {
  readonly sameSlotOnly = false
  private readonly tats = new Map<string, number>()
  /** One per distinct rate in the policies: bounded by the policies, not by traffic. */
  private readonly overflow = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout
  private lastFullSweep = Number.NEGATIVE_INFINITY

  constructor(private readonly maxKeys = 100_000) {
    this.sweeper = setInterval(() => this.sweep(Date.now()), 10_000).unref()
  }

  async check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return this.checkNow(checks, Date.now())
  }

  checkNow(checks: readonly LimitCheck[], now: number): LimitOutcome[] {
    const slots = checks.map((check) => this.slotFor(check, now))
    // What another store said of a key holds whether or not this request passes: kept at once.
    for (let index = 0; index < checks.length; index++) {
      const { knownTat } = checks[index] as LimitCheck
      if (knownTat === undefined || knownTat <= now) continue
      const { map, key } = slots[index] as Slot
      if (knownTat > (map.get(key) ?? now)) map.set(key, knownTat)
    }
    // Two rules of one rate may share an overflow bucket: the second is counted after the first.
    let spent: Map<string, number> | undefined
    const steps = checks.map((check, index) => {
      const { map, key } = slots[index] as Slot
      if (map !== this.overflow) return gcra(check, map.get(key), now)
      spent ??= new Map()
      const step = gcra(check, spent.get(key) ?? map.get(key), now)
      spent.set(key, step.tat)
      return step
    })
    // As in the Redis script: one refusal refuses the request for every limit, and nothing is spent.
    if (!steps.every((step) => step.outcome.allowed))
      return steps.map((step) => ({ ...step.outcome, allowed: false }))
    for (const [index, step] of steps.entries()) {
      const { map, key } = slots[index] as Slot
      map.set(key, step.tat)
    }
    return steps.map((step) => step.outcome)
  }

  get size(): number {
    return this.tats.size
  }

  /** Keys counted in a shared overflow bucket at the moment (0 unless the store has been full). */
  get overflowBuckets(): number {
    return this.overflow.size
  }

  close(): void {
    clearInterval(this.sweeper)
  }

  /** Where a check's state lives: its own key, or the overflow bucket of its rate when the map is full. */
  private slotFor(check: LimitCheck, now: number): Slot {
    if (this.tats.has(check.key) || this.hasRoom(now)) return { map: this.tats, key: check.key }
    return { map: this.overflow, key: `${check.intervalMs} ${check.toleranceMs}` }
  }

  private hasRoom(now: number): boolean {
    if (this.tats.size < this.maxKeys) return true
    // Full: forget keys whose budget is whole again, at most once a second (a sweep walks every key).
    if (now - this.lastFullSweep >= 1000) {
      this.lastFullSweep = now
      this.sweep(now)
    }
    return this.tats.size < this.maxKeys
  }

  private sweep(now: number): void {
    for (const [key, tat] of this.tats) if (tat <= now) this.tats.delete(key)
    for (const [key, tat] of this.overflow) if (tat <= now) this.overflow.delete(key)
  }
}

interface Slot {
  map: Map<string, number>
  key: string
}
