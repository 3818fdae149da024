import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { EchoReply } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, httpUpstream, refusingPort, tcpUpstream, type Upstream } from '../support/upstreams.js'

/** What the demo app echoes; header values here are single strings. */
type Echo = EchoReply & { headers: Record<string, string> }

/** Plain-HTTP apps (tls: off) keep these tests about proxying, not TLS. */
describe('HTTP proxying and upstream failures', () => {
  let gateway: RunningGateway
  const upstreams: Record<string, Upstream> = {}
  let deadPort: number

  beforeAll(async () => {
    upstreams.echo = await echoUpstream()
    upstreams.slow = await httpUpstream((request, response) => {
      const delay = Number(new URL(request.url ?? '/', 'http://x').searchParams.get('delay') ?? '0')
      setTimeout(() => response.end('late'), delay)
    })
    upstreams.trickle = await httpUpstream((_request, response) => {
      // A stream (SSE-like): a byte every 100 ms for 1.5 s, far longer than the write timeout of 400 ms.
      response.writeHead(200, { 'content-type': 'text/plain' })
      let sent = 0
      const timer = setInterval(() => {
        response.write('.')
        if (++sent === 15) {
          clearInterval(timer)
          response.end()
        }
      }, 100)
      response.on('close', () => clearInterval(timer))
    })
    upstreams.flood = await httpUpstream((_request, response) => {
      // More than any socket buffer holds: a client that does not read stalls it.
      response.writeHead(200, { 'content-type': 'application/octet-stream' })
      const chunk = Buffer.alloc(1024 * 1024)
      let left = 64
      const pump = () => {
        while (left > 0 && response.write(chunk)) left--
        if (left > 0) response.once('drain', pump)
        else response.end()
      }
      pump()
    })
    upstreams.hangup = await tcpUpstream((socket) => socket.destroy())
    upstreams.huge = await httpUpstream((_request, response) => {
      response.setHeader('x-huge', 'a'.repeat(200 * 1024))
      response.end('never seen')
    })
    upstreams.hopByHop = await httpUpstream((_request, response) => {
      response.writeHead(200, {
        connection: 'x-secret',
        'x-secret': 'internal',
        'keep-alive': 'timeout=5',
        'x-kept': 'yes',
      })
      response.end('ok')
    })
    deadPort = refusingPort
    const app = (name: string, target: string, extra = '') =>
      policyYaml({ app: name, hosts: [`${name}.test`], target, tls: '  mode: off', extra })
    gateway = await startGateway({
      policies: {
        'echo.yaml': app('echo', upstreams.echo.url),
        'slow.yaml': app('slow', upstreams.slow.url).replace(
          'upstream:\n',
          'upstream:\n  timeouts: { headers: 300ms, idle: 5s }\n',
        ),
        'trickle.yaml': app('trickle', upstreams.trickle.url).replace(
          'upstream:\n',
          'upstream:\n  timeouts: { headers: 5s, idle: 400ms }\n',
        ),
        'flood.yaml': app('flood', upstreams.flood.url).replace(
          'upstream:\n',
          'upstream:\n  timeouts: { headers: 5s, idle: 400ms }\n',
        ),
        'dead.yaml': app('dead', `http://127.0.0.1:${deadPort}`),
        'upload.yaml': app('upload', upstreams.echo.url).replace(
          'upstream:\n',
          'upstream:\n  timeouts: { idle: 5s, upload: 600ms }\n',
        ),
        'hangup.yaml': app('hangup', upstreams.hangup.url),
        'huge.yaml': app('huge', upstreams.huge.url),
        'hopbyhop.yaml': app('hopbyhop', upstreams.hopByHop.url),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all(Object.values(upstreams).map((upstream) => upstream.close()))
  })

  it('forwards method, path, query and body, and streams the answer back', async () => {
    const body = JSON.stringify({ big: 'x'.repeat(256 * 1024) })
    const answer = await fetchOnce('http://echo.test/api/items?page=2&q=a%20b', {
      port: gateway.ports.http,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    })
    expect(answer.status).toBe(200)
    const echo = answer.json<Echo>()
    expect(echo).toMatchObject({ method: 'POST', url: '/api/items?page=2&q=a%20b' })
    expect(echo.body).toBe(body)
    expect(echo.headers['content-type']).toBe('application/json')
  })

  it('forwards a chunked request body', async () => {
    const answer = await fetchOnce('http://echo.test/upload', {
      port: gateway.ports.http,
      method: 'PUT',
      headers: { 'transfer-encoding': 'chunked' },
      body: 'streamed',
    })
    expect(answer.json<Echo>().body).toBe('streamed')
  })

  it('replaces forged forwarding headers with a truthful chain and a fresh request id', async () => {
    const answer = await fetchOnce('http://echo.test/who', {
      port: gateway.ports.http,
      headers: {
        'x-forwarded-for': '6.6.6.6',
        'x-real-ip': '6.6.6.6',
        forwarded: 'for=6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.test',
        'x-request-id': 'forged',
      },
    })
    const { headers } = answer.json<Echo>()
    expect(headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(headers['x-forwarded-proto']).toBe('http')
    expect(headers['x-forwarded-host']).toBe('echo.test')
    expect(headers['x-real-ip']).toBe('127.0.0.1')
    expect(headers.forwarded).toBeUndefined()
    expect(headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    expect(headers.host).toBe('echo.test')
  })

  it('strips hop-by-hop headers in both directions, including those named by Connection', async () => {
    const answer = await fetchOnce('http://echo.test/hop', {
      port: gateway.ports.http,
      headers: {
        connection: 'keep-alive, x-private',
        'x-private': 'secret',
        'proxy-authorization': 'Basic eA==',
        te: 'trailers',
      },
    })
    const { headers } = answer.json<Echo>()
    expect(headers['x-private']).toBeUndefined()
    expect(headers['proxy-authorization']).toBeUndefined()
    expect(headers.te).toBeUndefined()
    const back = await fetchOnce('http://hopbyhop.test/', { port: gateway.ports.http })
    expect(back.headers['x-secret']).toBeUndefined()
    expect(back.headers['keep-alive']).toBeUndefined()
    expect(back.headers['x-kept']).toBe('yes')
  })

  it('answers 502 PCL_UPSTREAM_UNREACHABLE at once when nothing listens upstream', async () => {
    const started = Date.now()
    const answer = await fetchOnce('http://dead.test/', { port: gateway.ports.http })
    expect(answer.status).toBe(502)
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_UPSTREAM_UNREACHABLE' } })
    expect(Date.now() - started).toBeLessThan(2000)
    const line = await gateway.waitForLog((l) => l.app === 'dead' && l.status === 502)
    expect(line).toMatchObject({ code: 'PCL_UPSTREAM_UNREACHABLE', rule: 'upstream.targets' })
  })

  it('answers 504 PCL_UPSTREAM_TIMEOUT when the upstream is slower than the read timeout', async () => {
    const answer = await fetchOnce('http://slow.test/?delay=3000', { port: gateway.ports.http })
    expect(answer.status).toBe(504)
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_UPSTREAM_TIMEOUT' } })
    const line = await gateway.waitForLog((l) => l.app === 'slow' && l.status === 504)
    expect(line.rule).toBe('upstream.timeouts.headers')
    expect(Number(line.durationMs)).toBeLessThan(2000)
    const fastEnough = await fetchOnce('http://slow.test/?delay=50', { port: gateway.ports.http })
    expect(fastEnough.body).toBe('late')
  })

  it('lets a stream flow past the write timeout while bytes move', async () => {
    const answer = await fetchOnce('http://trickle.test/', { port: gateway.ports.http, timeoutMs: 5000 })
    expect(answer.body).toBe('.'.repeat(15))
  })

  it('cuts a response whose client stopped reading for the write timeout, and logs the rule', async () => {
    const socket = connect(gateway.ports.http, '127.0.0.1', () => {
      socket.write('GET / HTTP/1.1\r\nHost: flood.test\r\n\r\n')
      socket.pause() // never reads
    })
    socket.on('error', () => undefined)
    const line = await gateway.waitForLog((l) => l.msg === 'request' && l.app === 'flood')
    expect(line).toMatchObject({ status: 200, code: 'PCL_UPSTREAM_TIMEOUT', rule: 'upstream.timeouts.idle' })
    socket.destroy()
  })

  it('bounds a trickled upload with timeouts.upload: 408, connection closed, the rule logged', async () => {
    const socket = connect(gateway.ports.http, '127.0.0.1')
    const received: Buffer[] = []
    socket.on('data', (chunk: Buffer) => received.push(chunk))
    const closed = new Promise((resolve) => socket.once('close', resolve))
    socket.write('POST /up HTTP/1.1\r\nHost: upload.test\r\nContent-Length: 100\r\n\r\n')
    // A byte every 100 ms: never silent for the idle timeout of 5 s, but 10 s for the whole body.
    const trickle = setInterval(() => socket.writable && socket.write('x'), 100)
    await closed
    clearInterval(trickle)
    const answer = Buffer.concat(received).toString('latin1')
    expect(answer).toMatch(/^HTTP\/1\.1 408 /)
    expect(answer).toMatch(/connection: close/i)
    const line = await gateway.waitForLog((l) => l.msg === 'request' && l.app === 'upload')
    expect(line).toMatchObject({ status: 408, code: 'PCL_REQUEST_TIMEOUT', rule: 'upstream.timeouts.upload' })
    expect(Number(line.durationMs)).toBeLessThan(3000)
  })

  it('answers 502 when the upstream hangs up or sends headers it cannot parse', async () => {
    const hangup = await fetchOnce('http://hangup.test/', { port: gateway.ports.http })
    expect(hangup.status).toBe(502)
    expect(hangup.json()).toMatchObject({ error: { code: 'PCL_UPSTREAM_BAD_RESPONSE' } })
    const huge = await fetchOnce('http://huge.test/', { port: gateway.ports.http })
    expect(huge.status).toBe(502)
    expect(huge.json()).toMatchObject({ error: { code: 'PCL_UPSTREAM_BAD_RESPONSE' } })
  })

  it('keeps upstream connections alive between requests', async () => {
    const ports = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const answer = await fetchOnce('http://echo.test/keepalive', { port: gateway.ports.http })
      ports.add(answer.json<Echo>().headers.connection ?? '')
    }
    expect(ports).toEqual(new Set(['keep-alive']))
  })

  it('rejects a request target that is not a path', async () => {
    const { execFileAsync } = await import('../support/clients.js')
    const { stdout } = await execFileAsync('curl', [
      '-sS',
      '--request-target',
      '*',
      '-X',
      'OPTIONS',
      '-H',
      'Host: echo.test',
      `http://127.0.0.1:${gateway.ports.http}/`,
    ])
    expect(JSON.parse(stdout)).toMatchObject({ error: { code: 'PCL_BAD_REQUEST' } })
  })
})
