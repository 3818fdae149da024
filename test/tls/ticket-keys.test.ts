import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectRedis, type RedisClient, whenReady } from '../../src/stores/redis.js'
import { redisTicketKeys, TicketKeyRotation, ticketKeyLength } from '../../src/tls/ticket-keys.js'
import { type RedisServer, startRedis } from '../support/redis.js'

describe('TLS session-ticket keys', () => {
  let redis: RedisServer
  let clients: RedisClient[]

  beforeAll(async () => {
    redis = await startRedis()
    clients = [connectRedis(redis.url, 1000), connectRedis(redis.url, 1000)]
    for (const client of clients) await whenReady(client, 5000)
  })
  afterAll(async () => {
    for (const client of clients) client.disconnect()
    await redis.stop()
  })

  it('gives every replica sharing Redis the same key per period, a new one the next period, expiring', async () => {
    const [one, two] = clients.map((client) => redisTicketKeys(client, 60_000))
    const first = await one?.(1000)
    expect(first).toHaveLength(ticketKeyLength)
    expect(await two?.(1000)).toEqual(first)
    expect(await two?.(1001)).not.toEqual(first)
    const ttl = Number(await redis.cli('pttl', 'portcullis:tls:ticket-key:1000'))
    expect(ttl).toBeGreaterThan(60_000)
    expect(ttl).toBeLessThanOrEqual(120_000)
  })

  it('rotates at the period boundary and keeps the current key while the source fails', async () => {
    const applied: string[] = []
    let failing = false
    const rotation = new TicketKeyRotation({
      periodMs: 200,
      source: async (period) => {
        if (failing) throw new Error('Redis down')
        return Buffer.alloc(ticketKeyLength, period % 256)
      },
      apply: (key) => applied.push(key.toString('hex').slice(0, 2)),
      log: pino({ level: 'silent' }),
    })
    await rotation.start()
    await new Promise((resolve) => setTimeout(resolve, 450))
    expect(applied.length).toBeGreaterThanOrEqual(3)
    expect(new Set(applied).size).toBe(applied.length)
    failing = true
    const before = applied.length
    await new Promise((resolve) => setTimeout(resolve, 300))
    rotation.stop()
    expect(applied.length).toBe(before)
  })
})
