import type { LimitCheck, LimitOutcome } from './rate-limit-store.js'

export interface Known {
  /** The key's TAT (epoch ms, this process's clock). */
  tat: number
  /** Which store said it: its rank in the resilient store (0 for the shared one). */
  tier: number
}

/**
 * The TAT of each recently used key as a store last told it: what a fallback starts counting from,
 * and what it hands back to the shared store once that answers again. Bounded like MemoryStore: when
 * full, keys whose budget is whole again go first (at most one sweep a second), then the oldest; a key
 * in use is learned again on its next answer.
 */
export class KnownTats {
  private readonly known = new Map<string, Known>()
  private lastSweep = Number.NEGATIVE_INFINITY

  constructor(private readonly maxKeys = 100_000) {}

  get size(): number {
    return this.known.size
  }

  get(key: string): Known | undefined {
    return this.known.get(key)
  }

  /** Learns the TATs a store's outcomes tell, for the checks it was sent. */
  learn(tier: number, checks: readonly LimitCheck[], outcomes: readonly LimitOutcome[], now: number): void {
    for (let index = 0; index < checks.length; index++) {
      const check = checks[index] as LimitCheck
      const outcome = outcomes[index]
      if (!outcome) continue
      // Admitted: the TAT it left. Refused by its own limit: the TAT as it stands. Refused by another
      // limit of the request (nothing spent, no retry of its own): one interval less than the reset.
      const spentNothing = !outcome.allowed && outcome.retryAfterMs === 0
      this.set(check.key, now + outcome.resetMs - (spentNothing ? check.intervalMs : 0), tier, now)
    }
  }

  private set(key: string, tat: number, tier: number, now: number): void {
    const entry = this.known.get(key)
    if (entry) {
      entry.tat = tat
      entry.tier = tier
      return
    }
    if (this.known.size >= this.maxKeys) this.makeRoom(now)
    this.known.set(key, { tat, tier })
  }

  private makeRoom(now: number): void {
    if (now - this.lastSweep >= 1000) {
      this.lastSweep = now
      for (const [key, entry] of this.known) if (entry.tat <= now) this.known.delete(key)
    }
    if (this.known.size < this.maxKeys) return
    const oldest = this.known.keys().next()
    if (!oldest.done) this.known.delete(oldest.value)
  }
}
