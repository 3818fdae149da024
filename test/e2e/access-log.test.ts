import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { type LogLine, policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

describe('access log lines', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let ca: string

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: { 'api.yaml': policyYaml({ app: 'api', hosts: ['api.test'], target: echo.url }) },
      args: ['--log-headers', 'User-Agent,authorization,x-api-key'],
    })
    ca = await readFile(path.join(gateway.stateDir, 'internal/ca.crt'), 'utf8')
  })
  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  const lineFor = (requestId: string) =>
    gateway.waitForLog((line: LogLine) => line.msg === 'request' && line.reqId === requestId)

  it('carry the documented fields, with the request id sent back and secrets redacted', async () => {
    const answer = await fetchOnce('https://api.test/items?token=secret', {
      port: gateway.ports.https,
      ca,
      headers: { authorization: 'Bearer s3cret', 'x-api-key': 'k3y', 'user-agent': 'probe/1.0' },
    })
    expect(answer.status).toBe(200)
    const requestId = String(answer.headers['x-request-id'])
    expect(answer.json<{ headers: Record<string, string> }>().headers['x-request-id']).toBe(requestId)
    const line = await lineFor(requestId)
    expect(line).toMatchObject({
      app: 'api',
      host: 'api.test',
      method: 'GET',
      path: '/items',
      status: 200,
      bytes: Buffer.byteLength(answer.body),
      clientIp: '127.0.0.1',
      clientIpVia: 'peer',
      upstream: echo.url,
      httpVersion: '1.1',
      tlsVersion: 'TLSv1.3',
      headers: { 'user-agent': 'probe/1.0', authorization: '[redacted]', 'x-api-key': '[redacted]' },
    })
    expect(line.upstreamMs).toBeGreaterThan(0)
    expect(line.durationMs).toBeGreaterThanOrEqual(Number(line.upstreamMs))
    expect(JSON.stringify(line)).not.toMatch(/s3cret|k3y|token=secret/)
  })

  it('name the deciding rule for the gateway’s own answers, which carry the request id too', async () => {
    const answer = await fetchOnce('http://nobody.test/', { port: gateway.ports.http })
    const requestId = String(answer.headers['x-request-id'])
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_UNKNOWN_HOST', requestId } })
    expect(await lineFor(requestId)).toMatchObject({
      status: 404,
      code: 'PCL_UNKNOWN_HOST',
      rule: 'hosts',
      bytes: Buffer.byteLength(answer.body),
    })
  })
})
