import { createHash } from 'node:crypto'
import { Agent, request } from 'node:http'
import { describe, expect, it } from 'vitest'
import { gcra } from '../../src/stores/rate-limit-store.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway, stoppedAfterEach, timeoutScale } from '../support/gateway.js'
import { eventually, startRedisCluster, startSentinelGroup } from '../support/redis.js'
import { echoUpstream } from '../support/upstreams.js'

/**
 * Rate limits hammered through a real failover of their Redis. "Exact" is what one store counting
 * without a fault would have admitted over the same timeline: GCRA run over the times the requests
 * were sent (and, since Redis decided somewhere between, over the times they were answered).
 */
const limit = 100
const windowMs = 60_000
const unreachable = 'rate limit store unreachable: rules fall back to their onStoreError'

interface Lane {
  gateway: RunningGateway
  path: string
  headers?: Record<string, string>
}

interface Answered {
  lane: number
  sentAt: number
  answeredAt: number
  status: number
}

/** One loop per lane, each sending a request after another on a keep-alive connection, until stopped. */
function hammer(lanes: Lane[]) {
  const answers: Answered[] = []
  const waiters: { done: () => boolean; resolve: () => void }[] = []
  let stopping = false
  const heard = () => {
    for (const waiter of [...waiters]) {
      if (!waiter.done()) continue
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve()
    }
  }
  const send = (lane: Lane, agent: Agent) =>
    new Promise<number>((resolve, reject) => {
      const sent = request(
        {
          host: '127.0.0.1',
          port: lane.gateway.ports.http,
          path: lane.path,
          headers: { host: 'api.test', ...lane.headers },
          agent,
          timeout: 10_000 * timeoutScale,
        },
        (response) => {
          response.resume()
          response.on('end', () => resolve(response.statusCode ?? 0))
        },
      )
      sent.on('timeout', () => sent.destroy(new Error('client timeout')))
      sent.on('error', reject)
      sent.end()
    })
  const loops = lanes.map(async (lane, index) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    try {
      while (!stopping) {
        const sentAt = Date.now()
        const status = await send(lane, agent)
        answers.push({ lane: index, sentAt, answeredAt: Date.now(), status })
        heard()
      }
    } finally {
      agent.destroy()
    }
  })
  const until = (what: string, done: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      if (done()) return resolve()
      const timer = setTimeout(
        () => reject(new Error(`load: ${what} not within time`)),
        60_000 * timeoutScale,
      )
      waiters.push({
        done,
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
      })
    })
  const of = (lanes: number[]) => answers.filter((answer) => lanes.includes(answer.lane))
  return {
    answers,
    of,
    /** Resolves once `count` requests of these lanes were admitted. */
    admitted: (count: number, lanes: number[]) =>
      until(`${count} admitted`, () => of(lanes).filter((answer) => answer.status === 200).length >= count),
    /** Resolves once `count` more requests (of any lane) were answered. */
    answered: (count: number) => {
      const target = answers.length + count
      return until(`${count} more answered`, () => answers.length >= target)
    },
    stop: async () => {
      stopping = true
      await Promise.all(loops)
    },
  }
}

/** What one store counting without fault admits of these requests: [by send times, by answer times]. */
function exactly(answers: Answered[]): [number, number] {
  const check = { key: 'k', intervalMs: windowMs / limit, toleranceMs: windowMs }
  const admitted = (times: number[]) => {
    let tat: number | undefined
    let count = 0
    for (const at of times.sort((a, b) => a - b)) {
      const step = gcra(check, tat, at)
      tat = step.tat
      if (step.outcome.allowed) count++
    }
    return count
  }
  return [admitted(answers.map((a) => a.sentAt)), admitted(answers.map((a) => a.answeredAt))]
}

/** Admitted requests and how far above exact counting that is (0 when within it). */
function judged(answers: Answered[]): { admitted: number; exact: [number, number]; over: number } {
  const admitted = answers.filter((answer) => answer.status === 200).length
  const exact = exactly(answers)
  return { admitted, exact, over: Math.max(0, admitted - Math.max(...exact)) }
}

function policy(target: string, rules: string[]): Record<string, string> {
  return {
    'api.yaml': [
      'app: api',
      'hosts: [api.test]',
      'tls: { mode: "off" }',
      `upstream: { targets: ["${target}"] }`,
      'rateLimits:',
      ...rules.map((rule) => `  - ${rule}`),
    ].join('\n'),
  }
}

/** Waits until the gateway counts in Redis again: /health shows every breaker closed. */
async function countsInRedis(gateway: RunningGateway): Promise<void> {
  await eventually(
    'the store is healthy again',
    async () => {
      const health = await fetchOnce('http://127.0.0.1/health', { port: gateway.ports.admin })
      return health.json<{ checks: { redis: { status: string } } }>().checks.redis.status === 'pass'
    },
    30_000,
  )
}

/** The Redis key of a header-keyed rule, as the guard names it. */
function headerKey(rule: string, value: string): string {
  return `pcl:rl:{api:h:${createHash('sha256').update(value).digest('base64url').slice(0, 22)}}:${rule}`
}

describe('rate limits through a failover of their Redis', { timeout: 150_000 * timeoutScale }, () => {
  const running = stoppedAfterEach()

  async function upstream(): Promise<string> {
    const echo = await echoUpstream()
    running.push({ stop: () => echo.close() })
    return echo.url
  }

  it('Sentinel: two replicas admit within 10% of exact counting while the replica is promoted', async () => {
    const group = await startSentinelGroup()
    running.push(group)
    const policies = policy(await upstream(), [`{ name: per-ip, limit: ${limit}, window: 1m }`])
    const gateways = await Promise.all(
      [0, 1].map(() =>
        startGateway({
          policies,
          args: ['--redis', group.url, '--replicas', '2', '--redis-timeout', `${2000 * timeoutScale}ms`],
        }),
      ),
    )
    running.push(...gateways)
    const lanes = gateways.flatMap((gateway) => [0, 1].map(() => ({ gateway, path: '/' })))
    const load = hammer(lanes)
    running.push(load)
    const all = lanes.map((_, index) => index)
    // Half the burst spent, then the master dies: the rest of it, and the refill, is all there is.
    await load.admitted(limit / 2, all)
    await group.master.stop()
    await Promise.all(
      gateways.map((gateway) => gateway.waitForLog((line) => line.msg === unreachable, 30_000)),
    )
    await group.promoted()
    await Promise.all(gateways.map(countsInRedis))
    // Counted in Redis again for a while: what the fallback admitted must not be admitted twice.
    await load.answered(300)
    await load.stop()
    const result = judged(load.answers)
    console.log('Sentinel failover, 2 replicas, limit 100/min:', JSON.stringify(result))
    expect(result.over).toBeLessThanOrEqual(limit / 10)
  })

  it('Cluster: a killed master touches only its own keys, which stay within 10%; the others stay exact; no refusal without a fault', async () => {
    // Without full coverage required, the other masters keep serving until the replica takes over.
    const cluster = await startRedisCluster({ replicas: 1, fullCoverage: false })
    running.push(cluster)
    const policies = policy(await upstream(), [
      `{ name: counted, key: "header:x-api-key", limit: ${limit}, window: 1m, match: { path: /counted } }`,
      `{ name: strict, key: "header:x-api-key", limit: ${limit}, window: 1m, onStoreError: deny, match: { path: /strict } }`,
    ])
    // One API key per master: the first one's master is killed.
    const masters = cluster.nodes.slice(0, 3)
    const apiKeys: string[] = []
    for (let candidate = 0; apiKeys.length < 3; candidate++) {
      const owner = await cluster.masterOf(headerKey('counted', `key-${candidate}`))
      if (owner === masters[apiKeys.length]) apiKeys.push(`key-${candidate}`)
    }
    const [onDead = '', onLive = '', onLiveStrict = ''] = apiKeys
    const gateway = await startGateway({
      policies,
      args: ['--redis', cluster.url, '--redis-timeout', `${1000 * timeoutScale}ms`],
    })
    running.push(gateway)

    // At once, while the client's connections to the masters are still new: 90 requests of 30 clients.
    const startUp = await Promise.all(
      Array.from({ length: 90 }, (_, index) =>
        fetchOnce('http://api.test/strict', {
          port: gateway.ports.http,
          headers: { 'x-api-key': `client-${index % 30}` },
        }).then((answer) => answer.status),
      ),
    )

    // Four lanes on the master to kill: three calls fail at once when it dies, and its breaker opens
    // well before a replica takes over. Two on each of the others.
    const lane = (apiKey: string, path: string) => ({ gateway, path, headers: { 'x-api-key': apiKey } })
    const lanes = [
      ...[0, 1, 2, 3].map(() => lane(onDead, '/counted')),
      ...[0, 1].map(() => lane(onLive, '/counted')),
      ...[0, 1].map(() => lane(onLiveStrict, '/strict')),
    ]
    const [onDeadLanes, onLiveLanes, onLiveStrictLanes] = [
      [0, 1, 2, 3],
      [4, 5],
      [6, 7],
    ]
    const load = hammer(lanes)
    running.push(load)
    await load.admitted(limit / 2, onDeadLanes)
    const dead = masters[0]
    if (!dead) throw new Error('no master')
    await dead.stop()
    const deadNode = `127.0.0.1:${dead.port}`
    await gateway.waitForLog((line) => line.msg === unreachable && line.node === deadNode, 30_000)
    const heir = await cluster.failedOver(dead)
    // The gateway counts the dead master's keys on its heir: the script runs there (a replica only
    // ever ran the writes it replicated).
    await eventually('the gateway counts on the promoted replica', async () =>
      /cmdstat_eval(sha)?:calls=[1-9]/.test(await heir.cli('info', 'commandstats')),
    )
    await load.answered(300)
    await load.stop()

    const [killed, live, liveStrict] = [onDeadLanes, onLiveLanes, onLiveStrictLanes].map((lanes) =>
      judged(load.of(lanes)),
    )
    console.log(
      'Cluster master failover, limit 100/min:',
      JSON.stringify({
        killed,
        live,
        liveStrict,
        refusedStrict: load.of(onLiveStrictLanes).filter((a) => a.status === 503).length,
      }),
    )
    expect(startUp.filter((status) => status !== 200)).toEqual([])
    expect(killed?.over).toBeLessThanOrEqual(limit / 10)
    for (const healthy of [live, liveStrict]) {
      const [bySent = 0, byAnswered = 0] = healthy?.exact ?? []
      expect(healthy?.admitted).toBeGreaterThanOrEqual(Math.min(bySent, byAnswered) - 1)
      expect(healthy?.admitted).toBeLessThanOrEqual(Math.max(bySent, byAnswered) + 1)
    }
    // While the dead master's breaker was open, a rule that refuses without its store (deny) on
    // another master kept being counted there; no other master's breaker opened.
    expect(
      load.of(onLiveStrictLanes).filter((answer) => answer.status !== 200 && answer.status !== 429),
    ).toEqual([])
    const opened = gateway.logs.filter((line) => line.msg === unreachable)
    expect(opened.map((line) => line.node)).toEqual(opened.map(() => deadNode))
  })
})
