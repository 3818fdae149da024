import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { makePolicyDir, type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { type RedisServer, startRedis, startRedisCluster, startSentinel } from '../support/redis.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

function app(name: string, target: string, rules: string, extra = ''): string {
  return `app: ${name}\nhosts: [${name}.test]\nupstream: { targets: ["${target}"] }\ntls: { mode: "off" }\n${extra}rateLimits:\n${rules}`
}

async function statuses(
  gateways: RunningGateway[],
  count: number,
  request: (index: number) => {
    host: string
    path?: string
    headers?: Record<string, string>
    from?: string
  },
): Promise<number[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const { host, path = '/', headers, from } = request(index)
      const gateway = gateways[index % gateways.length] as RunningGateway
      const answer = await fetchOnce(`http://${host}${path}`, {
        port: gateway.ports.http,
        ...(headers ? { headers } : {}),
        ...(from ? { localAddress: from } : {}),
      })
      return answer.status
    }),
  )
}

const count = (values: number[], value: number) => values.filter((entry) => entry === value).length

describe('rate limits shared through Redis', () => {
  let redis: RedisServer
  let echo: Upstream
  let gateways: RunningGateway[] = []

  beforeAll(async () => {
    ;[redis, echo] = await Promise.all([startRedis(), echoUpstream()])
    const policies = {
      'exact.yaml': app('exact', echo.url, '  - { name: per-ip, limit: 30, window: 10m }\n'),
      'direct.yaml': app('direct', echo.url, '  - { name: per-ip, limit: 3, window: 10m }\n'),
      'behind.yaml': app(
        'behind',
        echo.url,
        '  - { name: per-ip, limit: 3, window: 10m }\n',
        'clientIp: { trustedProxies: [127.0.0.1] }\n',
      ),
      'keyed.yaml': app(
        'keyed',
        echo.url,
        '  - { name: per-key, key: "header:x-api-key", limit: 2, window: 10m, legacyHeaders: true }\n  - { name: per-ip, limit: 3, window: 10m }\n',
      ),
    }
    // Three gateways, 150 clients and Redis share two cores: a generous command timeout keeps a busy event
    // loop from timing out answers that did arrive (the outage test below uses a short one).
    gateways = await Promise.all(
      [0, 1, 2].map(() => startGateway({ policies, args: ['--redis', redis.url, '--redis-timeout', '2s'] })),
    )
  })

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()))
    await Promise.all([redis?.stop(), echo?.close()])
  })

  /** Log lines about Redis trouble, shown when an assertion fails. */
  const fallbacks = () =>
    JSON.stringify(
      gateways.flatMap((gateway) =>
        gateway.logs.filter((line) => /rate limit store|Redis/.test(String(line.msg))),
      ),
    )

  it('admits exactly the limit across 3 gateway processes under concurrent load', async () => {
    const results = await statuses(gateways, 150, () => ({ host: 'exact.test' }))
    expect(count(results, 200)).toBe(30)
    expect(count(results, 429)).toBe(120)
    const fellBack = gateways.some((gateway) =>
      gateway.logs.some(
        (line) => line.msg === 'rate limit store unreachable: rules fall back to their onStoreError',
      ),
    )
    expect(fellBack).toBe(false)
  })

  it('a spoofed X-Forwarded-For from an untrusted peer neither earns a fresh budget nor drains another client’s', async () => {
    const spoofed = await statuses(gateways, 10, (index) => ({
      host: 'direct.test',
      headers: { 'x-forwarded-for': `198.51.100.${index}` },
    }))
    expect([...spoofed].sort(), fallbacks()).toEqual([200, 200, 200, 429, 429, 429, 429, 429, 429, 429])
    const victim = await statuses(gateways, 3, () => ({ host: 'direct.test', from: '127.0.0.3' }))
    expect(victim).toEqual([200, 200, 200])
  })

  it('groups IPv6 clients by /64 behind a trusted proxy', async () => {
    const sameNetwork = await statuses(gateways.slice(0, 1), 6, (index) => ({
      host: 'behind.test',
      headers: { 'x-forwarded-for': `2001:db8:1:1::${index + 1}` },
    }))
    expect([...sameNetwork].sort(), fallbacks()).toEqual([200, 200, 200, 429, 429, 429])
    const otherNetwork = await statuses(gateways.slice(0, 1), 3, () => ({
      host: 'behind.test',
      headers: { 'x-forwarded-for': '2001:db8:1:2::1' },
    }))
    expect(otherNetwork).toEqual([200, 200, 200])
  })

  it('sends headers that match the remaining budget, and names the rule in the 429', async () => {
    const seen: { status: number; ratelimit?: string; legacy?: string; retry?: string; body: string }[] = []
    for (let index = 0; index < 3; index++) {
      const answer = await fetchOnce('http://keyed.test/', {
        port: (gateways[index] as RunningGateway).ports.http,
        headers: { 'x-api-key': 'key-one' },
      })
      seen.push({
        status: answer.status,
        ratelimit: answer.headers.ratelimit as string | undefined,
        legacy: answer.headers['x-ratelimit-remaining'] as string | undefined,
        retry: answer.headers['retry-after'] as string | undefined,
        body: answer.body,
      })
    }
    expect(seen.map((entry) => entry.status)).toEqual([200, 200, 429])
    expect(seen[0]?.ratelimit).toMatch(/^"per-key";r=1;t=\d+, "per-ip";r=2;t=\d+$/)
    expect(seen[0]?.legacy).toBe('1')
    expect(seen[1]?.ratelimit).toMatch(/^"per-key";r=0;t=\d+, "per-ip";r=1;t=\d+$/)
    expect(Number(seen[2]?.retry)).toBeGreaterThan(0)
    expect(JSON.parse(seen[2]?.body ?? '{}')).toMatchObject({ error: { code: 'PCL_RATE_LIMITED' } })
    const line = await (gateways[2] as RunningGateway).waitForLog(
      (entry) => entry.code === 'PCL_RATE_LIMITED' && entry.app === 'keyed',
    )
    expect(line.rule).toBe('rateLimits[0] per-key')
    // Another key has its own budget; the IP rule, spent only by admitted requests, still has one left.
    const other = await fetchOnce('http://keyed.test/', {
      port: (gateways[0] as RunningGateway).ports.http,
      headers: { 'x-api-key': 'key-two' },
    })
    expect(other.status).toBe(200)
  })

  it('keeps every key with an expiry, header values hashed', async () => {
    const keys = (await redis.cli('--scan', '--pattern', 'pcl:rl:*')).split('\n').filter(Boolean)
    expect(keys.length).toBeGreaterThan(0)
    for (const key of keys) {
      expect(Number(await redis.cli('pttl', key))).toBeGreaterThan(0)
      expect(key).not.toContain('key-one')
    }
  })
})

describe('Redis outage', () => {
  let redis: RedisServer
  let echo: Upstream
  let gateway: RunningGateway

  beforeAll(async () => {
    ;[redis, echo] = await Promise.all([startRedis(), echoUpstream()])
    gateway = await startGateway({
      policies: {
        'api.yaml': app(
          'api',
          echo.url,
          [
            '  - { name: open, match: { path: /open/** }, limit: 2, window: 10m, onStoreError: allow }',
            '  - { name: login, match: { path: /login }, limit: 100, window: 10m, onStoreError: deny }',
            '  - { name: local, match: { path: /local/** }, limit: 4, window: 10m }',
            '',
          ].join('\n'),
        ),
      },
      args: ['--redis', redis.url, '--replicas', '2', '--redis-timeout', '100ms'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([redis?.stop(), echo?.close()])
  })

  const get = async (path: string) => {
    const started = Date.now()
    const answer = await fetchOnce(`http://api.test${path}`, { port: gateway.ports.http })
    return { status: answer.status, ms: Date.now() - started, body: answer.body }
  }

  it('never waits longer than the timeout, honours onStoreError per rule, keeps readiness (a warning) meanwhile, and recovers by itself', async () => {
    expect([
      (await get('/open/a')).status,
      (await get('/open/a')).status,
      (await get('/open/a')).status,
    ]).toEqual([200, 200, 429])

    await redis.stop()
    const during = []
    for (let index = 0; index < 12; index++) {
      during.push(await get('/open/a'), await get('/login'), await get('/local/x'))
    }
    expect(Math.max(...during.map((entry) => entry.ms))).toBeLessThan(1000)
    const open = during.filter((_, index) => index % 3 === 0)
    const login = during.filter((_, index) => index % 3 === 1)
    const local = during.filter((_, index) => index % 3 === 2)
    expect(open.every((entry) => entry.status === 200)).toBe(true) // fail open
    expect(login.every((entry) => entry.status === 503)).toBe(true) // fail closed
    expect(JSON.parse(login[0]?.body ?? '{}')).toMatchObject({
      error: { code: 'PCL_RATE_LIMIT_UNAVAILABLE' },
    })
    expect(local.map((entry) => entry.status).filter((status) => status === 200)).toHaveLength(2) // 4 / 2 replicas
    const unreachable = gateway.logs.filter(
      (line) => line.msg === 'rate limit store unreachable: rules fall back to their onStoreError',
    )
    expect(unreachable).toHaveLength(1) // once per state change, not per request
    // Every replica shares Redis: readiness only warns, so the balancer does not pull every replica at once.
    const admin = (path: string) => fetchOnce(`http://127.0.0.1${path}`, { port: gateway.ports.admin })
    const ready = await admin('/ready')
    expect(ready.status).toBe(200)
    expect(ready.json()).toMatchObject({ status: 'degraded', checks: { redis: { status: 'warn' } } })
    expect((await admin('/health')).status).toBe(200)
    // Three failed calls opened the breaker; the others did not ask Redis at all.
    const metrics = (await admin('/metrics')).body
    expect(
      Number(/^portcullis_rate_limit_store_errors_total\{store="redis"\} (\d+)$/m.exec(metrics)?.[1]),
    ).toBeGreaterThanOrEqual(3)
    const decisions = (result: string) =>
      Number(
        new RegExp(
          `^portcullis_rate_limit_decisions_total\\{app="api",result="${result}"\\} (\\d+)$`,
          'm',
        ).exec(metrics)?.[1],
      )
    expect(decisions('allowed')).toBeGreaterThanOrEqual(2)
    expect(decisions('limited')).toBeGreaterThanOrEqual(1)

    await redis.start()
    let recovered = false
    for (let attempt = 0; attempt < 50 && !recovered; attempt++) {
      await get('/open/b')
      const health = await fetchOnce('http://127.0.0.1/health', { port: gateway.ports.admin })
      recovered = health.json<{ checks: { redis: { status: string } } }>().checks.redis.status === 'pass'
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 200))
    }
    expect(recovered).toBe(true)
    await gateway.waitForLog((line) => line.msg === 'rate limit store reachable again')
    expect((await get('/login')).status).toBe(200)
    expect((await admin('/ready')).status).toBe(200)
    expect(await redis.cli('--scan', '--pattern', 'pcl:rl:*login*')).not.toBe('')
  })
})

describe('Redis Cluster', () => {
  it('limits across 2 gateways through a 3-master cluster', async () => {
    const [cluster, echo] = await Promise.all([startRedisCluster(), echoUpstream()])
    const policies = { 'api.yaml': app('api', echo.url, '  - { name: per-ip, limit: 5, window: 10m }\n') }
    const pair = await Promise.all(
      [0, 1].map(() => startGateway({ policies, args: ['--redis', cluster.url, '--redis-timeout', '2s'] })),
    )
    try {
      // Let the cluster clients learn the slot map before the load.
      for (const gateway of pair) {
        for (let attempt = 0; attempt < 50; attempt++) {
          const health = await fetchOnce('http://127.0.0.1/health', { port: gateway.ports.admin })
          if (
            health.json<{ checks: { redis: { connection: string } } }>().checks.redis.connection === 'ready'
          )
            break
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
      const results = await statuses(pair, 20, () => ({ host: 'api.test' }))
      expect(count(results, 200)).toBe(5)
      const keys = await Promise.all(cluster.nodes.map((node) => node.cli('--scan', '--pattern', 'pcl:rl:*')))
      expect(keys.join('\n')).toContain('pcl:rl:{api:ip:127.0.0.1}:per-ip')
    } finally {
      await Promise.all(pair.map((gateway) => gateway.stop()))
      await Promise.all([cluster.stop(), echo.close()])
    }
  })
})

describe('Redis Sentinel', () => {
  it('finds the master through Sentinel and limits there', async () => {
    const [master, echo] = await Promise.all([startRedis(), echoUpstream()])
    const sentinel = await startSentinel(master)
    const policies = { 'api.yaml': app('api', echo.url, '  - { name: per-ip, limit: 3, window: 10m }\n') }
    const gateway = await startGateway({ policies, args: ['--redis', sentinel.url, '--redis-timeout', '2s'] })
    try {
      const results = await statuses([gateway], 6, () => ({ host: 'api.test' }))
      expect([...results].sort()).toEqual([200, 200, 200, 429, 429, 429])
      expect(await master.cli('--scan', '--pattern', 'pcl:rl:*')).toContain(
        'pcl:rl:{api:ip:127.0.0.1}:per-ip',
      )
    } finally {
      await gateway.stop()
      await sentinel.stop()
      await Promise.all([master.stop(), echo.close()])
    }
  })
})

describe('without Redis', () => {
  it('without Redis: refuses several replicas in production, warns for one, and warns loudly in development', async () => {
    const policies = {
      'api.yaml': app('api', 'http://127.0.0.1:1', '  - { name: per-ip, limit: 5, window: 1m }\n'),
    }
    await expect(
      startGateway({ policies, args: ['--env', 'production', '--replicas', '2'] }),
    ).rejects.toThrow(/PCL-RATELIMIT-NO-REDIS: rate limits without Redis over 2 replicas/)
    const directory = await makePolicyDir(policies)
    const one = await runCli(['check', '--production', '--format', 'json', directory])
    const rules = (JSON.parse(one.stdout) as { findings: { rule: string; severity: string }[] }).findings
    expect(rules.filter((finding) => finding.rule.startsWith('PCL-RATELIMIT'))).toMatchObject([
      { rule: 'PCL-RATELIMIT-LOCAL', severity: 'warning' },
    ])
    const development = await startGateway({ policies })
    try {
      await development.waitForLog((line) => String(line.msg).startsWith('RATE LIMITS ARE PER REPLICA'))
    } finally {
      await development.stop()
    }
  })
})
