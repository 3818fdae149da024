import { Agent, request } from 'node:http'
import { describe, expect, it } from 'vitest'
import { gcra } from '../../src/stores/rate-limit-store.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, startGateway, stoppedAfterEach, timeoutScale } from '../support/gateway.js'
import { eventually, startSentinelGroup } from '../support/redis.js'
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
        startGateway({ policies, args: ['--redis', group.url, '--replicas', '2', '--redis-timeout', '2s'] }),
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
})
