import { describe, expect, it } from 'vitest'
import { parsePolicy } from '../../src/policy/load.js'
import { checkProduction, type ProductionContext, productionRules } from '../../src/policy/rules.js'
import type { PolicyInput } from '../../src/policy/schema.js'

/** A policy that passes every production rule; each case below changes one thing. */
const clean: PolicyInput = {
  app: 'shop',
  hosts: ['shop.example.com'],
  upstream: { targets: ['http://127.0.0.1:8080'] },
  tls: { mode: 'off' },
  clientIp: { trustedProxies: ['10.0.0.0/8'] },
  cors: { origins: ['https://shop.example.com'] },
  access: [{ path: '/**', deny: ['192.0.2.0/24'] }],
  headers: { crossOriginOpenerPolicy: 'same-origin', crossOriginResourcePolicy: 'same-origin' },
}

function findings(changes: Partial<PolicyInput>, context: ProductionContext = { redis: true, replicas: 1 }) {
  const parsed = parsePolicy('shop.yaml', JSON.stringify({ ...clean, ...changes }))
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems))
  return checkProduction([parsed.loaded], context)
}

const tls = { mode: 'manual' as const, manual: { cert: 'c.pem', key: 'k.pem' } }

describe('production rules', () => {
  it('the clean policy passes them all', () => {
    expect(findings({})).toEqual([])
  })

  it.each([
    ['PCL-CORS-WILDCARD', { cors: { origins: ['*'] } }, { cors: { origins: ['https://a.example.com'] } }],
    ['PCL-CORS-WILDCARD', { cors: { origins: ['null'] } }, {}],
    [
      'PCL-CORS-CREDENTIALS-PATTERN',
      { cors: { origins: ['https://*.example.com'], credentials: true } },
      { cors: { origins: ['https://*.example.com'], credentials: false } },
    ],
    [
      'PCL-TLS-OFF-UNTRUSTED',
      { clientIp: { trustedProxies: [] } },
      { clientIp: { trustedProxies: ['10.0.0.1'] } },
    ],
    ['PCL-TLS-INTERNAL', { tls: { mode: 'internal' as const } }, { tls }],
    [
      'PCL-ACME-STAGING',
      {
        tls: { mode: 'acme' as const, acme: { email: 'ops@example.com', directory: 'letsencrypt-staging' } },
      },
      { tls: { mode: 'acme' as const, acme: { email: 'ops@example.com', directory: 'letsencrypt' } } },
    ],
    [
      'PCL-ACME-STAGING',
      {
        tls: {
          mode: 'acme' as const,
          acme: {
            email: 'ops@example.com',
            directory: 'https://acme-staging-v02.api.letsencrypt.org/directory',
          },
        },
      },
      {
        tls: {
          mode: 'acme' as const,
          acme: { email: 'ops@example.com', directory: 'https://acme.zerossl.com/v2/DV90' },
        },
      },
    ],
    ['PCL-HSTS-SHORT', { tls, hsts: { maxAge: 86_400 } }, { tls, hsts: { maxAge: 31_536_000 } }],
    ...[
      'ECDHE-ECDSA-AES128-SHA256',
      'AES128-GCM-SHA256',
      'DHE-RSA-AES128-GCM-SHA256',
      'ECDHE-ECDSA-NULL-SHA',
    ].map((weak) => [
      'PCL-TLS-WEAK-CIPHER',
      { tls: { ...tls, ciphers: ['TLS_AES_128_GCM_SHA256', weak] } },
      { tls: { ...tls, ciphers: ['TLS_AES_128_GCM_SHA256', 'ECDHE-ECDSA-AES128-GCM-SHA256'] } },
    ]),
    [
      'PCL-TLS-GROUPS-RETRY',
      { tls: { ...tls, groups: ['P-256', 'P-384'] } },
      { tls: { ...tls, groups: ['X25519', 'P-384'] } },
    ],
    [
      'PCL-TLS-WEAK-GROUP',
      { tls: { ...tls, groups: ['X25519', 'ffdhe2048'] } },
      { tls: { ...tls, groups: ['X25519', 'P-521'] } },
    ],
    [
      'PCL-PROXY-TRUST-ALL',
      { clientIp: { trustedProxies: ['0.0.0.0/0'] } },
      { clientIp: { trustedProxies: ['10.0.0.0/8'] } },
    ],
    [
      'PCL-PROXY-TRUST-ALL',
      { clientIp: { trustedProxies: ['::/0'] } },
      { clientIp: { trustedProxies: ['fd00::/8'] } },
    ],
    [
      'PCL-PROXY-TRUST-PUBLIC',
      { clientIp: { trustedProxies: ['203.0.113.0/24'] } },
      { clientIp: { trustedProxies: ['172.16.0.0/12'] } },
    ],
    ['PCL-ADMIN-UNRESTRICTED', { access: [] }, { access: [{ path: '/**', allow: ['10.0.0.0/8'] }] }],
    [
      'PCL-WEBSOCKET-NO-ORIGIN',
      { websocket: { paths: [{ path: '/ws', allowedOrigins: ['*'] }] } },
      { websocket: { paths: [{ path: '/ws' }] } },
    ],
    [
      'PCL-WEBSOCKET-NO-ORIGIN',
      { cors: undefined },
      { cors: undefined, websocket: { paths: [{ path: '/ws', allowedOrigins: ['https://a.example.com'] }] } },
    ],
    ['PCL-REPORT-ONLY', { mode: 'report-only' as const }, { mode: 'enforce' as const }],
    [
      'PCL-FORWARDAUTH-PLAINTEXT',
      { forwardAuth: { url: 'http://auth.internal:4180/oauth2/auth' } },
      { forwardAuth: { url: 'http://127.0.0.1:4180/oauth2/auth' } },
    ],
  ] as [string, Partial<PolicyInput>, Partial<PolicyInput>][])(
    '%s trips on %j and not on %j',
    (rule, trips, passes) => {
      expect(findings(trips).map((finding) => finding.rule)).toContain(rule)
      expect(findings(passes).map((finding) => finding.rule)).not.toContain(rule)
    },
  )

  it('notes the browser-isolation headers a policy left undecided, never on a route that turns one off', () => {
    const undecided = findings({ headers: {} })
    expect(undecided.map((finding) => `${finding.rule} ${finding.severity} ${finding.field}`)).toEqual([
      'PCL-ISOLATION-UNDECIDED note headers.crossOriginOpenerPolicy',
      'PCL-ISOLATION-UNDECIDED note headers.crossOriginResourcePolicy',
    ])
    expect(findings({ routes: [{ path: '/docs/**', headers: { crossOriginOpenerPolicy: 'off' } }] })).toEqual(
      [],
    )
  })

  it('rate limits without Redis: a warning for one replica, an error for more, nothing with Redis', () => {
    const limited = { rateLimits: [{ name: 'per-ip', limit: 10, window: '1m' }] }
    const rules = (context: ProductionContext) =>
      findings(limited, context).map((finding) => `${finding.rule} ${finding.severity}`)
    expect(rules({ redis: false, replicas: 1 })).toEqual(['PCL-RATELIMIT-LOCAL warning'])
    expect(rules({ redis: false, replicas: 3 })).toEqual(['PCL-RATELIMIT-NO-REDIS error'])
    expect(rules({ redis: true, replicas: 3 })).toEqual([])
  })

  it('locates each finding at its field, with the rule, severity and fix', () => {
    const [finding] = findings({ cors: { origins: ['https://a.example.com', '*'] } })
    expect(finding).toMatchObject({
      file: 'shop.yaml',
      field: 'cors.origins[1]',
      rule: 'PCL-CORS-WILDCARD',
      severity: 'error',
      message: 'CORS origin "*" lets any site call this app',
    })
    expect(finding?.fix).toMatch(/exact origins/)
  })

  it('holds what a route sets to the same rules, located in the route, and leaves the rest to the app', () => {
    const hits = findings({
      routes: [
        { path: '/ws/**', websocket: { paths: [{ path: '/ws/**', allowedOrigins: ['*'] }] } },
        { path: '/api/**', cors: { origins: ['*'] } },
        // Sets nothing the rules look at: the app's clean settings are not reported again.
        {
          path: '/media/**',
          limits: { maxBodySize: '100mb' },
          access: [{ path: '/media/x', allow: ['10.0.0.0/8'] }],
        },
      ],
    })
    expect(hits.map((hit) => [hit.rule, hit.field])).toEqual([
      ['PCL-CORS-WILDCARD', 'routes[1].cors.origins[0]'],
      ['PCL-WEBSOCKET-NO-ORIGIN', 'routes[0].websocket.paths[0]'],
    ])
  })

  it('says why each weak explicit TLS choice is refused, at its field; the profiles alone pass', () => {
    const hits = findings({
      tls: {
        ...tls,
        ciphers: [
          'ECDHE-RSA-CHACHA20-POLY1305',
          'ECDHE-ECDSA-AES256-SHA384',
          'AES256-GCM-SHA384',
          'NULL-SHA256',
          'TLS_AES_256_GCM_SHA384',
        ],
        groups: ['X25519', 'P-384', 'ffdhe8192'],
      },
    })
    expect(hits.map((hit) => `${hit.rule} ${hit.severity} ${hit.field}: ${hit.message}`)).toEqual([
      'PCL-TLS-WEAK-CIPHER error tls.ciphers[1]: ECDHE-ECDSA-AES256-SHA384 is weak: CBC, not AEAD (Lucky13)',
      'PCL-TLS-WEAK-CIPHER error tls.ciphers[2]: AES256-GCM-SHA384 is weak: no ECDHE key exchange',
      'PCL-TLS-WEAK-CIPHER error tls.ciphers[3]: NULL-SHA256 is weak: no encryption (NULL)',
      'PCL-TLS-WEAK-GROUP error tls.groups[2]: ffdhe8192 is a finite-field group: far slower than an elliptic curve of the same strength',
    ])
    for (const profile of ['intermediate', 'modern'] as const)
      expect(findings({ tls: { ...tls, profile } })).toEqual([])
  })

  it('refuses JWT algorithms a public key must never verify (none, shared-secret HS*) outright', () => {
    for (const algorithm of ['none', 'HS256']) {
      const parsed = parsePolicy(
        'shop.yaml',
        JSON.stringify({
          ...clean,
          jwt: {
            issuer: 'https://issuer.test',
            audiences: ['api'],
            jwksUrl: 'https://issuer.test/jwks',
            algorithms: [algorithm],
          },
        }),
      )
      expect(parsed.ok ? [] : parsed.problems.map((problem) => problem.field)).toEqual(['jwt.algorithms[0]'])
    }
  })

  it('every rule has a stable id, a severity and a fix', () => {
    for (const rule of productionRules) {
      expect(rule.id).toMatch(/^PCL-[A-Z-]+$/)
      expect(rule.fix.length).toBeGreaterThan(10)
    }
    expect(new Set(productionRules.map((rule) => rule.id)).size).toBe(productionRules.length)
  })
})
