import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { CompactSign, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listen } from '../../src/demo/echo-app.js'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { type RedisServer, startRedis } from '../support/redis.js'
import { echoUpstream, refusingPort, type Upstream } from '../support/upstreams.js'

/**
 * A stand-in for oauth2-proxy's `/oauth2/auth`: 202 with the user's headers for a valid session
 * cookie, a 302 to sign in for a browser without one, 401 for anything else; `/slow` never answers.
 */
async function authService() {
  const seen: IncomingHttpHeaders[] = []
  const server: Server = createServer((request, response) => {
    seen.push(request.headers)
    if (String(request.headers['x-forwarded-uri']).startsWith('/slow')) return
    if (String(request.headers.cookie).includes('_oauth2_proxy=valid')) {
      response
        .writeHead(202, {
          'x-auth-request-user': 'ada',
          'x-auth-request-email': 'ada@example.com',
          // oauth2-proxy refreshes the session cookie on a pass.
          'set-cookie': '_oauth2_proxy=refreshed; Path=/; Secure; HttpOnly; SameSite=Lax',
        })
        .end()
    } else if (String(request.headers.accept).includes('text/html')) {
      const back = encodeURIComponent(
        `https://${request.headers['x-forwarded-host']}${request.headers['x-forwarded-uri']}`,
      )
      response
        .writeHead(302, {
          location: `https://auth.test/oauth2/sign_in?rd=${back}`,
          'set-cookie': '_oauth2_proxy_csrf=abc; Path=/',
        })
        .end()
    } else {
      response.writeHead(401, { 'content-type': 'text/plain' }).end('Unauthorized')
    }
  })
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}/oauth2/auth`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

describe('forward authentication', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let auth: Awaited<ReturnType<typeof authService>>

  beforeAll(async () => {
    echo = await echoUpstream()
    auth = await authService()
    const app = (name: string, url: string) =>
      policyYaml({
        app: name,
        hosts: [`${name}.test`],
        target: echo.url,
        tls: '  mode: "off"',
        extra: `forwardAuth: { url: "${url}", except: [/public/**], timeout: 700ms }`,
      })
    gateway = await startGateway({
      policies: {
        'secure.yaml': app('secure', auth.url),
        'down.yaml': app('down', `http://127.0.0.1:${refusingPort}/auth`),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([echo?.close(), auth?.close()])
  })

  const ask = (host: string, target: string, headers: Record<string, string> = {}) =>
    fetchOnce(`http://${host}${target}`, { port: gateway.ports.http, headers })

  it('lets a signed-in user through with the identity headers the auth service named, never the client’s own', async () => {
    const answer = await ask('secure.test', '/api/items?x=1', {
      cookie: '_oauth2_proxy=valid',
      'x-auth-request-user': 'mallory',
      'x-auth-request-groups': 'admins',
    })
    expect(answer.status).toBe(200)
    const received = answer.json<{ headers: Record<string, string> }>().headers
    expect(received['x-auth-request-user']).toBe('ada')
    expect(received['x-auth-request-email']).toBe('ada@example.com')
    expect(received).not.toHaveProperty('x-auth-request-groups')
    // The auth service's refreshed session reaches the client; the app never sees it.
    expect(answer.headers['set-cookie']).toEqual([
      '_oauth2_proxy=refreshed; Path=/; Secure; HttpOnly; SameSite=Lax',
    ])
    // The auth service was told what the request was.
    expect(auth.seen.at(-1)).toMatchObject({
      'x-forwarded-method': 'GET',
      'x-forwarded-uri': '/api/items?x=1',
      'x-forwarded-host': 'secure.test',
      'x-forwarded-for': '127.0.0.1',
    })
    const line = await gateway.waitForLog((entry) => entry.msg === 'request' && entry.path === '/api/items')
    expect(line.user).toBe('ada')
  })

  it('passes the auth service’s refusal back: a redirect to sign in, or its 401', async () => {
    const browser = await ask('secure.test', '/dashboard', { accept: 'text/html' })
    expect(browser.status).toBe(302)
    expect(browser.headers.location).toBe(
      'https://auth.test/oauth2/sign_in?rd=https%3A%2F%2Fsecure.test%2Fdashboard',
    )
    expect(String(browser.headers['set-cookie'])).toMatch(/^_oauth2_proxy_csrf=abc; Path=\/; SameSite=Lax$/)
    const script = await ask('secure.test', '/api/items')
    expect([script.status, script.body]).toEqual([401, 'Unauthorized'])
    expect((await ask('secure.test', '/public/logo.png')).status).toBe(200)
  })

  it('never passes a request the auth service did not answer: 502 when it is down, 504 when it is slow', async () => {
    const down = await ask('down.test', '/api')
    expect(down.status).toBe(502)
    expect(down.json()).toMatchObject({ error: { code: 'PCL_AUTH_UNAVAILABLE' } })
    const started = Date.now()
    const slow = await ask('secure.test', '/slow', { cookie: '_oauth2_proxy=valid' })
    expect(slow.status).toBe(504)
    expect(slow.json()).toMatchObject({ error: { code: 'PCL_AUTH_TIMEOUT' } })
    expect(Date.now() - started).toBeLessThan(3000 * timeoutScale)
  })
})

describe('verified JWT claims', () => {
  const issuer = 'https://issuer.test'
  let jwksServer: Server
  let published: JWK[] = []
  let redis: RedisServer
  let gateways: RunningGateway[] = []
  let echo: Upstream
  const keys: Record<string, CryptoKey | Awaited<ReturnType<typeof generateKeyPair>>['privateKey']> = {}

  async function addKey(kid: string, alg: 'RS256' | 'ES256') {
    const pair = await generateKeyPair(alg, { extractable: true })
    keys[kid] = pair.privateKey
    published = [...published, { ...(await exportJWK(pair.publicKey)), kid, alg, use: 'sig' }]
  }

  const token = (
    kid: string,
    alg: 'RS256' | 'ES256',
    claims: Record<string, unknown>,
    options: { audience?: string; expiresIn?: string } = {},
  ) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg, kid })
      .setIssuer(issuer)
      .setAudience(options.audience ?? 'api')
      .setSubject(String(claims.sub ?? 'user-1'))
      .setIssuedAt()
      .setExpirationTime(options.expiresIn ?? '5m')
      .sign(keys[kid] as CryptoKey)

  beforeAll(async () => {
    await addKey('rsa-1', 'RS256')
    await addKey('ec-1', 'ES256')
    jwksServer = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published }))
    })
    const jwksPort = await listen(jwksServer, 0)
    echo = await echoUpstream()
    redis = await startRedis()
    const policy = policyYaml({
      app: 'api',
      hosts: ['api.test'],
      target: echo.url,
      tls: '  mode: "off"',
      extra: [
        'jwt:',
        `  issuer: "${issuer}"`,
        '  audiences: [api]',
        `  jwksUrl: "http://127.0.0.1:${jwksPort}/jwks"`,
        '  paths: [/private/**]',
        'access:',
        '  - { path: /admin/**, require: { claim: role, oneOf: [admin] } }',
        'rateLimits:',
        '  - { name: per-org, match: { path: /runs }, key: "jwt:org_id", limit: 3, window: 1h }',
      ].join('\n'),
    })
    // Two replicas sharing one Redis: a budget keyed on a verified claim is one budget.
    gateways = await Promise.all(
      [0, 1].map(() =>
        startGateway({ policies: { 'api.yaml': policy }, args: ['--redis', redis.url, '--replicas', '2'] }),
      ),
    )
  })

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()))
    await Promise.all([echo?.close(), redis?.stop(), new Promise((resolve) => jwksServer?.close(resolve))])
  })

  const ask = (target: string, bearer?: string, replica = 0) =>
    fetchOnce(`http://api.test${target}`, {
      port: (gateways[replica] as RunningGateway).ports.http,
      headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
    })

  it('accepts RS256 and ES256 tokens of the issuer, and refuses none, expired, foreign-audience and unsigned ones', async () => {
    expect((await ask('/private/x', await token('rsa-1', 'RS256', {}))).status).toBe(200)
    expect((await ask('/private/x', await token('ec-1', 'ES256', {}))).status).toBe(200)
    const missing = await ask('/private/x')
    expect(missing.status).toBe(401)
    expect(missing.headers['www-authenticate']).toBe('Bearer error="invalid_request"')
    const expired = await token('rsa-1', 'RS256', {}, { expiresIn: '-10m' })
    const foreign = await token('rsa-1', 'RS256', {}, { audience: 'other' })
    const [header, payload] = (await token('rsa-1', 'RS256', { role: 'admin' })).split('.')
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`
    const tampered = `${header}.${Buffer.from(JSON.stringify({ iss: issuer, aud: 'api', role: 'admin', exp: 4102444800 })).toString('base64url')}.${'x'.repeat(40)}`
    for (const bad of [expired, foreign, unsigned, tampered]) {
      const refused = await ask('/private/x', bad)
      expect(refused.status).toBe(401)
      expect(refused.json()).toMatchObject({ error: { code: 'PCL_TOKEN_INVALID' } })
      expect(refused.headers['www-authenticate']).toBe('Bearer error="invalid_token"')
    }
  })

  it('refuses a token without an expiry, with one that never comes, or with a claim named twice', async () => {
    const forever = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
      .setIssuer(issuer)
      .setAudience('api')
      .setSubject('user-1')
      .sign(keys['rsa-1'] as CryptoKey)
    // `exp: 1e400` is Infinity once parsed: signed, but good forever too.
    const infinite = await new CompactSign(
      new TextEncoder().encode(`{"iss":"${issuer}","aud":"api","sub":"user-1","exp":1e400}`),
    )
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
      .sign(keys['rsa-1'] as CryptoKey)
    // A claim named twice: jose reads the last, an app's first-wins parser the first.
    const twice = await new CompactSign(
      new TextEncoder().encode(
        `{"iss":"${issuer}","aud":"api","sub":"user-1","exp":${Math.floor(Date.now() / 1000) + 300},"role":"viewer","role":"admin"}`,
      ),
    )
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
      .sign(keys['rsa-1'] as CryptoKey)
    // Off jwt.paths the token is not required: it is simply not verified, so no role reaches the rule.
    expect((await ask('/admin/users', twice)).status).toBe(403)
    for (const bad of [forever, infinite, twice]) {
      const refused = await ask('/private/x', bad)
      expect(refused.status).toBe(401)
      expect(refused.json()).toMatchObject({ error: { code: 'PCL_TOKEN_INVALID' } })
    }
  })

  it('picks up a rotated key from the JWKS', async () => {
    await addKey('rsa-2', 'RS256')
    const rotated = await token('rsa-2', 'RS256', {})
    const deadline = Date.now() + 10_000 * timeoutScale
    let status = 0
    // The JWKS is fetched again for a key id not seen yet, at most once per cool-down of a few seconds.
    while (status !== 200 && Date.now() < deadline) {
      status = (await ask('/private/x', rotated)).status
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 250))
    }
    expect(status).toBe(200)
  })

  it('decides access rules on a verified claim only', async () => {
    expect((await ask('/admin/users', await token('rsa-1', 'RS256', { role: 'admin' }))).status).toBe(200)
    expect(
      (await ask('/admin/users', await token('rsa-1', 'RS256', { role: ['viewer', 'admin'] }))).status,
    ).toBe(200)
    expect((await ask('/admin/users', await token('rsa-1', 'RS256', { role: 'viewer' }))).status).toBe(403)
    expect((await ask('/admin/users')).status).toBe(403)
  })

  it('keys a rate limit on a verified claim, exactly across two replicas, and unsigned tokens cannot escape it', async () => {
    const orgA = await token('rsa-1', 'RS256', { org_id: 'org-a' })
    const statuses: number[] = []
    for (let index = 0; index < 5; index++) statuses.push((await ask('/runs', orgA, index % 2)).status)
    expect(statuses).toEqual([200, 200, 200, 429, 429])
    // Another org has its own budget.
    expect((await ask('/runs', await token('ec-1', 'ES256', { org_id: 'org-b' }), 1)).status).toBe(200)
    // Minting tokens without a valid signature gets no fresh budget: they all count as this address.
    const forged = []
    for (let index = 0; index < 5; index++) {
      const claims = Buffer.from(
        JSON.stringify({ iss: issuer, aud: 'api', org_id: `fake-${index}` }),
      ).toString('base64url')
      forged.push(
        (
          await ask(
            '/runs',
            `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${claims}.sig`,
            index % 2,
          )
        ).status,
      )
    }
    expect(forged).toEqual([200, 200, 200, 429, 429])
  })
})

/**
 * An auth service that passes exactly one question per session cookie, the first it is asked, and
 * refuses every other: a cached pass reused for another question shows up as a 200 it never gave.
 */
async function oneShotAuthService() {
  const asked: IncomingHttpHeaders[] = []
  const passed = new Set<string>()
  let cacheControl: string | undefined
  const server: Server = createServer((request, response) => {
    asked.push(request.headers)
    const session = String(request.headers.cookie ?? '')
    if (session && !passed.has(session)) {
      passed.add(session)
      response
        .writeHead(200, {
          'x-auth-request-user': session.replace('session=', ''),
          ...(cacheControl ? { 'cache-control': cacheControl } : {}),
        })
        .end()
    } else {
      response.writeHead(401).end()
    }
  })
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}/auth`,
    asked,
    answerWith(value: string | undefined) {
      cacheControl = value
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

describe('a forward-auth cache', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let auth: Awaited<ReturnType<typeof oneShotAuthService>>
  let sessions = 0

  beforeAll(async () => {
    echo = await echoUpstream()
    auth = await oneShotAuthService()
    gateway = await startGateway({
      policies: {
        'cached.yaml': policyYaml({
          app: 'cached',
          hosts: ['fa.test', 'admin.fa.test'],
          target: echo.url,
          tls: '  mode: "off"',
          extra: [
            `forwardAuth: { url: "${auth.url}", cacheTtl: 1m, requestHeaders: [cookie, authorization, accept, x-api-key] }`,
            // The peer (this test) is a trusted proxy, so X-Forwarded-For names the client.
            'clientIp: { trustedProxies: [127.0.0.1/32] }',
            'routes:',
            '  - { path: /v1/**, stripPrefix: /v1 }',
          ].join('\n'),
        }),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([echo?.close(), auth?.close()])
  })

  interface Question {
    method?: string
    host?: string
    target?: string
    client?: string
    headers?: Record<string, string>
  }

  const ask = (session: string, question: Question) =>
    fetchOnce(`http://${question.host ?? 'fa.test'}${question.target ?? '/doc/1'}`, {
      port: gateway.ports.http,
      method: question.method ?? 'GET',
      headers: {
        cookie: session,
        'x-forwarded-for': question.client ?? '198.51.100.7',
        ...question.headers,
      },
    })

  it.each<[string, Question]>([
    ['the path', { target: '/private' }],
    ['the query', { target: '/doc/1?as=admin' }],
    ['the method', { method: 'DELETE' }],
    ['the host', { host: 'admin.fa.test' }],
    ['the client address', { client: '203.0.113.9' }],
    ['a forwarded header (accept)', { headers: { accept: 'text/html' } }],
    ['a forwarded header the first request lacked (x-api-key)', { headers: { 'x-api-key': 'alice-key' } }],
    ['the authorization', { headers: { authorization: 'Bearer other' } }],
  ])('does not reuse a pass when only %s changes', async (_dimension, changed) => {
    const session = `session=user-${++sessions}`
    expect((await ask(session, {})).status).toBe(200)
    const before = auth.asked.length
    expect((await ask(session, changed)).status).toBe(401)
    expect(auth.asked.length).toBe(before + 1)
    // The same question again is answered from the cache, without asking.
    expect((await ask(session, {})).status).toBe(200)
    expect(auth.asked.length).toBe(before + 1)
  })

  it('asks with the host as routing reads it, so every spelling of one host is one question', async () => {
    const session = `session=user-${++sessions}`
    expect((await ask(session, { host: 'ADMIN.FA.TEST.' })).status).toBe(200)
    expect(auth.asked.at(-1)?.['x-forwarded-host']).toBe('admin.fa.test')
    const before = auth.asked.length
    expect((await ask(session, { host: 'admin.fa.test' })).status).toBe(200)
    expect(auth.asked.length).toBe(before)
  })

  it('tells the auth service and the app one host and protocol, and no forwarded host of another app', async () => {
    const seen = async (headers: Record<string, string>) => {
      const answer = await ask(`session=user-${++sessions}`, { headers })
      const app = answer.json<{ headers: Record<string, string> }>().headers
      const question = auth.asked.at(-1) ?? {}
      return {
        status: answer.status,
        app: [app.host, app['x-forwarded-host'], app['x-forwarded-proto']],
        auth: [question['x-forwarded-host'], question['x-forwarded-proto']],
      }
    }
    // The trusted proxy names a host of this app and the protocol its client used: both are told so.
    expect(await seen({ 'x-forwarded-host': 'ADMIN.fa.test', 'x-forwarded-proto': 'https' })).toEqual({
      status: 200,
      app: ['fa.test', 'admin.fa.test', 'https'],
      auth: ['admin.fa.test', 'https'],
    })
    // A name that routes elsewhere (or nowhere) is not taken: the app and the auth service get the routed host.
    expect(await seen({ 'x-forwarded-host': 'evil.test' })).toEqual({
      status: 200,
      app: ['fa.test', 'fa.test', 'http'],
      auth: ['fa.test', 'http'],
    })
  })

  it('tells the auth service the path the upstream receives after a route strips its prefix', async () => {
    const session = `session=user-${++sessions}`
    const answer = await ask(session, { target: '/v1/items?x=1' })
    expect(answer.status).toBe(200)
    expect(auth.asked.at(-1)?.['x-forwarded-uri']).toBe('/items?x=1')
    expect(answer.json<{ url: string }>().url).toBe('/items?x=1')
  })

  it.each(['no-store', 'private', 'no-cache', 'max-age=0'])(
    'never caches an answer that says %s',
    async (value) => {
      auth.answerWith(value)
      try {
        const session = `session=user-${++sessions}`
        expect((await ask(session, {})).status).toBe(200)
        // Asked again: refused, since the one-shot service passes a session once.
        expect((await ask(session, {})).status).toBe(401)
      } finally {
        auth.answerWith(undefined)
      }
    },
  )

  it('never caches a refusal as a pass', async () => {
    const before = auth.asked.length
    expect((await ask('', {})).status).toBe(401)
    expect((await ask('', {})).status).toBe(401)
    expect(auth.asked.length).toBe(before + 2)
  })
})
