import type { Pool } from 'undici'

/** One target of one app: its keep-alive pool and what the balancer knows about it. */
export interface Upstream {
  readonly origin: string
  readonly pool: Pool
  /** Short public id of the target, used in the sticky cookie. */
  readonly id: string
  /** Requests and WebSockets in progress (least-connections). */
  active: number
  /** Active health check verdict; true until a check says otherwise. */
  healthy: boolean
  /** Passive health: out of rotation until this time (epoch ms). */
  downUntil: number
  consecutiveFailures: number
  checkStreak: number
}
