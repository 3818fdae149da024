import { describe, expect, it } from 'vitest'
import { decideRoute, HostRouter, hostnameOf } from '../../src/gateway/routing.js'
import type { App } from '../../src/policy/compile.js'
import { compileApp } from '../support/apps.js'

const [shop, admin, legacy] = await Promise.all([
  compileApp({ app: 'shop', hosts: ['shop.example.com', '*.shop.example.com'] }),
  compileApp({ app: 'admin', hosts: ['admin.shop.example.com'], tls: { minVersion: 'TLSv1.3' } }),
  compileApp({ app: 'legacy', hosts: ['legacy.example.com'], tls: { mode: 'off' } }),
])
const router = new HostRouter([shop, admin, legacy] as App[])
const [strict, tuned] = await Promise.all([
  compileApp({ app: 'strict', hosts: ['strict.example.com'], tls: { profile: 'modern' } }),
  compileApp({ app: 'tuned', hosts: ['tuned.example.com'], tls: { groups: ['P-384'] } }),
])
const profiled = new HostRouter([shop, admin, legacy, strict, tuned] as App[])

describe('HostRouter', () => {
  it.each([
    ['shop.example.com', 'shop'],
    ['SHOP.Example.COM', 'shop'],
    ['shop.example.com:8443', 'shop'],
    ['shop.example.com.', 'shop'],
    ['api.shop.example.com', 'shop'],
    ['admin.shop.example.com', 'admin'], // exact beats wildcard
    ['a.b.shop.example.com', undefined], // a wildcard covers one label
    ['example.com', undefined],
    ['evilshop.example.com', undefined],
    ['shop.example.com.evil.test', undefined],
    ['', undefined],
    [undefined, undefined],
  ])('%s → %s', (host, expected) => {
    expect(router.find(host)?.id).toBe(expected)
  })

  it.each([
    ['[::1]:443', '::1'],
    ['Example.COM.:80', 'example.com'],
    ['localhost', 'localhost'],
  ])('hostnameOf(%s) = %s', (host, expected) => expect(hostnameOf(host)).toBe(expected))
})

describe('TLS profiles by SNI', () => {
  it('lists the distinct profiles of the TLS apps: one when every app keeps the default', () => {
    expect(router.tlsProfiles.map((profile) => profile.name)).toEqual(['intermediate'])
    expect(profiled.tlsProfiles.map((profile) => profile.name)).toEqual([
      'intermediate',
      'modern',
      'intermediate + own groups',
    ])
    expect(new HostRouter([legacy] as App[]).tlsProfiles).toEqual([])
  })

  it.each([
    ['strict.example.com', 'modern'],
    ['STRICT.example.com', 'modern'],
    ['tuned.example.com', 'intermediate + own groups'],
    ['shop.example.com', 'intermediate'],
    ['legacy.example.com', 'intermediate'], // plain HTTP only: the default for a TLS connection to it
    ['nobody.example.com', 'intermediate'],
    [undefined, 'intermediate'],
  ])('a connection for %s is made with %s', (servername, profile) => {
    expect(profiled.tlsProfileFor(servername).name).toBe(profile)
  })

  it('refuses a request on a connection made with another profile than its app’s (421)', () => {
    const on = (servername: string | undefined, host: string) =>
      decideRoute(
        profiled,
        {
          host,
          url: '/',
          tls: { servername, protocol: 'TLSv1.3', profile: profiled.tlsProfileFor(servername).key },
        },
        443,
      )
    expect(on('strict.example.com', 'strict.example.com')).toMatchObject({ kind: 'proxy' })
    expect(on(undefined, 'shop.example.com')).toMatchObject({ kind: 'proxy' })
    // No SNI: the default server, whose settings are not the modern app's.
    expect(on(undefined, 'strict.example.com')).toMatchObject({
      kind: 'reject',
      code: 'PCL_MISDIRECTED_REQUEST',
      rule: 'tls.profile',
      message: 'This TLS connection was not made with the TLS settings of app strict (profile modern)',
    })
    expect(on(undefined, 'tuned.example.com')).toMatchObject({ kind: 'reject', rule: 'tls.profile' })
  })
})

describe('decideRoute', () => {
  const tls = (protocol: string, servername?: string) => ({ tls: { servername, protocol } })

  it.each([
    [
      'plain HTTP to a TLS app redirects',
      { host: 'shop.example.com', url: '/a?b=1' },
      443,
      { kind: 'redirect', location: 'https://shop.example.com/a?b=1' },
    ],
    [
      'a redirect keeps a non-default HTTPS port',
      { host: 'shop.example.com:8080', url: '/' },
      8443,
      { kind: 'redirect', location: 'https://shop.example.com:8443/' },
    ],
    [
      'plain HTTP to a tls: off app proxies',
      { host: 'legacy.example.com', url: '/' },
      443,
      { kind: 'proxy' },
    ],
    [
      'an unknown host is 404',
      { host: 'nope.example.com', url: '/' },
      443,
      { kind: 'reject', code: 'PCL_UNKNOWN_HOST', rule: 'hosts' },
    ],
    ['no Host is 404', { host: undefined, url: '/' }, 443, { kind: 'reject', code: 'PCL_UNKNOWN_HOST' }],
    [
      'an asterisk target is 400',
      { host: 'shop.example.com', url: '*' },
      443,
      { kind: 'reject', code: 'PCL_BAD_REQUEST' },
    ],
    [
      'an absolute target is 400',
      { host: 'shop.example.com', url: 'http://other.test/' },
      443,
      { kind: 'reject', code: 'PCL_BAD_REQUEST' },
    ],
    [
      'TLS with matching SNI proxies',
      { host: 'shop.example.com', url: '/', ...tls('TLSv1.2', 'shop.example.com') },
      443,
      { kind: 'proxy' },
    ],
    [
      'TLS without SNI routes by Host',
      { host: 'shop.example.com', url: '/', ...tls('TLSv1.2') },
      443,
      { kind: 'proxy' },
    ],
    [
      'TLS with the SNI of another app is 421',
      { host: 'shop.example.com', url: '/', ...tls('TLSv1.2', 'admin.shop.example.com') },
      443,
      { kind: 'reject', code: 'PCL_MISDIRECTED_REQUEST', rule: 'hosts' },
    ],
    [
      'TLS with SNI under the same app’s wildcard proxies',
      { host: 'a.shop.example.com', url: '/', ...tls('TLSv1.2', 'b.shop.example.com') },
      443,
      { kind: 'proxy' },
    ],
    [
      'TLS to a tls: off app is 421',
      { host: 'legacy.example.com', url: '/', ...tls('TLSv1.3', 'legacy.example.com') },
      443,
      { kind: 'reject', code: 'PCL_MISDIRECTED_REQUEST', rule: 'tls.mode' },
    ],
    [
      'TLS 1.2 to a 1.3-only app is refused',
      { host: 'admin.shop.example.com', url: '/', ...tls('TLSv1.2', 'admin.shop.example.com') },
      443,
      { kind: 'reject', code: 'PCL_TLS_VERSION_TOO_OLD', rule: 'tls.minVersion' },
    ],
    [
      'TLS 1.3 to a 1.3-only app proxies',
      { host: 'admin.shop.example.com', url: '/', ...tls('TLSv1.3', 'admin.shop.example.com') },
      443,
      { kind: 'proxy' },
    ],
  ] as const)('%s', (_name, request, httpsPort, expected) => {
    expect(decideRoute(router, request, httpsPort)).toMatchObject(expected)
  })
})
