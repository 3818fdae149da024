import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import type { LiveWebSockets } from '../pipeline/guard.js'
import type { PolicyTexts } from '../policy/source.js'
import type { PlaceCaps } from '../stores/counts.js'
import type { LimitCheck, LimitOutcome } from '../stores/rate-limit-store.js'
import type { ChallengeKind } from '../tls/acme/storage.js'
import type { Channel } from './channel.js'

/** A target's health, as the probing worker found it: by pool id and origin. */
export interface HealthReport {
  pool: string
  origin: string
  healthy: boolean
}

/** What each worker keeps for the views over all of them. */
export type Collected = 'metrics' | 'activity'
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[]

/**
 * What a worker learns when it joins: the policy texts the primary validated (it compiles exactly
 * those, never the files as they may be by then), how many workers serve, whether it probes, the
 * health so far, the ticket key.
 */
export interface WorkerWelcome {
  policies: PolicyTexts
  workers: number
  probe: boolean
  health: HealthReport[]
  ticketKey?: string
}

/** A worker's answer to a new generation: whether it serves it now, and if not, why. */
export interface Applied {
  applied: boolean
  digest: string
  problems: string[]
}

/** What a worker asks the primary, which holds the state every worker must see the same. */
export type WorkerAsks = {
  join: [null, WorkerWelcome]
  'rate-limit': [readonly (readonly LimitCheck[])[], LimitOutcome[][]]
  /** `id`: the worker's own, which its `ws-release` names (also to give back a place it gave up on). */
  'ws-reserve': [
    { id: number; scope: string; ip: string; caps?: PlaceCaps },
    { taken: boolean; live: LiveWebSockets },
  ]
  'acme-put': [{ kind: ChallengeKind; name: string; answer: string; ttlMs: number }, null]
  'acme-get': [{ kind: ChallengeKind; name: string }, string | null]
  'acme-remove': [{ kind: ChallengeKind; name: string }, null]
  'acme-lock': [{ name: string; ttlMs: number }, number | null]
  /** Every worker's metrics or recent activity (and the primary's own metrics). */
  gather: [Collected, unknown[]]
}

export type WorkerTells = {
  /** The worker serves: its listeners' ports (the same in every worker). */
  started: { http: number; https: number; admin: number; probe?: number }
  'ws-release': number
  'acme-unlock': number
  /** An ACME certificate was stored: the other workers serve it now. */
  'acme-stored': string
  health: HealthReport
}

export type PrimaryAsks = {
  collect: [Collected, unknown]
  /** Serve these policy texts, which the primary validated. */
  apply: [{ reason: string; policies: PolicyTexts }, Applied]
}

export type PrimaryTells = {
  /** Whether this worker runs the active health checks for all of them. */
  probe: boolean
  /** Targets' health as the probing worker last found it. */
  health: HealthReport[]
  /** The TLS session-ticket key (48 bytes, base64). */
  'ticket-key': string
  'acme-stored': string
}

/** The worker's end of its channel to the primary. */
export type PrimaryLink = Channel<WorkerAsks, WorkerTells, PrimaryAsks, PrimaryTells>
/** The primary's end of its channel to one worker. */
export type WorkerLink = Channel<PrimaryAsks, PrimaryTells, WorkerAsks, WorkerTells>
