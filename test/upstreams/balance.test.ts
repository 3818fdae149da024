import { pino } from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { TargetResolver } from '../../src/upstreams/discovery.js'
import { UpstreamPools } from '../../src/upstreams/pools.js'
import type { Upstream } from '../../src/upstreams/target.js'
import { compileApp } from '../support/apps.js'

const targets = ['http://127.0.0.1:9101', 'http://127.0.0.1:9102', 'http://127.0.0.1:9103']

describe('hash balancing (rendezvous): affinity without cookies', async () => {
  const byIp = await compileApp({ app: 'byip', hosts: ['byip.test'], upstream: { targets, balance: 'hash' } })
  const byHeader = await compileApp({
    app: 'byheader',
    hosts: ['byheader.test'],
    upstream: { targets, balance: 'hash', hashOn: 'header:X-Sensor-Id' },
  })
  const pools = new UpstreamPools({
    log: pino({ level: 'silent' }),
    stickySecret: Buffer.alloc(32),
    resolver: new TargetResolver([]),
  })
  pools.update([byIp, byHeader])
  afterAll(() => pools.close('destroy'))

  const clients = Array.from({ length: 600 }, (_, index) => `198.51.${index >> 8}.${index & 255}`)
  const targetOf = (ip: string, headers = {}) => pools.pick(byIp, { ip, headers })?.upstream as Upstream
  const placement = () => new Map(clients.map((ip) => [ip, targetOf(ip).origin]))

  it('keeps each client on one target and spreads clients over all of them', () => {
    const first = placement()
    expect(placement()).toEqual(first)
    const counts = new Map<string, number>()
    for (const origin of first.values()) counts.set(origin, (counts.get(origin) ?? 0) + 1)
    expect([...counts.keys()].sort()).toEqual(targets)
    for (const count of counts.values()) expect(count).toBeGreaterThan(600 / 3 / 2)
  })

  it('moves only the clients of a target that leaves, and brings exactly them back when it returns', () => {
    const before = placement()
    const leaving = targetOf(clients[0] as string)
    leaving.healthy = false
    const during = placement()
    for (const ip of clients) {
      if (before.get(ip) === leaving.origin) expect(during.get(ip)).not.toBe(leaving.origin)
      else expect(during.get(ip)).toBe(before.get(ip))
    }
    leaving.healthy = true
    expect(placement()).toEqual(before)
  })

  it('hashes on a header when told to, and on the client IP without it', () => {
    const pick = (ip: string, headers: Record<string, string>) =>
      pools.pick(byHeader, { ip, headers })?.upstream.origin
    const sensor = pick('198.51.100.1', { 'x-sensor-id': 'sensor-42' })
    // One NAT, many sensors: the header, not the shared address, places each one.
    expect(pick('203.0.113.9', { 'x-sensor-id': 'sensor-42' })).toBe(sensor)
    const spread = new Set(
      clients.slice(0, 60).map((_, index) => pick('203.0.113.9', { 'x-sensor-id': `s-${index}` })),
    )
    expect(spread.size).toBe(3)
    expect(pick('198.51.100.1', {})).toBe(pick('198.51.100.1', {}))
  })
})
