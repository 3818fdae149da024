import { describe, expect, it } from 'vitest'
import { CorsGuard } from '../../src/guards/cors.js'
import { OriginMatcher } from '../../src/net/origin.js'
import { corsSchema } from '../../src/policy/schema.js'

describe('origin allowlist', () => {
  const matcher = new OriginMatcher([
    'https://app.example.com',
    'https://*.example.org',
    'http://localhost:3000',
  ])
  it.each([
    ['https://app.example.com', 'https://app.example.com'],
    ['HTTPS://APP.EXAMPLE.COM:443', 'https://app.example.com'],
    ['https://app.example.com:8443', undefined],
    ['http://app.example.com', undefined],
    ['https://evilapp.example.com', undefined],
    ['https://app.example.com.evil.net', undefined],
    ['https://a.example.org', 'https://a.example.org'],
    ['https://a.b.example.org', 'https://a.b.example.org'],
    ['https://example.org', undefined],
    ['https://evilexample.org', undefined],
    ['https://example.org.evil.net', undefined],
    ['http://localhost:3000', 'http://localhost:3000'],
    ['null', undefined],
    ['https://app.example.com/path', undefined],
    ['https://user@app.example.com', undefined],
    ['garbage', undefined],
  ])('%s → %s', (origin, expected) => expect(matcher.match(origin)).toBe(expected))

  it('null only when listed', () => expect(new OriginMatcher(['null']).match('null')).toBe('null'))
})

describe('CORS decisions', () => {
  const guard = new CorsGuard(
    corsSchema.parse({
      origins: ['https://app.example.com'],
      credentials: true,
      exposedHeaders: ['x-total'],
      maxAge: '1h',
    }),
  )
  const omitting = new CorsGuard(
    corsSchema.parse({ origins: ['https://app.example.com'], onDisallowed: 'omit' }),
  )

  it('answers an allowed preflight itself', () => {
    expect(
      guard.check({
        secure: true,
        method: 'OPTIONS',
        headers: {
          origin: 'https://app.example.com',
          'access-control-request-method': 'PUT',
          'access-control-request-headers': 'Content-Type',
        },
      }),
    ).toEqual({
      kind: 'answer',
      status: 204,
      rule: 'cors',
      headers: {
        'access-control-allow-origin': 'https://app.example.com',
        'access-control-allow-credentials': 'true',
        'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
        'access-control-allow-headers': 'content-type, authorization, x-requested-with',
        'access-control-max-age': '3600',
        vary: 'Origin',
      },
    })
  })

  it.each([
    [
      { origin: 'https://evil.example.com', 'access-control-request-method': 'GET' },
      'PCL_CORS_ORIGIN_DENIED',
    ],
    [
      { origin: 'https://app.example.com', 'access-control-request-method': 'TRACE' },
      'PCL_CORS_METHOD_DENIED',
    ],
    [
      {
        origin: 'https://app.example.com',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'x-admin',
      },
      'PCL_CORS_HEADER_DENIED',
    ],
  ])('refuses preflight %j', (headers, code) => {
    expect(guard.check({ secure: true, method: 'OPTIONS', headers })).toMatchObject({ kind: 'deny', code })
  })

  it('grants an allowed actual request, exact origin and credentials', () => {
    expect(
      guard.check({ secure: true, method: 'GET', headers: { origin: 'https://app.example.com' } }),
    ).toEqual({
      kind: 'allow',
      responseHeaders: {
        'access-control-allow-origin': 'https://app.example.com',
        'access-control-allow-credentials': 'true',
        'access-control-expose-headers': 'x-total',
        vary: 'Origin',
      },
    })
  })

  it('rejects or omits a disallowed actual request, and always varies on Origin', () => {
    expect(
      guard.check({ secure: true, method: 'POST', headers: { origin: 'https://evil.test' } }),
    ).toMatchObject({
      kind: 'deny',
      code: 'PCL_CORS_ORIGIN_DENIED',
    })
    expect(
      omitting.check({ secure: true, method: 'POST', headers: { origin: 'https://evil.test' } }),
    ).toEqual({
      kind: 'allow',
      responseHeaders: { vary: 'Origin' },
    })
    expect(guard.check({ secure: true, method: 'GET', headers: {} })).toEqual({
      kind: 'allow',
      responseHeaders: { vary: 'Origin' },
    })
  })

  it.each([
    ['Origin is the request host', { origin: 'https://db.example.com', host: 'db.example.com' }],
    ['Origin is the HTTP/2 authority', { origin: 'https://db.example.com', ':authority': 'db.example.com' }],
    ['Host carries the default port', { origin: 'https://db.example.com', host: 'db.example.com:443' }],
    ['Origin: null, Sec-Fetch-Site: same-origin', { origin: 'null', 'sec-fetch-site': 'same-origin' }],
    ['a navigation the user typed', { origin: 'https://other.test', 'sec-fetch-site': 'none' }],
    ['Host as a client spells it', { origin: 'https://db.example.com', host: 'DB.Example.COM' }],
    ['a trailing dot on both', { origin: 'https://db.example.com.', host: 'db.example.com.' }],
  ])('never refuses a same-origin write, listed or not: %s', (_case, headers) => {
    expect(guard.check({ secure: true, method: 'POST', headers })).toEqual({
      kind: 'allow',
      responseHeaders: { vary: 'Origin' },
    })
  })

  it.each([
    ['another host', { origin: 'https://evil.test', host: 'db.example.com' }],
    ['another port', { origin: 'https://db.example.com:8443', host: 'db.example.com' }],
    [
      'a sibling site',
      { origin: 'https://evil.example.com', host: 'db.example.com', 'sec-fetch-site': 'same-site' },
    ],
    [
      'Origin: null from elsewhere',
      { origin: 'null', host: 'db.example.com', 'sec-fetch-site': 'cross-site' },
    ],
    // Same host, other scheme: http://db.example.com is another origin than the HTTPS page's.
    ['the same host over http', { origin: 'http://db.example.com', host: 'db.example.com' }],
    [
      'the same host over http, cross-site',
      { origin: 'http://db.example.com', host: 'db.example.com', 'sec-fetch-site': 'cross-site' },
    ],
    [
      'the same origin, but the browser says cross-site',
      { origin: 'https://db.example.com', host: 'db.example.com', 'sec-fetch-site': 'cross-site' },
    ],
    [
      'the same origin, but the browser says same-site',
      { origin: 'https://db.example.com', host: 'db.example.com', 'sec-fetch-site': 'same-site' },
    ],
    ['the same host on port 80 over https', { origin: 'https://db.example.com', host: 'db.example.com:80' }],
    ['a look-alike host spelling', { origin: 'https://db.example.com.evil.test', host: 'db.example.com' }],
    // To a browser https://db.example.com. is another origin than the page's https://db.example.com.
    ['a trailing dot on the Host alone', { origin: 'https://db.example.com', host: 'db.example.com.' }],
    ['a cross-site POST without an Origin', { host: 'db.example.com', 'sec-fetch-site': 'cross-site' }],
    ['a same-site POST without an Origin', { host: 'db.example.com', 'sec-fetch-site': 'same-site' }],
    ['a Cross-Site POST without an Origin', { host: 'db.example.com', 'sec-fetch-site': 'Cross-Site' }],
    [
      'a POST without an Origin and two Sec-Fetch-Site values',
      { host: 'db.example.com', 'sec-fetch-site': 'none, cross-site' },
    ],
    [
      'a POST without an Origin and a made-up Sec-Fetch-Site',
      { host: 'db.example.com', 'sec-fetch-site': 'x' },
    ],
  ])('still refuses a cross-origin write: %s', (_case, headers) => {
    expect(guard.check({ secure: true, method: 'POST', headers })).toMatchObject({
      kind: 'deny',
      code: 'PCL_CORS_ORIGIN_DENIED',
    })
  })

  it('reads the scheme of the request: over plain HTTP the http origin is the same, the https one is not', () => {
    const post = (origin: string, site?: string) =>
      guard.check({
        secure: false,
        method: 'POST',
        headers: { origin, host: 'db.example.com', ...(site ? { 'sec-fetch-site': site } : {}) },
      }).kind
    expect(post('http://db.example.com')).toBe('allow')
    expect(post('https://db.example.com')).toBe('deny')
    expect(post('http://db.example.com', 'cross-site')).toBe('deny')
    expect(post('https://db.example.com', 'same-origin')).toBe('allow')
  })

  it('refuses "*" with credentials at load', () => {
    expect(corsSchema.safeParse({ origins: ['*'], credentials: true }).success).toBe(false)
    const any = new CorsGuard(corsSchema.parse({ origins: ['*'] }))
    expect(any.check({ secure: true, method: 'GET', headers: { origin: 'https://x.test' } })).toMatchObject({
      responseHeaders: { 'access-control-allow-origin': '*' },
    })
  })
})
