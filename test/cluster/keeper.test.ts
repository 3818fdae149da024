import { EventEmitter } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { Channel, type Endpoint } from '../../src/cluster/channel.js'
import { SharedAcmeState, SharedRateLimitStore, SharedWebSocketCaps } from '../../src/cluster/clients.js'
import { SharedStateKeeper } from '../../src/cluster/keeper.js'
import type { PrimaryLink, WorkerLink } from '../../src/cluster/protocol.js'
import { CircuitBreaker } from '../../src/stores/breaker.js'
import { MemoryStore } from '../../src/stores/rate-limit-store.js'
import { type OnStoreError, ResilientRateLimitStore } from '../../src/stores/resilient-store.js'

/**
 * Two ends of an IPC pipe inside one process: messages go through JSON, as Node's IPC serialises
 * them, and arrive on a later turn of the event loop. `cut()` is the pipe breaking (a worker gone).
 */
/**
 * `sent` keeps what the worker's end sent; `stall()` holds what the primary sends (a primary too busy
 * to answer in time) until the function it returns is called.
 */
function pipePair(): {
  primaryEnd: Endpoint
  workerEnd: Endpoint
  cut(): void
  sent: unknown[]
  stall(): () => void
} {
  const ends = [new EventEmitter(), new EventEmitter()] as const
  const sent: unknown[] = []
  let held: (() => void)[] | undefined
  const endpoint = (own: EventEmitter, other: EventEmitter, log?: unknown[]): Endpoint => ({
    send(message, callback) {
      const copy: unknown = JSON.parse(JSON.stringify(message))
      log?.push(copy)
      const deliver = () =>
        setImmediate(() => {
          other.emit('message', copy)
          callback?.(null)
        })
      if (held && own === ends[0]) held.push(deliver)
      else deliver()
      return true
    },
    on: ((event: string, listener: (message: unknown) => void) => own.on(event, listener)) as Endpoint['on'],
  })
  return {
    primaryEnd: endpoint(ends[0], ends[1]),
    workerEnd: endpoint(ends[1], ends[0], sent),
    cut: () => {
      for (const end of ends) end.emit('disconnect')
    },
    sent,
    stall: () => {
      held = []
      return () => {
        const late = held ?? []
        held = undefined
        for (const deliver of late) deliver()
      }
    },
  }
}

describe('the state the primary keeps for its workers', () => {
  const keepers: SharedStateKeeper[] = []
  afterEach(() => {
    for (const keeper of keepers.splice(0)) keeper.close()
  })

  /** A keeper with `count` workers joined, each with its own channel to it. */
  function cluster(count: number) {
    const keeper = new SharedStateKeeper()
    keepers.push(keeper)
    const links: {
      primary: PrimaryLink
      toWorker: WorkerLink
      cut(): void
      sent: unknown[]
      stall(): () => void
    }[] = []
    for (let worker = 1; worker <= count; worker++) {
      const pipe = pipePair()
      const toWorker: WorkerLink = new Channel(pipe.primaryEnd)
      const primary: PrimaryLink = new Channel(pipe.workerEnd)
      keeper.serve(worker, toWorker, (tell) => {
        for (const [index, other] of links.entries()) if (index !== worker - 1) tell(other.toWorker)
      })
      links.push({ primary, toWorker, cut: pipe.cut, sent: pipe.sent, stall: pipe.stall })
    }
    return { keeper, links }
  }

  it('counts one rate limit for every worker, and checks a turn’s requests in one message', async () => {
    const { links } = cluster(2)
    const stores = links.map((link) => new SharedRateLimitStore(link.primary, 1000))
    const check = { key: 'ip 192.0.2.1', intervalMs: 60_000, toleranceMs: 5 * 60_000 }
    // Ten requests at once, alternating between the workers: exactly five pass in all.
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, (_, index) => stores[index % 2]?.check([check])),
    )
    expect(outcomes.filter((outcome) => outcome?.[0]?.allowed)).toHaveLength(5)
    // Each worker's five checks of that turn went to the primary as one message.
    const asks = (link: (typeof links)[number]) =>
      link.sent.filter((message) => (message as { kind?: string }).kind === 'rate-limit').length
    expect(links.map(asks)).toEqual([1, 1])
  })

  it('takes WebSocket places under the caps in one step, and gives back what a dead worker held', async () => {
    const { keeper, links } = cluster(2)
    const [one, two] = links.map(
      (link) => new SharedWebSocketCaps(link.primary, 1000, new CircuitBreaker(3, 2000, () => {}), 2),
    )
    const caps = { ip: 3 }
    const places = await Promise.all(
      Array.from({ length: 6 }, (_, index) => (index % 2 ? two : one)?.reserve('chat', '192.0.2.1', caps)),
    )
    expect(places.map((place) => place?.taken)).toEqual([true, true, true, false, false, false])
    expect(places[5]?.live).toEqual({ app: 3, ip: 3 })
    // Another client has its own places; a released one is free again.
    expect((await one?.reserve('chat', '192.0.2.2', caps))?.taken).toBe(true)
    places[0]?.release()
    places[0]?.release() // twice counts once
    await new Promise((resolve) => setImmediate(resolve))
    expect((await two?.reserve('chat', '192.0.2.1', caps))?.taken).toBe(true)
    expect((await two?.reserve('chat', '192.0.2.1', caps))?.taken).toBe(false)
    // Worker 1 exits: its places (one of 192.0.2.1's, 192.0.2.2's) are given back; worker 2's two stay.
    keeper.forget(1)
    const after = await two?.reserve('chat', '192.0.2.1', undefined)
    expect(after?.live).toEqual({ app: 2, ip: 2 })
  })

  it('gives back a place whose answer came after the worker stopped waiting for it', async () => {
    const { links } = cluster(2)
    const breaker = () => new CircuitBreaker(3, 2000, () => undefined)
    const [slow, other] = links.map((link) => new SharedWebSocketCaps(link.primary, 50, breaker(), 2))
    const caps = { ip: 1 }
    const late = links[0]?.stall()
    await expect(slow?.reserve('chat', '192.0.2.1', caps)).rejects.toThrow(/no answer/)
    late?.()
    // The primary took the place for the first worker, then heard it give the place up.
    expect((await other?.reserve('chat', '192.0.2.1', caps))?.taken).toBe(true)
    expect((await other?.reserve('chat', '192.0.2.1', caps))?.taken).toBe(false)
  })

  it('falls back as each limit’s onStoreError says when the primary does not answer in time', async () => {
    const { links } = cluster(1)
    const link = links[0] as (typeof links)[number]
    const store = new ResilientRateLimitStore({
      remote: [
        {
          name: 'primary',
          store: new SharedRateLimitStore(link.primary, 50),
          breaker: () => new CircuitBreaker(3, 60_000, () => undefined),
          share: 1,
        },
      ],
      local: new MemoryStore(),
      localShare: 2,
    })
    const check = (onStoreError: OnStoreError) => ({
      key: 'ip 192.0.2.9',
      intervalMs: 60_000,
      toleranceMs: 4 * 60_000,
      onStoreError,
    })
    const counted = async () => {
      const [outcome] = await store.check([check('local')])
      return typeof outcome === 'object' && outcome.allowed
    }
    try {
      expect(await counted()).toBe(true) // in the primary
      link.stall()
      expect(await store.check([check('allow'), check('deny')])).toEqual(['allow', 'deny'])
      // 4 per window over 2 workers, one of them spent in the primary: one more here.
      expect([await counted(), await counted(), await counted()]).toEqual([true, false, false])
      expect(store.health()).toMatchObject([{ name: 'primary', state: 'open' }])
    } finally {
      store.close()
    }
  })

  it('lets one worker order per name: a lock held is refused to the other, and freed when its holder dies', async () => {
    const { keeper, links } = cluster(2)
    const [one, two] = links.map((link) => new SharedAcmeState(link.primary))
    const lock = await one?.lock('shop', 60_000)
    expect(lock).toBeDefined()
    expect(await two?.lock('shop', 60_000)).toBeUndefined()
    // A challenge answer put by one worker is answered by the other.
    await one?.putChallenge('http-01', 'token-abc', 'key-authorization', 60_000)
    expect(await two?.getChallenge('http-01', 'token-abc')).toBe('key-authorization')
    keeper.forget(1)
    expect(await two?.lock('shop', 60_000)).toBeDefined()
  })

  it('passes the probing worker’s health verdicts to the others and keeps them for workers that join', async () => {
    const { keeper, links } = cluster(2)
    const heard: unknown[] = []
    links[1]?.primary.listen('health', (reports) => heard.push(...reports))
    links[0]?.primary.tell('health', { pool: 'app', origin: 'http://10.0.0.1:80', healthy: false })
    // The verdict crosses two channels: wait for it, as long as a busy machine takes.
    for (let waited = 0; heard.length === 0 && waited < 5000; waited += 10)
      await new Promise((resolve) => setTimeout(resolve, 10))
    expect(heard).toEqual([{ pool: 'app', origin: 'http://10.0.0.1:80', healthy: false }])
    expect(keeper.healthSoFar()).toEqual(heard)
  })

  it('fails an ask when the pipe breaks instead of leaving it waiting', async () => {
    const { links } = cluster(1)
    const link = links[0]
    link?.cut()
    await expect(link?.primary.ask('acme-get', { kind: 'http-01', name: 'x' })).rejects.toThrow(/closed/)
  })
})
