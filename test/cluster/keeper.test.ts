import { EventEmitter } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { Channel, type Endpoint } from '../../src/cluster/channel.js'
import { SharedAcmeState, SharedRateLimitStore, SharedWebSocketCaps } from '../../src/cluster/clients.js'
import { SharedStateKeeper } from '../../src/cluster/keeper.js'
import type { PrimaryLink, WorkerLink } from '../../src/cluster/protocol.js'

/**
 * Two ends of an IPC pipe inside one process: messages go through JSON, as Node's IPC serialises
 * them, and arrive on a later turn of the event loop. `cut()` is the pipe breaking (a worker gone).
 */
/** `sent` keeps what the worker's end sent. */
function pipePair(): { primaryEnd: Endpoint; workerEnd: Endpoint; cut(): void; sent: unknown[] } {
  const ends = [new EventEmitter(), new EventEmitter()] as const
  const sent: unknown[] = []
  const endpoint = (own: EventEmitter, other: EventEmitter, log?: unknown[]): Endpoint => ({
    send(message, callback) {
      const copy: unknown = JSON.parse(JSON.stringify(message))
      log?.push(copy)
      setImmediate(() => {
        other.emit('message', copy)
        callback?.(null)
      })
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
    const links: { primary: PrimaryLink; toWorker: WorkerLink; cut(): void; sent: unknown[] }[] = []
    for (let worker = 1; worker <= count; worker++) {
      const pipe = pipePair()
      const toWorker: WorkerLink = new Channel(pipe.primaryEnd)
      const primary: PrimaryLink = new Channel(pipe.workerEnd)
      keeper.serve(worker, toWorker, (tell) => {
        for (const [index, other] of links.entries()) if (index !== worker - 1) tell(other.toWorker)
      })
      links.push({ primary, toWorker, cut: pipe.cut, sent: pipe.sent })
    }
    return { keeper, links }
  }

  it('counts one rate limit for every worker, and checks a turn’s requests in one message', async () => {
    const { links } = cluster(2)
    const stores = links.map((link) => new SharedRateLimitStore(link.primary))
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
    const [one, two] = links.map((link) => new SharedWebSocketCaps(link.primary))
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
    await new Promise((resolve) => setTimeout(resolve, 20))
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
