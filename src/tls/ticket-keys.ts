import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { RedisClient } from '../stores/redis.js'

/** What Node's TLS server takes: a 16-byte key name, a 16-byte HMAC key and a 16-byte AES key. */
export const ticketKeyLength = 48

/** The key of one rotation period (numbered from the epoch), from wherever the gateways share it. */
export type TicketKeySource = (period: number) => Promise<Buffer>

/** A new random key each period: for one process, or a primary that hands it to its workers. */
export const randomTicketKeys: TicketKeySource = async () => randomBytes(ticketKeyLength)

/**
 * The period's key in Redis, so every replica encrypts and decrypts tickets with the same key: the
 * first replica to ask creates it (SET NX), the others read it. It expires two periods later, so a key
 * taken from Redis does not outlive its use (tickets stay forward secret past that).
 */
export function redisTicketKeys(redis: RedisClient, periodMs: number): TicketKeySource {
  return async (period) => {
    const key = `portcullis:tls:ticket-key:${period}`
    await redis.set(key, randomBytes(ticketKeyLength).toString('base64'), 'PX', periodMs * 2, 'NX')
    const stored = await redis.get(key)
    const bytes = stored ? Buffer.from(stored, 'base64') : undefined
    if (bytes?.length !== ticketKeyLength) throw new Error('no valid TLS ticket key in Redis')
    return bytes
  }
}

/** After a failed fetch (Redis down), when to try again; the current key serves meanwhile. */
const retryMs = 10_000

/**
 * Session-ticket keys, rotated at fixed wall-clock boundaries so gateways that share a source switch at
 * the same moment. Node's TLS server holds one key, so tickets issued before a rotation end in a full
 * handshake afterwards: one per client per period.
 */
export class TicketKeyRotation {
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor(
    private readonly options: {
      periodMs: number
      source: TicketKeySource
      apply(key: Buffer): void
      log: Logger
    },
  ) {}

  /** Fetches the current period's key and applies it, then keeps rotating. */
  async start(): Promise<void> {
    await this.rotate()
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
  }

  private async rotate(): Promise<void> {
    const { periodMs, source, apply, log } = this.options
    const now = Date.now()
    const period = Math.floor(now / periodMs)
    let next = (period + 1) * periodMs - now
    try {
      apply(await source(period))
    } catch (error) {
      log.warn(
        { err: error, retryInMs: retryMs },
        'cannot fetch the TLS session-ticket key: keeping the current one',
      )
      next = Math.min(next, retryMs)
    }
    if (this.stopped) return
    this.timer = setTimeout(() => void this.rotate(), next)
    this.timer.unref()
  }
}
