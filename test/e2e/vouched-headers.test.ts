import { createServer, type IncomingHttpHeaders } from 'node:http'
import { connect as http2Connect } from 'node:http2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream, wsUpstream } from '../support/upstreams.js'
import { type WsgiApp, wsgiEchoApp } from '../support/wsgi.js'

/**
 * Every header the gateway vouches for, in every spelling a real server folds together, over HTTP/1.1,
 * HTTP/2 and WebSocket upgrades, received by a real WSGI server (Python's wsgiref, which reads `X_User`
 * as `HTTP_X_USER` like gunicorn before 22) and by a Node one. None may carry the client's value.
 */
const vouched = [
  // forwardAuth.copyHeaders (the defaults): only the auth service may set these.
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-groups',
  // What the gateway writes from what it verified.
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-real-ip',
  'x-request-id',
  // Forwarding and client-IP headers an app may trust its proxy for.
  'forwarded',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'x-original-url',
]

/** Spellings of one name, as HTTP/1.1 lets a client write it (HTTP/2 names are lower case). */
function spellings(name: string, http2: boolean): string[] {
  const title = name.replace(
    /(^|-)([a-z])/g,
    (_all, dash: string, letter: string) => dash + letter.toUpperCase(),
  )
  const forms = [
    name,
    name.replaceAll('-', '_'),
    name.replace('-', '_'),
    name.replace(/-([^-]*)$/, '_$1'),
    title.replaceAll('-', '_'),
    title.replace(/-([^-]*)$/, '_$1'),
  ]
  return [...new Set(http2 ? forms.map((form) => form.toLowerCase()) : forms)]
}

/** The client's forged headers: each spelling carries a value naming it, so a leak says which one. */
function forged(name: string, http2: boolean): Record<string, string> {
  return Object.fromEntries(spellings(name, http2).map((spelling) => [spelling, `forged-${spelling}`]))
}

/** A stand-in for oauth2-proxy: 202 with bob's identity for his session cookie, else 401. */
async function authService() {
  const server = createServer((request, response) => {
    if (String(request.headers.cookie).includes('session=bob'))
      response.writeHead(202, { 'x-auth-request-user': 'bob', 'x-auth-request-groups': 'users' }).end()
    else response.writeHead(401).end()
  })
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}/oauth2/auth`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** One HTTP/2 request with the given lower-case headers; resolves with status and body. */
function http2Get(port: number, host: string, path: string, headers: Record<string, string>) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const session = http2Connect(`https://127.0.0.1:${port}`, { servername: host, rejectUnauthorized: false })
    session.once('error', reject)
    const stream = session.request({ ':path': path, ':authority': host, ...headers })
    let status = 0
    let body = ''
    stream.on('response', (head) => {
      status = Number(head[':status'])
    })
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.once('close', () => {
      session.close()
      resolve({ status, body })
    })
    stream.once('error', reject)
    stream.end()
  })
}

/** The forged values that reached an app, by the name the app read them under. */
function leaks(received: Record<string, unknown>): string[] {
  return Object.entries(received)
    .filter(([, value]) => String(value).includes('forged-'))
    .map(([name, value]) => `${name}: ${String(value)}`)
}

describe('headers the gateway vouches for cannot be forged', () => {
  let gateway: RunningGateway
  let wsgi: WsgiApp
  let node: Upstream
  let auth: Awaited<ReturnType<typeof authService>>
  let realtime: Upstream
  const handshakes: IncomingHttpHeaders[] = []

  beforeAll(async () => {
    ;[wsgi, node, auth] = await Promise.all([wsgiEchoApp(), echoUpstream(), authService()])
    realtime = await wsUpstream((socket, request) => {
      handshakes.push(request.headers)
      socket.close()
    })
    const app = (name: string, target: string) =>
      [
        `app: ${name}`,
        `hosts: [${name}.test]`,
        `upstream: { targets: ["${target}"] }`,
        `forwardAuth: { url: "${auth.url}", except: [/public/**] }`,
      ].join('\n')
    gateway = await startGateway({
      policies: {
        'wsgi.yaml': app('wsgi', wsgi.url),
        'node.yaml': app('node', node.url),
        'ws.yaml': app('ws', realtime.url),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([wsgi?.close(), node?.close(), auth?.close(), realtime?.close()])
  })

  /** What an app received, as it reads headers: WSGI environ keys, or Node's lower-cased names. */
  async function received(
    appName: 'wsgi' | 'node',
    protocol: 'HTTP/1.1' | 'HTTP/2',
    path: string,
    headers: Record<string, string>,
  ): Promise<Record<string, unknown>> {
    const host = `${appName}.test`
    const answer =
      protocol === 'HTTP/2'
        ? await http2Get(gateway.ports.https, host, path, headers)
        : await fetchOnce(`https://${host}${path}`, { port: gateway.ports.https, headers })
    expect(answer.status, answer.body).toBe(200)
    const body = JSON.parse(answer.body) as Record<string, unknown>
    return appName === 'wsgi' ? body : (body.headers as Record<string, unknown>)
  }

  const cases = (['wsgi', 'node'] as const).flatMap((appName) =>
    (['HTTP/1.1', 'HTTP/2'] as const).flatMap((protocol) =>
      vouched.map((name) => [appName, protocol, name] as const),
    ),
  )

  it.each(cases)('%s over %s: no spelling of %s passes', async (appName, protocol, name) => {
    // On a path the auth service is not asked about, and beside a real session on one it is.
    const anonymous = await received(appName, protocol, '/public/x', forged(name, protocol === 'HTTP/2'))
    expect(leaks(anonymous)).toEqual([])
    const signedIn = await received(appName, protocol, '/private', {
      cookie: 'session=bob',
      ...forged(name, protocol === 'HTTP/2'),
    })
    expect(leaks(signedIn)).toEqual([])
    const user = appName === 'wsgi' ? signedIn.HTTP_X_AUTH_REQUEST_USER : signedIn['x-auth-request-user']
    expect(user).toBe('bob')
  })

  it('gives the app the verified client address under every client-IP name the client used', async () => {
    const seen = await received('wsgi', 'HTTP/1.1', '/public/x', {
      'X-Client-IP': '6.6.6.6',
      'True-Client-IP': '6.6.6.6',
    })
    expect([seen.HTTP_X_CLIENT_IP, seen.HTTP_TRUE_CLIENT_IP, seen.HTTP_X_REAL_IP]).toEqual([
      '127.0.0.1',
      '127.0.0.1',
      '127.0.0.1',
    ])
  })

  it('drops other names with underscores, as nginx does, and says so in the log and explain', async () => {
    const seen = await received('wsgi', 'HTTP/1.1', '/public/underscored', { X_Custom: 'client' })
    expect(seen).not.toHaveProperty('HTTP_X_CUSTOM')
    const line = await gateway.waitForLog(
      (entry) => entry.msg === 'request' && entry.path === '/public/underscored',
    )
    expect(line.droppedHeaders).toEqual({ x_custom: 'underscore' })
    const explained = await runCli([
      'explain',
      '--policies',
      gateway.policiesDir,
      '--url',
      'https://wsgi.test/public/x',
      '-H',
      'X_Auth_Request_User: admin',
      '-H',
      'X-Forwarded-Prefix: /evil',
    ])
    expect(explained.stdout).toContain('client request headers not forwarded:')
    expect(explained.stdout).toMatch(/x_auth_request_user: only the auth service may set it/)
    expect(explained.stdout).toMatch(
      /x-forwarded-prefix: a forwarding header from a peer the app does not trust/,
    )
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: gateway.ports.admin })).body
    expect(metrics).toMatch(
      /portcullis_request_headers_dropped_total\{app="wsgi",reason="underscore"\} [1-9]/,
    )
    expect(metrics).toMatch(/portcullis_request_headers_dropped_total\{app="wsgi",reason="identity"\} [1-9]/)
  })

  it.each(vouched)('a WebSocket upgrade carries no spelling of %s', async (name) => {
    const before = handshakes.length
    await new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/public/socket`, {
        headers: { host: 'ws.test', ...forged(name, false) },
        rejectUnauthorized: false,
      })
      socket.once('close', () => resolve())
      socket.once('error', reject)
      socket.once('unexpected-response', (_request, response) =>
        reject(new Error(`HTTP ${response.statusCode}`)),
      )
    })
    const handshake = handshakes[before] as IncomingHttpHeaders
    expect(leaks(handshake)).toEqual([])
  })
})
