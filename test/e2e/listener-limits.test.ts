import { connect as netConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/** Opens a connection, sends the start of a request and never finishes it; resolves with what comes back. */
function slowloris(port: number, secure: boolean): Promise<{ answer: string; afterMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now()
    const socket = secure
      ? tlsConnect({
          port,
          host: '127.0.0.1',
          servername: 'app.test',
          rejectUnauthorized: false,
          ALPNProtocols: ['http/1.1'],
        })
      : netConnect(port, '127.0.0.1')
    let answer = ''
    socket.on(secure ? 'secureConnect' : 'connect', () =>
      socket.write('GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: '),
    )
    socket.on('data', (chunk: Buffer) => {
      answer += chunk
    })
    socket.on('close', () => resolve({ answer, afterMs: Date.now() - started }))
  })
}

describe('listener limits', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: { 'app.yaml': policyYaml({ app: 'app', hosts: ['app.test'], target: echo.url }) },
      args: ['--headers-timeout', '500ms'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it.each([
    ['plain HTTP', false],
    ['TLS (HTTP/1.1)', true],
  ])('answers a client that never finishes its headers with a JSON 408 (%s)', async (_name, secure) => {
    const { answer, afterMs } = await slowloris(secure ? gateway.ports.https : gateway.ports.http, secure)
    expect(answer).toMatch(/^HTTP\/1\.1 408 /)
    expect(answer).toContain('"code":"PCL_REQUEST_TIMEOUT"')
    expect(afterMs).toBeLessThan(5000)
  })

  it('answers headers over Node’s own limit with a JSON 431', async () => {
    const answer = await fetchOnce('http://app.test/', {
      port: gateway.ports.http,
      headers: { 'x-huge': 'a'.repeat(20_000) },
    })
    expect(answer.status).toBe(431)
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_HEADERS_TOO_LARGE' } })
  })

  it('still serves normal requests on both listeners', async () => {
    expect((await fetchOnce('http://app.test/', { port: gateway.ports.http })).status).toBe(308)
    expect((await fetchOnce('https://app.test/', { port: gateway.ports.https })).status).toBe(200)
  })
})
