import { describe, expect, it } from 'vitest'
import { CookieHardener } from '../../src/guards/cookies.js'
import { cacheableFor } from '../../src/guards/forward-auth.js'
import { SecurityHeaders } from '../../src/guards/headers.js'
import { BodyLimitsGuard, HeadLimitsGuard } from '../../src/guards/limits.js'
import { WebSocketGuard } from '../../src/guards/websocket.js'
import {
  compilePathPattern,
  isPathPattern,
  patternsOverlap,
  rewrittenPath,
  rewrittenPattern,
} from '../../src/net/path-pattern.js'
import { cookiesSchema, headersSchema, limitsSchema, websocketSchema } from '../../src/policy/schema.js'

describe('security headers', () => {
  it('adds helmet’s headers where the app set none, keeps the app’s, removes Server and X-Powered-By', () => {
    const headers = new SecurityHeaders(
      headersSchema.parse({ set: { 'x-extra': 'yes' }, remove: ['x-debug'] }),
    )
    const edited: Record<string, string> = {
      server: 'gunicorn',
      'x-powered-by': 'Express',
      'x-debug': '1',
      'x-frame-options': 'DENY',
      'content-type': 'text/html',
    }
    const kept = Object.fromEntries(Object.entries(edited).filter(([name]) => !headers.drops(name)))
    headers.edit(kept)
    expect(kept).toMatchObject({
      'x-frame-options': 'DENY',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'strict-origin-when-cross-origin',
      'x-extra': 'yes',
      'content-type': 'text/html',
    })
    // By default nothing a correct app could break on: no COOP (OAuth popups), CORP (its images on
    // another origin), COEP or Origin-Agent-Cluster (document.domain).
    for (const name of [
      'cross-origin-opener-policy',
      'cross-origin-resource-policy',
      'cross-origin-embedder-policy',
      'origin-agent-cluster',
    ])
      expect(kept).not.toHaveProperty(name)
    expect(kept).not.toHaveProperty('server')
    expect(kept).not.toHaveProperty('x-powered-by')
    expect(kept).not.toHaveProperty('x-debug')
    expect(kept).not.toHaveProperty('content-security-policy')
    expect(kept).not.toHaveProperty('strict-transport-security')
  })

  it('sends a CSP only when configured, and lets a policy switch headers off', () => {
    const headers = new SecurityHeaders(
      headersSchema.parse({
        contentSecurityPolicy: "default-src 'self'",
        frameOptions: 'off',
        crossOriginOpenerPolicy: 'same-origin',
        crossOriginResourcePolicy: 'same-site',
        crossOriginEmbedderPolicy: 'credentialless',
      }),
    )
    const edited: Record<string, string> = {}
    headers.edit(edited)
    expect(edited['content-security-policy']).toBe("default-src 'self'")
    expect(edited).not.toHaveProperty('x-frame-options')
    expect(edited).toMatchObject({
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-resource-policy': 'same-site',
      'cross-origin-embedder-policy': 'credentialless',
    })
  })
})

describe('cookie hardening', () => {
  const hardener = new CookieHardener(
    cookiesSchema.parse({ exclude: ['csrf'], httpOnly: ['sid', '*_session'] }),
  )
  it.each([
    ['sid=1', true, 'sid=1; Secure; HttpOnly; SameSite=Lax'],
    ['sid=1', false, 'sid=1; HttpOnly; SameSite=Lax'],
    ['app_session=1', true, 'app_session=1; Secure; HttpOnly; SameSite=Lax'],
    [
      'sid=1; Path=/; secure; httponly; samesite=Strict',
      true,
      'sid=1; Path=/; secure; httponly; samesite=Strict',
    ],
    ['sid=1; SameSite=None', true, 'sid=1; SameSite=None; Secure; HttpOnly'],
    ['csrf=abc; Path=/', true, 'csrf=abc; Path=/'],
    // A cookie scripts read (axios and Angular copy XSRF-TOKEN into a header) is never made HttpOnly.
    ['XSRF-TOKEN=t; Path=/', true, 'XSRF-TOKEN=t; Path=/; Secure; SameSite=Lax'],
    ['sidx=1', false, 'sidx=1; SameSite=Lax'],
  ])('%s (https: %s) → %s', (cookie, secure, expected) => {
    expect(hardener.harden(cookie, secure)).toEqual([expected])
  })

  it('never adds SameSite=None without Secure', () => {
    const none = new CookieHardener(cookiesSchema.parse({ sameSite: 'None' }))
    expect(none.harden('a=1', false)).toEqual(['a=1'])
    expect(none.harden('a=1', true)).toEqual(['a=1; Secure; SameSite=None'])
  })

  it('refuses httpOnly: true, which would hide every cookie from scripts', () => {
    const parsed = cookiesSchema.safeParse({ httpOnly: true })
    expect(parsed.success).toBe(false)
    expect(parsed.error?.issues[0]?.message).toMatch(/never added to every cookie/)
  })
})

describe('limits', () => {
  const section = limitsSchema.parse({
    maxBodySize: '1kb',
    bodySizes: [{ path: '/api/manifests/**', max: '64kb' }],
    maxUrlLength: 64,
    maxHeaderSize: '1kb',
  })
  const head = new HeadLimitsGuard(section)
  const body = new BodyLimitsGuard(section)
  const declaring = (path: string, length: string, rewrittenTo?: string) => ({
    path,
    rewritten: rewrittenTo === undefined ? undefined : { path: rewrittenTo, target: rewrittenTo },
    headers: { 'content-length': length },
    bodyLimit: undefined,
  })
  it('refuses long targets and large headers before anything else', () => {
    expect(head.check({ url: `/${'a'.repeat(64)}`, rawHeaders: [] })).toMatchObject({
      code: 'PCL_URL_TOO_LONG',
    })
    expect(head.check({ url: '/', rawHeaders: ['x-big', 'a'.repeat(1100)] })).toMatchObject({
      code: 'PCL_HEADERS_TOO_LARGE',
    })
    expect(head.check({ url: '/', rawHeaders: ['x', 'y'] })).toEqual({ kind: 'allow' })
  })
  it('applies the first matching per-path body limit, else the global one', () => {
    const manifest = declaring('/api/manifests/x', '1025')
    expect(body.check(manifest)).toEqual({ kind: 'allow' })
    expect(manifest.bodyLimit).toEqual({ max: 65_536, rule: 'limits.bodySizes[0] /api/manifests/**' })
    const other = declaring('/other', '1025')
    expect(body.check(other)).toMatchObject({ code: 'PCL_BODY_TOO_LARGE' })
    expect(other.bodyLimit).toEqual({ max: 1024, rule: 'limits.maxBodySize' })
    // A route's rewrite onto a path with a smaller limit: the smaller one holds.
    const big = declaring('/api/manifests/x', '2000', '/other')
    expect(body.check(big)).toMatchObject({ code: 'PCL_BODY_TOO_LARGE', rule: 'limits.maxBodySize' })
  })
})

describe('WebSocket guard', () => {
  const guard = new WebSocketGuard(
    'app',
    websocketSchema.parse({
      maxConnections: 10,
      maxConnectionsPerIp: 2,
      paths: [
        { path: '/realtime/**', requireOrigin: true },
        { path: '/public', allowedOrigins: ['*'] },
      ],
    }),
    ['https://app.example.com'],
  )
  const none = { app: 0, ip: 0 }
  it.each([
    ['/realtime/x', { origin: 'https://app.example.com' }, none, 'allow'],
    ['/realtime/x', {}, none, 'PCL_WS_ORIGIN_DENIED'],
    ['/realtime/x', { origin: 'https://evil.test' }, none, 'PCL_WS_ORIGIN_DENIED'],
    ['/other', { origin: 'https://evil.test' }, none, 'PCL_WS_ORIGIN_DENIED'],
    ['/other', {}, none, 'allow'],
    // A browser always names the Origin of a handshake; one that says another site and names none is refused.
    ['/other', { 'sec-fetch-site': 'cross-site' }, none, 'PCL_WS_ORIGIN_DENIED'],
    ['/other', { 'sec-fetch-site': 'same-origin' }, none, 'allow'],
    ['/public', { origin: 'https://anyone.test' }, none, 'allow'],
    // Same-origin means scheme, host and port; the browser's Sec-Fetch-Site decides when it is sent.
    ['/other', { origin: 'https://ws.test', host: 'ws.test' }, none, 'allow'],
    ['/other', { origin: 'http://ws.test', host: 'ws.test' }, none, 'PCL_WS_ORIGIN_DENIED'],
    [
      '/other',
      { origin: 'http://ws.test', host: 'ws.test', 'sec-fetch-site': 'cross-site' },
      none,
      'PCL_WS_ORIGIN_DENIED',
    ],
    [
      '/other',
      { origin: 'https://ws.test', host: 'ws.test', 'sec-fetch-site': 'same-site' },
      none,
      'PCL_WS_ORIGIN_DENIED',
    ],
    ['/other', {}, { app: 10, ip: 0 }, 'PCL_WS_TOO_MANY_CONNECTIONS'],
    ['/other', {}, { app: 3, ip: 2 }, 'PCL_WS_TOO_MANY_CONNECTIONS'],
  ])('%s %j with %j → %s', (matchPath, headers, live, expected) => {
    const decision = guard.check({
      path: matchPath,
      rewritten: undefined,
      secure: true,
      headers,
      identity: { ip: '192.0.2.1', via: 'peer', chain: ['192.0.2.1'], peerTrusted: false },
      services: { liveWebSockets: () => live },
    })
    expect(decision.kind === 'deny' ? decision.code : decision.kind).toBe(expected)
  })
})

describe('path patterns', () => {
  it.each([
    ['/studio/**', '/studio', true],
    ['/studio/**', '/studio/a/b', true],
    ['/studio/**', '/studiox', false],
    ['/admin', '/admin/', true],
    ['/admin', '/admin/x', false],
    ['/w/*/db', '/w/1/db', true],
    ['/w/*/db', '/w//db', false],
    ['/', '/', true],
    ['/', '/x', false],
    ['/**', '/anything/at/all', true],
  ])('%s matches %s: %s', (pattern, path, expected) => {
    expect(compilePathPattern(pattern, true).test(path)).toBe(expected)
  })
  it.each(['studio', '/a/**/b', '/a**', '/a?b', '/a/../b', '/a//b'])('refuses %s', (pattern) => {
    expect(isPathPattern(pattern)).toBe(false)
  })
  it.each([
    ['/**', '/admin/**', true],
    ['/v1/**', '/admin/**', false],
    ['/admin', '/admin/**', true],
    ['/ADMIN/x', '/admin/*', true],
    ['/a/*/c', '/a/b/*', true],
    ['/a/*/c', '/a/b/d', false],
    ['/', '/**', true],
    ['/', '/x', false],
    ['/metrics/', '/metrics', true],
  ])('%s and %s overlap: %s', (first, second, expected) => {
    expect([patternsOverlap(first, second), patternsOverlap(second, first)]).toEqual([expected, expected])
  })
  it.each([
    ['/v1/admin/x', { stripPrefix: '/v1' }, '/admin/x'],
    ['/V1/admin', { stripPrefix: '/v1' }, '/admin'],
    ['/v1', { stripPrefix: '/v1' }, '/'],
    ['/v10/x', { stripPrefix: '/v1' }, '/v10/x'],
    ['/old/users', { stripPrefix: '/old', addPrefix: '/admin' }, '/admin/users'],
    ['/x', { addPrefix: '/api' }, '/api/x'],
  ])('rewrites %s with %j to %s', (path, rewrite, expected) => {
    expect(rewrittenPath(path, rewrite)).toBe(expected)
  })
  it.each([
    ['/v1/**', { stripPrefix: '/v1' }, '/**'],
    ['/old/**', { stripPrefix: '/old', addPrefix: '/admin' }, '/admin/**'],
    // A strip past the pattern's literal part can leave any path.
    ['/api/**', { stripPrefix: '/api/v2' }, '/**'],
    ['/t/*/**', { stripPrefix: '/t/a' }, '/**'],
    ['/media/**', { stripPrefix: '/other' }, '/media/**'],
    ['/x', { addPrefix: '/api' }, '/api/x'],
  ])('a route %s with %j reaches the upstream as %s', (pattern, rewrite, expected) => {
    expect(rewrittenPattern(pattern, rewrite)).toBe(expected)
  })
})

describe('forward-auth answers and the cache', () => {
  it.each([
    [undefined, 60_000],
    ['max-age=30', 30_000],
    ['s-maxage=10, max-age=30', 10_000],
    ['max-age=600', 60_000],
    ['max-age = 5', 5_000],
    ['max-age="5"', 5_000],
    ['public, max-age=0', 0],
    ['no-store', 0],
    ['No-Cache', 0],
    ['private="set-cookie"', 0],
    ['no-store;', 0],
    ['max-age=abc', 0],
    ['max-age=', 0],
    ['max-age=0, max-age=60', 0],
    [['max-age=30', 'no-store'], 0],
  ])('Cache-Control %j lets a pass be reused for %d ms (cacheTtl 1m)', (cacheControl, ttl) => {
    expect(cacheableFor(cacheControl, 60_000)).toBe(ttl)
  })
})
