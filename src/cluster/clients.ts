import type { LiveWebSockets } from '../pipeline/guard.js'
import type { CircuitBreaker } from '../stores/breaker.js'
import type { PlaceCaps } from '../stores/counts.js'
import type { LimitCheck, LimitOutcome, RateLimitStore } from '../stores/rate-limit-store.js'
import type { ChallengeKind, Lock, VolatileAcmeState } from '../tls/acme/storage.js'
import type { PrimaryLink } from './protocol.js'

/**
 * A worker's view of the state the primary keeps for all workers (`keeper.ts`): each class stands in
 * for the one-process store with the same interface.
 */

interface Pending {
  checks: readonly LimitCheck[]
  resolve(outcomes: LimitOutcome[]): void
  reject(error: Error): void
}

/**
 * Rate limits counted in the primary. The checks a worker makes in one turn of its event loop go in
 * one message, as the Redis store sends one script call per batch: a busy worker pays one IPC round
 * trip per batch, not per request. An ask waits at most `timeoutMs`, like a Redis call: the resilient
 * store in front of it then counts as each limit's onStoreError says.
 */
export class SharedRateLimitStore implements RateLimitStore {
  readonly sameSlotOnly = false
  private batch: Pending[] = []

  constructor(
    private readonly primary: PrimaryLink,
    private readonly timeoutMs: number,
  ) {}

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return new Promise((resolve, reject) => {
      if (this.batch.length === 0) setImmediate(() => this.flush())
      this.batch.push({ checks, resolve, reject })
    })
  }

  close(): void {}

  private flush(): void {
    const batch = this.batch
    this.batch = []
    this.primary
      .ask(
        'rate-limit',
        batch.map((pending) => pending.checks),
        this.timeoutMs,
      )
      .then(
        (outcomes) => {
          for (const [index, pending] of batch.entries()) pending.resolve(outcomes[index] ?? [])
        },
        (error: Error) => {
          for (const pending of batch) pending.reject(error)
        },
      )
  }
}

/** A place under the WebSocket caps taken in the primary, checked and counted in one step there. */
export interface SharedPlace {
  taken: boolean
  live: LiveWebSockets
  release(): void
}

/**
 * WebSocket places taken in the primary. Each reservation carries an id of this worker's: when the ask
 * fails (a slow or stopped primary), the worker tells the primary to give that place back, so a place
 * the primary took after the worker stopped waiting is not held until the worker exits.
 */
export class SharedWebSocketCaps {
  private nextId = 0

  constructor(
    private readonly primary: PrimaryLink,
    private readonly timeoutMs: number,
    /** Whether the primary is answering: a stalled one costs each upgrade its timeout only until it opens. */
    readonly breaker: CircuitBreaker,
    /** The workers sharing the caps: while the primary cannot answer, each holds 1/share of them. */
    readonly share: number,
  ) {}

  async reserve(scope: string, ip: string, caps: PlaceCaps | undefined): Promise<SharedPlace> {
    if (!this.breaker.allows()) throw new Error('the primary is not answering')
    const id = this.nextId++
    let answer: { taken: boolean; live: LiveWebSockets }
    try {
      answer = await this.primary.ask(
        'ws-reserve',
        { id, scope, ip, ...(caps ? { caps } : {}) },
        this.timeoutMs,
      )
      this.breaker.succeeded()
    } catch (error) {
      this.breaker.failed(error)
      // Asks and tells keep their order: this reaches the primary after the ask, whatever it did with it.
      this.primary.tell('ws-release', id)
      throw error
    }
    const { taken, live } = answer
    let released = !taken
    return {
      taken,
      live,
      release: () => {
        if (released) return
        released = true
        this.primary.tell('ws-release', id)
      },
    }
  }
}

/** ACME challenge answers and order locks in the primary: one order per name whichever worker asks. */
export class SharedAcmeState implements VolatileAcmeState {
  constructor(private readonly primary: PrimaryLink) {}

  async putChallenge(kind: ChallengeKind, name: string, answer: string, ttlMs: number): Promise<void> {
    await this.primary.ask('acme-put', { kind, name, answer, ttlMs })
  }

  async getChallenge(kind: ChallengeKind, name: string): Promise<string | undefined> {
    return (await this.primary.ask('acme-get', { kind, name })) ?? undefined
  }

  async removeChallenge(kind: ChallengeKind, name: string): Promise<void> {
    await this.primary.ask('acme-remove', { kind, name })
  }

  async lock(name: string, ttlMs: number): Promise<Lock | undefined> {
    const id = await this.primary.ask('acme-lock', { name, ttlMs })
    if (id === null) return undefined
    return { release: async () => this.primary.tell('acme-unlock', id) }
  }
}
