import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { fetchOnce } from '../support/clients.js'
import { makePolicyDir, type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/** Opens a WebSocket through the gateway; resolves with the socket, or the status of the refusal. */
function upgrade(
  url: string,
  headers: Record<string, string>,
  localAddress?: string,
): Promise<{ status: number; socket?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, {
      headers,
      rejectUnauthorized: false,
      ...(localAddress ? { localAddress } : {}),
    })
    socket.once('open', () => resolve({ status: 101, socket }))
    socket.once('unexpected-response', (_request, response) => {
      response.resume()
      resolve({ status: response.statusCode ?? 0 })
    })
    socket.once('error', reject)
  })
}

describe('same-origin means scheme, host and port', () => {
  let gateway: RunningGateway
  let echo: Upstream

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'app.yaml': [
          'app: app',
          'hosts: [app.test]',
          `upstream: { targets: ["${echo.url}"] }`,
          // A foreign origin is refused; the app's own pages need no listing.
          'cors: { origins: [https://front.example.com], onDisallowed: reject }',
        ].join('\n'),
      },
      args: ['--log-level', 'debug'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  const post = (headers: Record<string, string>) =>
    fetchOnce('https://app.test/form', { port: gateway.ports.https, method: 'POST', headers, body: 'x=1' })

  it.each([
    ['its own https origin', { origin: 'https://app.test' }, 200],
    ['its own origin with the default port', { origin: 'https://app.test:443' }, 200],
    [
      'its own origin, the browser saying same-origin',
      { origin: 'https://app.test', 'sec-fetch-site': 'same-origin' },
      200,
    ],
    ['the same host over http', { origin: 'http://app.test' }, 403],
    [
      'the same host over http, cross-site',
      { origin: 'http://app.test', 'sec-fetch-site': 'cross-site' },
      403,
    ],
    [
      'its own origin, but the browser says cross-site',
      { origin: 'https://app.test', 'sec-fetch-site': 'cross-site' },
      403,
    ],
    [
      'its own origin, but the browser says same-site',
      { origin: 'https://app.test', 'sec-fetch-site': 'same-site' },
      403,
    ],
    ['the same host on another port', { origin: 'https://app.test:8443' }, 403],
  ])('a form POST from %s: %s', async (_case, headers, status) => {
    const answer = await post(headers)
    expect(answer.status, answer.body).toBe(status)
    if (status === 403) expect(answer.json()).toMatchObject({ error: { code: 'PCL_CORS_ORIGIN_DENIED' } })
  })

  it('logs at debug level every header of an answer the gateway added or removed', async () => {
    const answer = await fetchOnce('https://app.test/page', { port: gateway.ports.https })
    const id = answer.headers['x-request-id']
    const line = await gateway.waitForLog(
      (entry) => entry.msg === 'response headers edited' && entry.reqId === id,
    )
    expect(line.responseHeaderEdits).toMatchObject({
      'x-content-type-options': 'added: nosniff',
      'strict-transport-security': 'added: max-age=31536000',
      vary: 'added: Origin',
    })
  })

  it.each([
    ['its own https origin', { origin: 'https://app.test' }, 101],
    ['the same host over http', { origin: 'http://app.test' }, 403],
    [
      'the same host over http, cross-site',
      { origin: 'http://app.test', 'sec-fetch-site': 'cross-site' },
      403,
    ],
    [
      'its own origin, but the browser says cross-site',
      { origin: 'https://app.test', 'sec-fetch-site': 'cross-site' },
      403,
    ],
  ])('a WebSocket from %s: %s', async (_case, headers, status) => {
    const result = await upgrade(`wss://127.0.0.1:${gateway.ports.https}/socket`, {
      host: 'app.test',
      ...headers,
    })
    result.socket?.close()
    expect(result.status).toBe(status)
  })
})

describe('a path rewrite never lands past an access rule', () => {
  let gateway: RunningGateway
  let echo: Upstream
  const policy = (target: string) =>
    [
      'app: api',
      'hosts: [api.test]',
      `upstream: { targets: ["${target}"] }`,
      'tls: { mode: "off" }',
      'access:',
      '  - { path: /admin/**, allow: [10.0.0.0/8] }',
      'rateLimits: [{ name: login, match: { path: /login, methods: [POST] }, limit: 2, window: 1h }]',
      'limits: { bodySizes: [{ path: /upload, max: 10b }] }',
      'websocket: { paths: [{ path: /adminws/**, requireOrigin: true }] }',
      'routes:',
      // Onto the app's own targets: /v1/admin/x reaches the app as /admin/x.
      '  - name: v1',
      '    path: /v1/**',
      '    stripPrefix: /v1',
      '    access: [{ path: /secret/**, deny: all }]',
      '  - name: legacy',
      '    path: /old/**',
      '    stripPrefix: /old',
      '    addPrefix: /admin',
      // A pool of its own, on another server: /v1's rewrites cannot land on its paths.
      `    upstream: { targets: ["${target.replace(/:\d+$/, ':9')}"] }`,
    ].join('\n')

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({ policies: { 'api.yaml': policy(echo.url) } })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  const get = (target: string) => fetchOnce(`http://api.test${target}`, { port: gateway.ports.http })

  it.each([
    ['/v1/admin/x', 'access[0] /admin/** (the path routes[0] v1 rewrites to)'],
    ['/v1/ADMIN/x', 'access[0] /admin/** (the path routes[0] v1 rewrites to)'],
    ['/v1//admin/./x', 'access[0] /admin/** (the path routes[0] v1 rewrites to)'],
    ['/v1/secret/y', 'routes[0].access[0] /secret/** (the path routes[0] v1 rewrites to)'],
    ['/old/users', 'access[0] /admin/** (the path routes[1] legacy rewrites to)'],
  ])('%s is refused by %s', async (target, rule) => {
    const answer = await get(target)
    expect(answer.status).toBe(403)
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_ACCESS_DENIED' } })
    const id = answer.headers['x-request-id']
    const line = await gateway.waitForLog((entry) => entry.msg === 'request' && entry.reqId === id)
    expect([line.rule, line.route]).toEqual([rule, rule.includes('legacy') ? 'legacy' : 'v1'])
  })

  it('counts a login limit, a body size and a WebSocket path rule on the rewritten path too', async () => {
    const login = (target: string) =>
      fetchOnce(`http://api.test${target}`, { port: gateway.ports.http, method: 'POST', body: 'u=a' })
    const statuses = [
      (await login('/login')).status,
      (await login('/v1/login')).status,
      (await login('/v1/login')).status,
      (await login('/login')).status,
    ]
    expect(statuses).toEqual([200, 200, 429, 429])
    const upload = await fetchOnce('http://api.test/v1/upload', {
      port: gateway.ports.http,
      method: 'POST',
      body: 'x'.repeat(20),
    })
    expect(upload.status).toBe(413)
    const socket = await upgrade(`ws://127.0.0.1:${gateway.ports.http}/v1/adminws/x`, { host: 'api.test' })
    socket.socket?.close()
    expect(socket.status).toBe(403)
  })

  /** `portcullis check` of an app on http://127.0.0.1:1 with these routes (clash.yaml, routes from line 5). */
  const checkRoutes = async (routes: string[]) =>
    runCli([
      'check',
      await makePolicyDir({
        'clash.yaml': [
          'app: clash',
          'hosts: [clash.test]',
          'upstream: { targets: ["http://127.0.0.1:1"] }',
          'routes:',
          ...routes,
        ].join('\n'),
      }),
    ])

  it('refuses a policy whose rewrite lands on paths another route takes on the same targets', async () => {
    const { code, stdout } = await checkRoutes([
      '  - { path: /v1/**, stripPrefix: /v1 }',
      '  - { path: /adm/**, access: [{ path: /adm/**, deny: all }] }',
    ])
    expect(code).toBe(2)
    expect(stdout).toMatch(
      /clash\.yaml:5:\d+ routes\[0\]\.stripPrefix: rewrites \/v1\/\*\* to \/\*\*, onto paths routes\[1\] \(\/adm\/\*\*\) takes on the same targets/,
    )
  })

  it.each([
    [
      'a strip past the literal part',
      [
        '  - { path: /api/**, stripPrefix: /api/v2 }',
        '  - { path: /adm/**, access: [{ path: /adm/**, deny: all }] }',
      ],
    ],
    [
      'routes that name the same targets',
      [
        '  - { path: /v1/**, stripPrefix: /v1, upstream: { targets: ["http://127.0.0.1:1"] } }',
        '  - { path: /adm/**, upstream: { targets: ["HTTP://127.0.0.1:1"] }, access: [{ path: /adm/**, deny: all }] }',
      ],
    ],
    [
      'targets spelled apart',
      [
        '  - { path: /v1/**, stripPrefix: /v1, upstream: { targets: ["http://127.0.0.1:1/"] } }',
        '  - { path: /adm/**, upstream: { targets: ["dns+http://localhost:1"] }, access: [{ path: /adm/**, deny: all }] }',
      ],
    ],
  ])('refuses the same clash through %s', async (_case, routes) => {
    const { code, stdout } = await checkRoutes(routes)
    expect(code).toBe(2)
    expect(stdout).toMatch(
      /routes\[0\]\.stripPrefix: rewrites .* onto paths routes\[1\] \(\/adm\/\*\*\) takes/,
    )
  })

  it('warns where a rewrite reaches another route’s rule on targets that may be one server', async () => {
    const { code, stdout } = await checkRoutes([
      '  - { path: /v1/**, stripPrefix: /v1, upstream: { targets: ["http://db.internal:8080"] } }',
      '  - { path: /adm/**, upstream: { targets: ["http://10.0.0.5:8080"] }, access: [{ path: /adm/**, deny: all }] }',
    ])
    expect(code).toBe(0)
    expect(stdout).toMatch(
      /clash\.yaml:5:\d+ PCL-ROUTE-REWRITE-RESTRICTED warning: the route rewrites \/v1\/\*\* to \/\*\*, where routes\[1\]\.access\[0\] \(\/adm\/\*\*\) restricts requests to routes\[1\] only/,
    )
  })

  it.each(['/%2e%2e', '/v1/../admin', '/a%2Fb'])('refuses a route prefix %s', async (prefix) => {
    const { code, stdout } = await checkRoutes([`  - { path: /v1/**, stripPrefix: "${prefix}" }`])
    expect(code).toBe(2)
    expect(stdout).toMatch(/routes\[0\]\.stripPrefix: must/)
  })

  it('still serves what the rules allow, rewritten', async () => {
    const answer = await get('/v1/items?x=1')
    expect(answer.status).toBe(200)
    expect(answer.json<{ url: string }>().url).toBe('/items?x=1')
  })

  it('is reported by check, at the route’s rewrite', async () => {
    const { stdout } = await runCli(['check', gateway.policiesDir])
    expect(stdout).toMatch(
      /api\.yaml:\d+:\d+ PCL-ROUTE-REWRITE-RESTRICTED warning: the route rewrites \/v1\/\*\*, which no access rule names, to \/\*\*, which access\[0\] \(\/admin\/\*\*\) restricts/,
    )
    expect(stdout).toMatch(
      /PCL-ROUTE-REWRITE-RESTRICTED warning: the route rewrites \/old\/\*\*, which no access rule names, to \/admin\/\*\*/,
    )
  })
})

describe('a route that sets only maxMessageSize', () => {
  let gateway: RunningGateway
  let echo: Upstream
  const open: WebSocket[] = []

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'chat.yaml': [
          'app: chat',
          'hosts: [chat.test]',
          `upstream: { targets: ["${echo.url}"] }`,
          'tls: { mode: "off" }',
          'websocket: { maxConnections: 3, maxConnectionsPerIp: 2 }',
          'routes:',
          '  - { path: /big/**, websocket: { maxMessageSize: 4mb } }',
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    for (const socket of open) socket.close()
    await gateway?.stop()
    await echo?.close()
  })

  const connect = async (path: string, from: string) => {
    const result = await upgrade(`ws://127.0.0.1:${gateway.ports.http}${path}`, { host: 'chat.test' }, from)
    if (result.socket) open.push(result.socket)
    return result.status
  }

  it('counts its WebSockets against the app’s caps, not a copy of them', async () => {
    // Per IP: two in all, whichever path.
    expect(await connect('/ws', '127.0.0.1')).toBe(101)
    expect(await connect('/big/x', '127.0.0.1')).toBe(101)
    expect(await connect('/big/y', '127.0.0.1')).toBe(429)
    // For the app: three in all.
    expect(await connect('/big/z', '127.0.0.2')).toBe(101)
    expect(await connect('/ws', '127.0.0.3')).toBe(429)
    expect(await connect('/big/w', '127.0.0.3')).toBe(429)
  })
})
