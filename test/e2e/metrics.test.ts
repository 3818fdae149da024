import parsePrometheusTextFormat, { type Family } from 'parse-prometheus-text-format'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

describe('/metrics', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    const guarded = (app: string, mode: string) =>
      policyYaml({
        app,
        hosts: [`${app}.test`],
        target: echo.url,
        tls: '  mode: off',
        extra: `mode: ${mode}\naccess: [{ path: /admin/**, deny: all }]\n`,
      })
    gateway = await startGateway({
      policies: {
        'api.yaml': guarded('api', 'enforce'),
        'trial.yaml': guarded('trial', 'report-only'),
        'secure.yaml': policyYaml({ app: 'secure', hosts: ['secure.test'], target: echo.url }),
      },
      args: ['--watch', 'false'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  async function scrape(): Promise<Family[]> {
    const answer = await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })
    expect(answer.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    return parsePrometheusTextFormat(answer.body)
  }

  function value(families: Family[], name: string, labels: Record<string, string>): number | undefined {
    const family = families.find((entry) => entry.name === name)
    const sample = family?.metrics.find((metric) =>
      Object.entries(labels).every(([key, expected]) => metric.labels?.[key] === expected),
    )
    return sample?.value === undefined ? undefined : Number(sample.value)
  }

  it('counts requests, refusals (enforced and report-only), WebSockets, certificates and reloads as they happened', async () => {
    for (let index = 0; index < 3; index++)
      await fetchOnce('http://api.test/items', { port: gateway.ports.http })
    await fetchOnce('http://api.test/admin/x', { port: gateway.ports.http })
    await fetchOnce('http://nobody.test/', { port: gateway.ports.http })
    await fetchOnce('http://trial.test/admin/x', { port: gateway.ports.http })
    const socket = new WebSocket(`ws://127.0.0.1:${gateway.ports.http}/`, { headers: { host: 'api.test' } })
    await new Promise((resolve) => socket.once('message', resolve))
    gateway.process.kill('SIGHUP')
    await gateway.waitForLog((line) => line.msg === 'policies reloaded')

    const families = await scrape()
    expect(value(families, 'portcullis_requests_total', { app: 'api', status_class: '2xx' })).toBe(3)
    expect(value(families, 'portcullis_requests_total', { app: 'api', status_class: '4xx' })).toBe(1)
    expect(value(families, 'portcullis_requests_total', { app: '(none)', status_class: '4xx' })).toBe(1)
    expect(value(families, 'portcullis_requests_total', { app: 'trial', status_class: '2xx' })).toBe(1)
    expect(
      value(families, 'portcullis_refusals_total', {
        app: 'api',
        code: 'PCL_ACCESS_DENIED',
        rule: 'access[0] /admin/**',
        enforced: 'true',
      }),
    ).toBe(1)
    expect(value(families, 'portcullis_refusals_total', { app: 'trial', enforced: 'false' })).toBe(1)
    expect(value(families, 'portcullis_websockets_open', { app: 'api' })).toBe(1)
    // The open WebSocket is in progress on its target, for least-connections.
    expect(value(families, 'portcullis_upstream_active_requests', { app: 'api' })).toBe(1)
    expect(value(families, 'portcullis_policy_reloads_total', { result: 'success' })).toBe(1)
    const expiry = value(families, 'portcullis_certificate_expiry_timestamp_seconds', { app: 'secure' }) ?? 0
    expect(expiry * 1000).toBeGreaterThan(Date.now() + 20 * 86_400_000)
    const histogram = families.find((family) => family.name === 'portcullis_request_duration_seconds')
    expect(histogram?.type).toBe('HISTOGRAM')
    // Proxied requests only: the 3 to /items and the report-only one that passed; not the refused ones.
    // (The parser drops histogram labels, so the _count lines are read from the text.)
    const text = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(text).toMatch(/^portcullis_upstream_duration_seconds_count\{app="api"\} 3$/m)
    expect(text).toMatch(/^portcullis_upstream_duration_seconds_count\{app="trial"\} 1$/m)
    expect(text).not.toMatch(/^portcullis_upstream_duration_seconds_count\{app="\(none\)"\}/m)
    expect(families.some((family) => family.name === 'portcullis_process_cpu_seconds_total')).toBe(true)
    // No raw paths in any label.
    expect(JSON.stringify(families)).not.toContain('/items')
    socket.close()
  })
})
