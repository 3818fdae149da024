import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { type RedisServer, startRedis } from '../support/redis.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/** /ready follows Redis: a load balancer stops sending traffic to a replica that lost it, and resumes. */
describe('readiness and Redis', () => {
  let redis: RedisServer
  let echo: Upstream
  let gateway: RunningGateway

  beforeAll(async () => {
    ;[redis, echo] = await Promise.all([startRedis(), echoUpstream()])
    gateway = await startGateway({
      policies: {
        'api.yaml': policyYaml({
          app: 'api',
          hosts: ['api.test'],
          target: echo.url,
          tls: '  mode: off',
          extra: 'rateLimits: [{ name: per-ip, limit: 1000, window: 10m }]\n',
        }),
      },
      args: ['--redis', redis.url, '--redis-timeout', '2s'],
    })
  })
  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([redis?.stop(), echo?.close()])
  })

  const ready = () => fetchOnce('http://127.0.0.1/ready', { port: gateway.ports.admin })
  async function until(status: number): Promise<{ status: number; body: string }> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const answer = await ready()
      if (answer.status === status) return answer
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    return ready()
  }

  it('goes 503 while Redis is down and back to 200 when it returns; liveness stays 200', async () => {
    expect((await ready()).status).toBe(200)
    await redis.stop()
    const down = await until(503)
    expect(down.status).toBe(503)
    expect(JSON.parse(down.body)).toMatchObject({
      status: 'unhealthy',
      checks: { redis: { status: 'fail' } },
    })
    expect((await fetchOnce('http://127.0.0.1/health', { port: gateway.ports.admin })).status).toBe(200)
    await redis.start()
    expect((await until(200)).status).toBe(200)
  })
})
