import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { proxyV2 } from '../support/proxy-protocol.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/** Sends `preamble` (a PROXY header or nothing) then one HTTP/1.1 request, over plain TCP or TLS. */
function request(options: {
  port: number
  from: string
  preamble: Buffer
  host: string
  secure: boolean
}): Promise<string> {
  return new Promise((resolve) => {
    const raw = netConnect({ port: options.port, host: '127.0.0.1', localAddress: options.from })
    let answer = ''
    const done = () => resolve(answer)
    const send = (socket: Socket) => {
      socket.on('data', (chunk: Buffer) => {
        answer += chunk
      })
      socket.on('close', done)
      socket.on('error', done)
      socket.write(`GET /who HTTP/1.1\r\nHost: ${options.host}\r\nConnection: close\r\n\r\n`)
    }
    raw.once('connect', () => {
      raw.write(options.preamble)
      if (!options.secure) return send(raw)
      const secure = tlsConnect({
        socket: raw,
        servername: options.host,
        rejectUnauthorized: false,
        ALPNProtocols: ['http/1.1'],
      })
      secure.once('secureConnect', () => send(secure))
      secure.once('error', done)
    })
    raw.once('error', done)
  })
}

describe('PROXY protocol from a trusted load balancer', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'tls.yaml': policyYaml({ app: 'secure', hosts: ['secure.test'], target: echo.url }),
        'plain.yaml': policyYaml({
          app: 'plain',
          hosts: ['plain.test'],
          target: echo.url,
          tls: '  mode: off',
        }),
      },
      args: ['--proxy-protocol-from', '127.0.0.2', '--headers-timeout', '1s'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it.each([
    ['v1 on plain HTTP', false, Buffer.from('PROXY TCP4 198.51.100.7 10.0.0.1 40000 80\r\n'), '198.51.100.7'],
    ['v2 on TLS', true, proxyV2('198.51.100.8'), '198.51.100.8'],
    ['v2 IPv6 on plain HTTP', false, proxyV2('2001:db8:0:0:0:0:0:9'), '2001:db8::9'],
    [
      'v2 LOCAL (a health check) keeps the balancer as peer',
      false,
      proxyV2('198.51.100.7', 0x20),
      '127.0.0.2',
    ],
  ])('%s: the header’s source is the client', async (_name, secure, preamble, client) => {
    const answer = await request({
      port: secure ? gateway.ports.https : gateway.ports.http,
      from: '127.0.0.2',
      preamble,
      host: secure ? 'secure.test' : 'plain.test',
      secure,
    })
    expect(answer).toMatch(/^HTTP\/1\.1 200/)
    expect(answer).toContain(`"x-forwarded-for":"${client}"`)
  })

  it('is refused from peers that are not configured: the header is a bad request, never an identity', async () => {
    const answer = await request({
      port: gateway.ports.http,
      from: '127.0.0.1',
      preamble: Buffer.from('PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n'),
      host: 'plain.test',
      secure: false,
    })
    expect(answer).toMatch(/^HTTP\/1\.1 400/)
    expect(answer).not.toContain('10.0.0.1')
  })

  it('a configured balancer that sends no header is cut off', async () => {
    const answer = await request({
      port: gateway.ports.http,
      from: '127.0.0.2',
      preamble: Buffer.alloc(0),
      host: 'plain.test',
      secure: false,
    })
    expect(answer).toBe('')
    await gateway.waitForLog((line) => line.msg === 'PROXY protocol header refused; connection closed')
  })
})
