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
      args: [
        '--log-headers',
        'User-Agent,authorization,x-api-key',
        '--log-response-headers',
        'content-type,strict-transport-security,x-absent',
      ],
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
      // As the client got them: the app's content type, the gateway's HSTS; absent ones left out.
      responseHeaders: {
        'content-type': String(answer.headers['content-type']),
        'strict-transport-security': String(answer.headers['strict-transport-security']),
      },
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
      responseHeaders: { 'content-type': 'application/json; charset=utf-8' },
    })
  })
})

describe('--http-port off', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: { 'api.yaml': policyYaml({ app: 'api', hosts: ['api.test'], target: echo.url }) },
      args: ['--http-port', 'off'],
    })
  })
  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it('opens no HTTP listener, serves HTTPS, and refuses apps that need plain HTTP', async () => {
    expect(gateway.ports.http).toBe(0)
    const ca = await readFile(path.join(gateway.stateDir, 'internal/ca.crt'), 'utf8')
    expect((await fetchOnce('https://api.test/', { port: gateway.ports.https, ca })).status).toBe(200)
    await gateway.writePolicy(
      'plain.yaml',
      policyYaml({ app: 'plain', hosts: ['plain.test'], target: echo.url, tls: '  mode: "off"' }),
    )
    const refused = await gateway.waitForLog((line) => String(line.msg).startsWith('policy reload refused: '))
    expect(String(refused.msg)).toMatch(
      /plain\.yaml:\d+:\d+ tls\.mode: tls\.mode off needs the HTTP listener/,
    )
  })
})
