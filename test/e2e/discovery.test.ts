import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { type DnsServer, startDns } from '../support/dns.js'
import { policyYaml, type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'

/** An upstream on one loopback address that says which it is; `/hold` waits until released. */
async function namedUpstream(address: string, port = 0) {
  const held: (() => void)[] = []
  let arrived: (() => void) | undefined
  const server: Server = createServer((request, response) => {
    const answer = () => response.end(address)
    if (request.url !== '/hold') return answer()
    held.push(answer)
    arrived?.()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, address, resolve)
  })
  return {
    port: (server.address() as AddressInfo).port,
    held,
    /** Resolves once a `/hold` request has reached this upstream. */
    holding: () =>
      held.length > 0 ? Promise.resolve() : new Promise<void>((resolve) => (arrived = resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

type Named = Awaited<ReturnType<typeof namedUpstream>>

describe('upstream targets discovered in DNS', () => {
  let dns: DnsServer
  let gateway: RunningGateway
  let first: Named
  let second: Named
  let service: Named

  beforeAll(async () => {
    dns = await startDns()
    first = await namedUpstream('127.0.0.10')
    second = await namedUpstream('127.0.0.11', first.port)
    service = await namedUpstream('127.0.0.12')
    dns.zone.addresses.set('app.internal', ['127.0.0.10'])
    dns.zone.addresses.set('svc-host.internal', ['127.0.0.12'])
    dns.zone.services.set('_http._tcp.svc.internal', [
      { target: 'svc-host.internal', port: service.port, priority: 10 },
      // A backup of lower priority (a higher number) that must not be used while the first answers.
      { target: 'app.internal', port: 1, priority: 20 },
    ])
    const dnsTimes = 'dns: { minTtl: 100ms, maxTtl: 1s }'
    gateway = await startGateway({
      policies: {
        'app.yaml': policyYaml({
          app: 'app',
          hosts: ['app.test'],
          target: `"dns+http://app.internal:${first.port}"`,
          tls: '  mode: "off"',
        }).replace('upstream:\n', `upstream:\n  ${dnsTimes}\n`),
        'svc.yaml': policyYaml({
          app: 'svc',
          hosts: ['svc.test'],
          target: '"srv+http://_http._tcp.svc.internal"',
          tls: '  mode: "off"',
        }).replace('upstream:\n', `upstream:\n  ${dnsTimes}\n`),
      },
      args: ['--dns-servers', dns.address],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([first?.close(), second?.close(), service?.close(), dns?.close()])
  })

  const ask = (host: string, target = '/') =>
    fetchOnce(`http://${host}${target}`, { port: gateway.ports.http })

  /** Which upstreams answer `count` requests in a row. */
  async function answering(host: string, count = 6): Promise<Set<string>> {
    const seen = new Set<string>()
    for (let index = 0; index < count; index++) seen.add((await ask(host)).body)
    return seen
  }

  /** Asks until the answers match, as the gateway looks the name up again on its 1 s TTL. */
  async function until(host: string, expected: string[]): Promise<void> {
    const deadline = Date.now() + 10_000 * timeoutScale
    let seen = new Set<string>()
    while (Date.now() < deadline) {
      seen = await answering(host)
      if ([...seen].sort().join() === expected.join()) return
    }
    throw new Error(`still answered by ${[...seen].join(', ')}`)
  }

  it('follows the records: a new address gets traffic, one that leaves drains without failing requests in flight', async () => {
    expect(await answering('app.test')).toEqual(new Set(['127.0.0.10']))
    dns.zone.addresses.set('app.internal', ['127.0.0.10', '127.0.0.11'])
    await until('app.test', ['127.0.0.10', '127.0.0.11'])
    // A request in flight on each target (round robin), then the first leaves the records.
    const inFlight = [ask('app.test', '/hold'), ask('app.test', '/hold')]
    await Promise.all([first.holding(), second.holding()])
    dns.zone.addresses.set('app.internal', ['127.0.0.11'])
    await until('app.test', ['127.0.0.11'])
    for (const release of [...first.held.splice(0), ...second.held.splice(0)]) release()
    expect((await Promise.all(inFlight)).map((answer) => [answer.status, answer.body]).sort()).toEqual([
      [200, '127.0.0.10'],
      [200, '127.0.0.11'],
    ])
    await gateway.waitForLog((line) => line.msg === 'upstream target gone from DNS: draining')
  })

  it('uses the hosts and ports of SRV records, of the best priority only', async () => {
    expect(await answering('svc.test')).toEqual(new Set(['127.0.0.12']))
    expect(dns.queries).toContain('SRV _http._tcp.svc.internal')
  })

  it('keeps the last good targets while lookups fail, and says so', async () => {
    dns.zone.failing.add('app.internal')
    const failed = await gateway.waitForLog(
      (line) =>
        line.msg === 'upstream DNS lookup failed: keeping the last good targets' && line.app === 'app',
    )
    expect(failed).toMatchObject({
      target: `dns+http://app.internal:${first.port}`,
      rule: 'upstream.targets',
    })
    expect(await answering('app.test')).toEqual(new Set(['127.0.0.11']))
    const metrics = await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })
    expect(metrics.body).toMatch(/portcullis_upstream_dns_failures_total\{app="app"\} [1-9]/)
    dns.zone.failing.delete('app.internal')
  })
})
