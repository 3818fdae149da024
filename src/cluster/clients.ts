import type { LiveWebSockets } from '../pipeline/guard.js'
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
 * trip per batch, not per request.
 */
export class SharedRateLimitStore implements RateLimitStore {
  readonly sameSlotOnly = false
  private batch: Pending[] = []

  constructor(private readonly primary: PrimaryLink) {}

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

export class SharedWebSocketCaps {
  constructor(private readonly primary: PrimaryLink) {}

  async reserve(scope: string, ip: string, caps: PlaceCaps | undefined): Promise<SharedPlace> {
    const { id, taken, live } = await this.primary.ask('ws-reserve', { scope, ip, ...(caps ? { caps } : {}) })
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
