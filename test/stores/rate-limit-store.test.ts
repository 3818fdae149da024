import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CircuitBreaker } from '../../src/stores/breaker.js'
import { gcra, type LimitCheck, MemoryStore } from '../../src/stores/rate-limit-store.js'
import { connectRedis, type RedisClient, whenReady } from '../../src/stores/redis.js'
import { RedisRateLimitStore, rateLimitCommand } from '../../src/stores/redis-rate-limit.js'
import {
  type OnStoreError,
  type ResilientCheck,
  ResilientRateLimitStore,
} from '../../src/stores/resilient-store.js'
import { hashSlot } from '../../src/stores/slots.js'
import { eventually, type RedisServer, startRedis, startRedisCluster } from '../support/redis.js'

const perSecond = (key: string, limit: number, burst = limit): LimitCheck => ({
  key,
  intervalMs: 1000 / limit,
  toleranceMs: burst * (1000 / limit),
})

/** Against a real clock: an hour-scale rate cannot refill between two checks of one test, however slow CI is. */
const perHour = (key: string, limit: number, burst = limit): LimitCheck => ({
  key,
  intervalMs: 3_600_000 / limit,
  toleranceMs: burst * (3_600_000 / limit),
})

describe('GCRA', () => {
  it('admits the burst at once, then one request per interval', () => {
    const store = new MemoryStore()
    const check = perSecond('k', 4)
    const at = (now: number) => store.checkNow([check], now)[0]
    expect([0, 0, 0, 0, 0].map(() => at(1000)?.allowed)).toEqual([true, true, true, true, false])
    expect(at(1100)?.allowed).toBe(false)
    expect(at(1250)?.allowed).toBe(true) // one interval (250 ms) later
    expect(at(1250)?.allowed).toBe(false)
    store.close()
  })

  it('reports remaining, retry and reset honestly', () => {
    const check = perSecond('k', 2)
    expect(gcra(check, undefined, 0).outcome).toEqual({
      allowed: true,
      remaining: 1,
      retryAfterMs: 0,
      resetMs: 500,
    })
    expect(gcra(check, 500, 0).outcome).toEqual({
      allowed: true,
      remaining: 0,
      retryAfterMs: 0,
      resetMs: 1000,
    })
    expect(gcra(check, 1000, 0).outcome).toEqual({
      allowed: false,
      remaining: 0,
      retryAfterMs: 500,
      resetMs: 1000,
    })
  })

  it('never admits more than burst + elapsed / interval', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 300 }),
        (limit, gaps) => {
          const store = new MemoryStore()
          const check = perSecond('k', limit)
          let now = 0
          let admitted = 0
          for (const gap of gaps) {
            now += gap
            if (store.checkNow([check], now)[0]?.allowed) admitted += 1
          }
          store.close()
          expect(admitted).toBeLessThanOrEqual(limit + Math.floor(now / check.intervalMs))
        },
      ),
      { numRuns: 300 },
    )
  })

  it('spends nothing when one of several limits refuses', () => {
    const store = new MemoryStore()
    const loose = perSecond('loose', 100)
    const tight = perSecond('tight', 1)
    expect(store.checkNow([loose, tight], 0).map((o) => o.allowed)).toEqual([true, true])
    expect(store.checkNow([loose, tight], 0).map((o) => o.allowed)).toEqual([false, false])
    expect(store.checkNow([loose], 0)[0]?.remaining).toBe(98)
    store.close()
  })

  it('caps the number of keys it keeps', () => {
    const store = new MemoryStore(10)
    for (let index = 0; index < 50; index++) store.checkNow([perSecond(`k${index}`, 1)], 0)
    expect(store.size).toBe(10)
    expect(store.overflowBuckets).toBe(1)
    store.close()
  })

  it('never hands out budget: a flood of fresh keys neither resets a spent key nor escapes its limit', () => {
    const store = new MemoryStore(1000)
    const victim = perSecond('victim', 3)
    for (let index = 0; index < 3; index++) expect(store.checkNow([victim], 0)[0]?.allowed).toBe(true)
    expect(store.checkNow([victim], 0)[0]?.allowed).toBe(false)
    // 150 times the cap in random keys, each at the same rate as the victim's rule.
    let admittedFlood = 0
    for (let index = 0; index < 150_000; index++) {
      if (store.checkNow([perSecond(`flood-${index}`, 3)], 1)[0]?.allowed) admittedFlood += 1
    }
    expect(store.size).toBeLessThanOrEqual(1000)
    expect(store.checkNow([victim], 2)[0]?.allowed).toBe(false)
    // 999 keys fit beside the victim; the rest share one budget: three at once, like any one client.
    expect(admittedFlood).toBe(999 + 3)
    store.close()
  })

  it('starts a key from the TAT another store told, and keeps it even when it refuses', () => {
    const store = new MemoryStore()
    // 4 per second: 250 ms apart, 1000 ms of burst. Told 500 ms spent: two more now, not four.
    expect(store.checkNow([{ ...perSecond('told', 4), knownTat: 500 }], 0)[0]).toMatchObject({
      allowed: true,
      remaining: 1,
    })
    expect(store.checkNow([perSecond('told', 4)], 0)[0]?.allowed).toBe(true)
    expect(store.checkNow([perSecond('told', 4)], 0)[0]?.allowed).toBe(false)
    // Told all spent: refused, and still spent for a check that tells nothing.
    expect(store.checkNow([{ ...perSecond('spent', 4), knownTat: 1000 }], 0)[0]?.allowed).toBe(false)
    expect(store.checkNow([perSecond('spent', 4)], 0)[0]?.allowed).toBe(false)
    // Told less than it knows: nothing changes.
    expect(store.checkNow([{ ...perSecond('told', 4), knownTat: 100 }], 250)[0]?.allowed).toBe(true)
    expect(store.checkNow([perSecond('told', 4)], 250)[0]?.allowed).toBe(false)
    store.close()
  })

  it('forgets keys whose budget is full again to make room, and only those', () => {
    const store = new MemoryStore(2)
    const spent = perSecond('spent', 1)
    const idle = perSecond('idle', 1)
    store.checkNow([spent], 0)
    store.checkNow([idle], 0)
    // At 1000 ms both budgets are whole again: a new key takes a place of its own.
    expect(store.checkNow([perSecond('new', 1)], 1000)[0]?.allowed).toBe(true)
    expect(store.overflowBuckets).toBe(0)
    store.checkNow([spent], 1000)
    // Now `spent` and `new` are live: a third key waits in the overflow bucket.
    expect(store.checkNow([perSecond('third', 1)], 1001)[0]?.allowed).toBe(true)
    expect(store.checkNow([perSecond('fourth', 1)], 1001)[0]?.allowed).toBe(false)
    expect(store.checkNow([spent], 1001)[0]?.allowed).toBe(false)
    store.close()
  })
})

describe('circuit breaker', () => {
  it('opens after repeated failures, tries again after the cool-down, and closes on success', () => {
    const changes: string[] = []
    const breaker = new CircuitBreaker(3, 1000, (state) => changes.push(state))
    breaker.failed(new Error('x'), 0)
    breaker.failed(new Error('x'), 0)
    expect(breaker.allows(0)).toBe(true)
    breaker.failed(new Error('x'), 0)
    expect(breaker.allows(500)).toBe(false)
    expect(breaker.allows(1000)).toBe(true) // the one trial
    expect(breaker.allows(1000)).toBe(false)
    breaker.failed(new Error('x'), 1000)
    expect(breaker.allows(1500)).toBe(false)
    expect(breaker.allows(2000)).toBe(true)
    breaker.succeeded()
    expect(breaker.allows(2000)).toBe(true)
    expect(changes).toEqual(['open', 'half-open', 'open', 'half-open', 'closed'])
  })
})

describe('Redis store (real redis-server)', () => {
  let redis: RedisServer
  let client: RedisClient
  let store: RedisRateLimitStore

  beforeAll(async () => {
    redis = await startRedis()
    client = connectRedis(redis.url, 1000)
    await new Promise((resolve) => client.once('ready', resolve))
    store = new RedisRateLimitStore(client)
  })

  afterAll(async () => {
    client?.disconnect()
    await redis?.stop()
  })

  it('agrees with the in-memory GCRA on a burst', async () => {
    const check = perHour('pcl:test:{a}:burst', 1, 3)
    const outcomes = []
    for (let index = 0; index < 4; index++) outcomes.push((await store.check([check]))[0])
    expect(outcomes.map((outcome) => outcome?.allowed)).toEqual([true, true, true, false])
    expect(outcomes.map((outcome) => outcome?.remaining)).toEqual([2, 1, 0, 0])
    expect(outcomes[3]?.retryAfterMs).toBeGreaterThan(3_500_000)
    expect(outcomes[3]?.retryAfterMs).toBeLessThanOrEqual(3_600_000)
  })

  it('checks requests batched in one event-loop turn one after the other', async () => {
    const single = perHour('pcl:test:{c}:single', 1)
    const outcomes = await Promise.all([
      store.check([single]),
      store.check([single]),
      store.check([perHour('pcl:test:{c}:other', 1)]),
    ])
    expect(outcomes.map(([outcome]) => outcome?.allowed)).toEqual([true, false, true])
  })

  it('keeps every digit of the stored timestamp: calls that Redis runs back to back spend a burst exactly', async () => {
    // Two replicas' calls can run microseconds apart. A timestamp stored rounded up by even 0.05 ms
    // would refuse the second one. Whether it rounds up depends on the clock's microseconds: 40 bursts,
    // each a pipeline of two calls at its own time, catch it unless the value is stored exactly.
    for (let burst = 0; burst < 40; burst++) {
      const { key, intervalMs, toleranceMs } = perHour(`pcl:test:{d${burst}}:burst`, 2, 2)
      const call = [rateLimitCommand, 1, key, `1 ${intervalMs} ${toleranceMs}`]
      const replies = (await client.pipeline([call, call]).exec()) ?? []
      expect(
        replies.map(([, reply]) => (reply as number[])[0]),
        `burst ${burst}`,
      ).toEqual([1, 1])
    }
  })

  it('reads and writes a key once per call, however many requests of the batch share it', async () => {
    await redis.cli('config', 'resetstat')
    const shared = perHour('pcl:test:{e}:shared', 100)
    const outcomes = await Promise.all([1, 2, 3, 4, 5].map(() => store.check([shared])))
    expect(outcomes.map(([outcome]) => outcome?.remaining)).toEqual([99, 98, 97, 96, 95])
    const stats = await redis.cli('info', 'commandstats')
    expect(stats).toMatch(/cmdstat_evalsha:calls=1,/)
    expect(stats).toMatch(/cmdstat_get:calls=1,/)
    expect(stats).toMatch(/cmdstat_psetex:calls=1,/)
  })

  it('starts a key from a known TAT, and keeps it even when it refuses', async () => {
    const { intervalMs, toleranceMs } = perHour('', 10)
    const now = Date.now()
    const told = 'pcl:test:{f}:told'
    expect(
      (await store.check([{ key: told, intervalMs, toleranceMs, knownTat: now + 5 * intervalMs }]))[0],
    ).toMatchObject({
      allowed: true,
      remaining: 4,
    })
    // A known TAT behind what Redis holds changes nothing.
    expect((await store.check([{ key: told, intervalMs, toleranceMs, knownTat: now }]))[0]?.remaining).toBe(3)
    const spent = 'pcl:test:{f}:spent'
    expect(
      (await store.check([{ key: spent, intervalMs, toleranceMs, knownTat: now + toleranceMs }]))[0]?.allowed,
    ).toBe(false)
    expect((await store.check([{ key: spent, intervalMs, toleranceMs }]))[0]?.allowed).toBe(false)
  })

  it('is all-or-nothing across the keys of one call, and every key expires', async () => {
    const loose = perHour('pcl:test:{b}:loose', 100)
    const tight = perHour('pcl:test:{b}:tight', 1)
    expect((await store.check([loose, tight])).map((o) => o.allowed)).toEqual([true, true])
    expect((await store.check([loose, tight])).map((o) => o.allowed)).toEqual([false, false])
    expect((await store.check([loose]))[0]?.remaining).toBe(98)
    const ttl = Number(await redis.cli('pttl', 'pcl:test:{b}:tight'))
    expect(ttl).toBeGreaterThan(0)
    expect(ttl).toBeLessThanOrEqual(3_600_000)
  })
})

describe('resilient store: Redis behind a breaker, each limit with its fallback', () => {
  it('counts in Redis, and while it is down each limit falls back as it says (local at 1/replicas)', async () => {
    const redis = await startRedis()
    const client = connectRedis(redis.url, 200)
    const local = new MemoryStore()
    const store = new ResilientRateLimitStore({
      remote: [
        {
          name: 'redis',
          store: new RedisRateLimitStore(client),
          breaker: () => new CircuitBreaker(1, 60_000, () => undefined),
          share: 1,
        },
      ],
      local,
      localShare: 2,
    })
    try {
      await new Promise((resolve) => client.once('ready', resolve))
      const check = (key: string, onStoreError: OnStoreError) => ({ ...perHour(key, 4), onStoreError })
      const shared = await store.check([check('pcl:test:{r}:up', 'local')])
      expect(shared[0]).toMatchObject({ allowed: true, remaining: 3 })
      expect(await redis.cli('exists', 'pcl:test:{r}:up')).toBe('1')

      await redis.stop()
      const during = []
      for (let index = 0; index < 3; index++) {
        during.push(
          await store.check([
            check('pcl:test:{r}:local', 'local'),
            check('pcl:test:{r}:open', 'allow'),
            check('pcl:test:{r}:closed', 'deny'),
          ]),
        )
      }
      // A limit of 4 over 2 replicas: 2 here; the others answer as their onStoreError says.
      expect(during.map(([counted]) => typeof counted === 'object' && counted.allowed)).toEqual([
        true,
        true,
        false,
      ])
      expect(during.map(([, open, closed]) => [open, closed])).toEqual(Array(3).fill(['allow', 'deny']))
      expect(store.breakerState).toBe('open')
    } finally {
      client.disconnect()
      store.close()
      await redis.stop()
    }
  })
})

describe('Redis store on a Cluster (three real masters)', () => {
  it('answers a turn of calls on keys of every master, each from the master of its keys', async () => {
    const cluster = await startRedisCluster()
    const client = connectRedis(cluster.url, 2000, [rateLimitCommand])
    try {
      expect(await whenReady(client, 5000)).toBe(true)
      const store = new RedisRateLimitStore(client, 2000)
      const tags = Array.from({ length: 30 }, (_, index) => `pcl:test:{cluster-${index}}`)
      // Per tag, in one turn: one key, then that key with another of its slot (one call each); and
      // a call of more keys than the script has fixed-count commands for.
      const many = Array.from({ length: 17 }, (_, index) => perHour(`pcl:test:{cluster-many}:${index}`, 1))
      const [manyOutcomes, ...outcomes] = await Promise.all([
        store.check(many),
        ...tags.flatMap((tag) => [
          store.check([perHour(`${tag}:a`, 1)]),
          store.check([perHour(`${tag}:a`, 1), perHour(`${tag}:b`, 1)]),
        ]),
      ])
      expect(outcomes.map((each) => each.map((outcome) => outcome.allowed))).toEqual(
        tags.flatMap(() => [[true], [false, false]]),
      )
      expect(manyOutcomes?.every((outcome) => outcome.allowed)).toBe(true)
      const sizes = await Promise.all(cluster.nodes.map(async (node) => Number(await node.cli('dbsize'))))
      expect(sizes.every((size) => size > 0)).toBe(true)
    } finally {
      client.disconnect()
      await cluster.stop()
    }
  })
})

describe('Redis Cluster hash slots', () => {
  it('agree with the slot Redis computes, hash tags and UTF-8 included', async () => {
    const directory = await mkdtemp(path.join(tmpdir(), 'pcl-slots-'))
    const redis = await startRedis([
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      path.join(directory, 'nodes.conf'),
    ])
    const client = connectRedis(redis.url, 1000)
    try {
      await whenReady(client, 5000)
      const keys = [
        'pcl:rl:{api:ip:127.0.0.1}:per-ip',
        'pcl:rl:{api:h:n4bQgYhMfWWaL-qgxVrQFa}:per-key',
        'no tag at all',
        '{}empty tag',
        'only {open',
        'close} then {tag}',
        '{a}{b}',
        'pcl:rl:{shop:j:été}:per-user',
        '{日本}',
        '',
      ]
      for (const key of keys) expect(hashSlot(key), key).toBe(await client.call('cluster', 'keyslot', key))
    } finally {
      client.disconnect()
      await redis.stop()
    }
  })
})

describe('a fallback that starts from what Redis said', () => {
  const stopped: { stop(): Promise<unknown> }[] = []
  afterAll(async () => {
    for (const each of stopped.splice(0)) await each.stop()
  })

  /** A replica's store in front of Redis; its breaker opens at the first failure and retries at once. */
  function replica(client: RedisClient, replicas: number): ResilientRateLimitStore {
    const store = new ResilientRateLimitStore({
      remote: [
        {
          name: 'redis',
          store: new RedisRateLimitStore(client, 500),
          breaker: () => new CircuitBreaker(1, 0, () => undefined),
          share: 1,
        },
      ],
      local: new MemoryStore(),
      localShare: replicas,
    })
    stopped.push({ stop: async () => store.close() })
    return store
  }

  async function connected(redis: RedisServer): Promise<RedisClient> {
    const client = connectRedis(redis.url, 200)
    client.on('error', () => {})
    stopped.push({ stop: async () => client.disconnect() })
    await whenReady(client, 5000)
    return client
  }

  const admitted = async (store: ResilientRateLimitStore, check: ResilientCheck, times: number) => {
    let count = 0
    for (let index = 0; index < times; index++) {
      const [outcome] = await store.check([check])
      if (typeof outcome === 'object' && outcome.allowed) count++
    }
    return count
  }

  it('three replicas falling back together admit what was left of the budget, not a fresh one each', async () => {
    const redis = await startRedis()
    stopped.push(redis)
    const stores = await Promise.all([0, 1, 2].map(async () => replica(await connected(redis), 3)))
    const check: ResilientCheck = { ...perHour('pcl:test:{t}:shared', 30), onStoreError: 'local' }
    for (let index = 0; index < 12; index++)
      await (stores[index % 3] as ResilientRateLimitStore).check([check])
    await redis.stop()
    let during = 0
    for (const store of stores) during += await admitted(store, check, 30)
    // 30 - 12: each replica counts 1/3 of the limit from the TAT it last heard of.
    expect(during).toBe(18)
    expect(stores.map((store) => store.breakerState)).toEqual(['open', 'open', 'open'])
  })

  it('hands what it counted back to Redis once Redis answers again, even one that lost its data', async () => {
    const redis = await startRedis()
    stopped.push(redis)
    const store = replica(await connected(redis), 1)
    const check: ResilientCheck = { ...perHour('pcl:test:{u}:carried', 10), onStoreError: 'local' }
    expect(await admitted(store, check, 5)).toBe(5)
    await redis.stop()
    expect(await admitted(store, check, 3)).toBe(3)
    await redis.start() // empty: it kept nothing
    const probe: ResilientCheck = { ...perHour('pcl:test:{u}:probe', 1000), onStoreError: 'local' }
    await eventually('Redis answers again', async () => {
      await store.check([probe])
      return store.breakerState === 'closed'
    })
    expect(await admitted(store, check, 10)).toBe(2)
    expect(Number(await redis.cli('pttl', 'pcl:test:{u}:carried'))).toBeGreaterThan(0)
  })
})
