import type { IncomingMessage, ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { httpUpstream, type Upstream, wsUpstream } from '../support/upstreams.js'

/** An upstream that says who it is and what it received. */
function named(name: string) {
  return (request: IncomingMessage, response: ServerResponse) => {
    request.resume()
    request.on('end', () => {
      response.setHeader('content-type', 'application/json')
      response.end(JSON.stringify({ upstream: name, url: request.url }))
    })
  }
}

function open(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers })
    socket.once('open', () => resolve(socket))
    socket.once('error', reject)
    socket.once('unexpected-response', (_request, response) =>
      reject(new Error(`HTTP ${response.statusCode}`)),
    )
  })
}

describe('routes inside an app', () => {
  let gateway: RunningGateway
  let api: Upstream
  let media: Upstream
  let realtime: Upstream & { sockets: import('ws').WebSocketServer }
  const sockets: WebSocket[] = []

  beforeAll(async () => {
    api = await httpUpstream(named('api'))
    media = await httpUpstream(named('media'))
    realtime = await wsUpstream(() => {})
    gateway = await startGateway({
      policies: {
        'horizon.yaml': [
          'app: horizon',
          'hosts: [horizon.test]',
          'tls: { mode: "off" }',
          `upstream: { targets: ["${api.url}"] }`,
          'cors: { origins: ["https://horizon.example.com"] }',
          'websocket: { maxConnectionsPerIp: 20 }',
          'limits: { maxBodySize: 1kb }',
          'routes:',
          '  - name: sensors',
          '    path: /sensors/ws/**',
          '    websocket: { maxConnectionsPerIp: 3, paths: [{ path: /sensors/ws/**, allowedOrigins: ["*"] }] }',
          `    upstream: { targets: ["${realtime.url}"] }`,
          '  - name: dashboard',
          '    path: /dashboard/ws/**',
          '    websocket: { maxConnectionsPerIp: 2, paths: [{ path: /dashboard/ws/**, requireOrigin: true }] }',
          `    upstream: { targets: ["${realtime.url}"] }`,
          '  - name: media',
          '    path: /media/**',
          '    stripPrefix: /media',
          '    limits: { maxBodySize: 1mb }',
          '    rateLimits: [{ name: uploads, match: { methods: [POST] }, limit: 2, window: 1h }]',
          `    upstream: { targets: ["${media.url}"] }`,
          '',
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    for (const socket of sockets) socket.terminate()
    await gateway?.stop()
    await Promise.all([api?.close(), media?.close(), realtime?.close()])
  })

  const request = (path: string, options: { method?: string; body?: string } = {}) =>
    fetchOnce(`http://horizon.test${path}`, { port: gateway.ports.http, ...options })

  it('sends two routes of one app to two upstream pools, with the route’s path rewrite', async () => {
    expect((await request('/api/items')).json()).toEqual({ upstream: 'api', url: '/api/items' })
    expect((await request('/media/a.png?v=1')).json()).toEqual({ upstream: 'media', url: '/a.png?v=1' })
    expect((await request('/Media/x/../b.png')).json()).toEqual({ upstream: 'media', url: '/b.png' })
    const line = await gateway.waitForLog((entry) => entry.msg === 'request' && entry.path === '/media/a.png')
    expect(line).toMatchObject({ app: 'horizon', route: 'media', upstream: media.url })
  })

  it('holds each route’s WebSocket cap per IP on its own', async () => {
    const sensor = `ws://127.0.0.1:${gateway.ports.http}/sensors/ws/1`
    const withHost = { host: 'horizon.test' }
    for (let index = 0; index < 3; index++) sockets.push(await open(sensor, withHost))
    await expect(open(sensor, withHost)).rejects.toThrow('HTTP 429')
    // The dashboard route counts its own connections: the sensors' three do not use up its two.
    const dashboard = `ws://127.0.0.1:${gateway.ports.http}/dashboard/ws`
    const browser = { ...withHost, origin: 'https://horizon.example.com' }
    for (let index = 0; index < 2; index++) sockets.push(await open(dashboard, browser))
    await expect(open(dashboard, browser)).rejects.toThrow('HTTP 429')
    await expect(open(dashboard, withHost)).rejects.toThrow('HTTP 403')
    const metrics = await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })
    expect(metrics.body).toContain('portcullis_websockets_open{app="horizon",route="sensors"} 3')
    expect(metrics.body).toContain('portcullis_websockets_open{app="horizon",route="dashboard"} 2')
  })

  it('applies a route’s body limit and rate limit to that route only', async () => {
    const body = 'x'.repeat(10 * 1024)
    expect((await request('/media/up', { method: 'POST', body })).status).toBe(200)
    expect((await request('/api/up', { method: 'POST', body })).status).toBe(413)
    expect((await request('/media/up', { method: 'POST', body: 'x' })).status).toBe(200)
    const limited = await request('/media/up', { method: 'POST', body: 'x' })
    expect(limited.status).toBe(429)
    expect(limited.json()).toMatchObject({ error: { code: 'PCL_RATE_LIMITED' } })
    expect((await request('/api/up', { method: 'POST', body: 'x' })).status).toBe(200)
    const refused = await gateway.waitForLog(
      (entry) => entry.msg === 'request' && entry.status === 429 && entry.path === '/media/up',
    )
    expect(refused).toMatchObject({ route: 'media', rule: 'routes[2].rateLimits[0] uploads' })
  })

  it.each([
    ['/api/items?page=2', 'api', undefined],
    ['/media/a.png', 'media', 'media'],
    ['/MEDIA/b.png', 'media', 'media'],
    ['/media', 'media', 'media'],
    ['/mediax/a', 'api', undefined],
    ['//media/./c', 'media', 'media'],
    ['/sensors/x/../../media/d', 'media', 'media'],
  ])('explain and the listener agree on the route of %s', async (path, expected, label) => {
    const live = (await request(path)).json<{ upstream: string; url: string }>()
    expect(live.upstream).toBe(expected)
    const explained = await runCli([
      'explain',
      '--policies',
      gateway.policiesDir,
      '--format',
      'json',
      '--url',
      `http://horizon.test${path}`,
    ])
    const trace = JSON.parse(explained.stdout) as {
      route: string
      upstream: { target: string; requestTarget: string }
    }
    expect(trace.upstream.target).toBe(expected === 'api' ? api.url : media.url)
    expect(trace.upstream.requestTarget).toBe(live.url)
    expect(trace.route).toContain(label ? `route ${label}` : 'app horizon')
  })
})
