import type { LiveWebSockets } from '../pipeline/guard.js'
import { type PlaceCaps, PlaceCounts } from '../stores/counts.js'
import { type LimitCheck, type LimitOutcome, MemoryStore } from '../stores/rate-limit-store.js'
import { type Lock, MemoryAcmeState } from '../tls/acme/storage.js'
import type { HealthReport, WorkerLink } from './protocol.js'

/**
 * The state every worker must see the same, held by the primary: in-memory rate limits, WebSocket
 * counts per cap scope and client, ACME challenge answers and order locks, and the targets' health as
 * the one probing worker reports it. Each ask is one synchronous step here, so two workers never see
 * the same free place. What a worker held (places, locks) is given back when it exits.
 */
export class SharedStateKeeper {
  private readonly limits = new MemoryStore()
  private readonly counts = new PlaceCounts()
  /** Places taken, by worker and the worker's id for the reservation. */
  private readonly places = new Map<string, { worker: number; release(): void }>()
  private readonly acme = new MemoryAcmeState()
  private readonly locks = new Map<number, { worker: number; lock: Lock }>()
  private readonly health = new Map<string, HealthReport>()
  private nextId = 0

  /** Answers a worker's asks and hears its tells; `others` reaches the rest for what they must hear. */
  serve(worker: number, link: WorkerLink, others: (tell: (peer: WorkerLink) => void) => void): void {
    link.answer('rate-limit', (batch) => this.checkLimits(batch))
    link.answer('ws-reserve', ({ id, scope, ip, caps }) =>
      this.reserve(`${worker} ${id}`, worker, scope, ip, caps),
    )
    link.listen('ws-release', (id) => this.release(`${worker} ${id}`))
    link.answer('acme-put', async ({ kind, name, answer, ttlMs }) => {
      await this.acme.putChallenge(kind, name, answer, ttlMs)
      return null
    })
    link.answer('acme-get', async ({ kind, name }) => (await this.acme.getChallenge(kind, name)) ?? null)
    link.answer('acme-remove', async ({ kind, name }) => {
      await this.acme.removeChallenge(kind, name)
      return null
    })
    link.answer('acme-lock', async ({ name, ttlMs }) => {
      const lock = await this.acme.lock(name, ttlMs)
      if (!lock) return null
      const id = this.nextId++
      this.locks.set(id, { worker, lock })
      return id
    })
    link.listen('acme-unlock', (id) => this.unlock(id))
    link.listen('acme-stored', (app) => others((peer) => peer.tell('acme-stored', app)))
    link.listen('health', (report) => {
      this.health.set(`${report.pool} ${report.origin}`, report)
      others((peer) => peer.tell('health', [report]))
    })
  }

  /** The targets' health so far, for a worker that starts. */
  healthSoFar(): HealthReport[] {
    return [...this.health.values()]
  }

  /** Gives back what a worker that exited held. */
  forget(worker: number): void {
    for (const [id, place] of this.places) if (place.worker === worker) this.release(id)
    for (const [id, held] of this.locks) if (held.worker === worker) this.unlock(id)
  }

  close(): void {
    this.limits.close()
  }

  private checkLimits(batch: readonly (readonly LimitCheck[])[]): LimitOutcome[][] {
    const now = Date.now()
    return batch.map((checks) => this.limits.checkNow(checks, now))
  }

  private reserve(
    id: string,
    worker: number,
    scope: string,
    ip: string,
    caps: PlaceCaps | undefined,
  ): { taken: boolean; live: LiveWebSockets } {
    const live = this.counts.open(scope, ip)
    if (PlaceCounts.full(live, caps)) return { taken: false, live }
    this.places.set(id, { worker, release: this.counts.take(scope, ip) })
    return { taken: true, live }
  }

  private release(id: string): void {
    this.places.get(id)?.release()
    this.places.delete(id)
  }

  private unlock(id: number): void {
    const held = this.locks.get(id)
    if (!held) return
    this.locks.delete(id)
    void held.lock.release()
  }
}
