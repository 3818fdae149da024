import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { canonicalPath, canonicalTarget } from '../../src/net/canonical-path.js'
import { routerModels } from '../support/router-models.js'

describe('canonicalPath', () => {
  it.each([
    ['/', '/'],
    ['/studio/', '/studio/'],
    ['/%73tudio/', '/studio/'],
    ['/%7Euser/%7e', '/~user/~'],
    ['/a%20b', '/a%20b'],
    ['/a%2a', '/a%2A'],
    ['/./studio/', '/studio/'],
    ['//studio//x', '/studio/x'],
    ['/api/../studio/', '/studio/'],
    ['/api/%2e%2e/studio', '/studio'],
    ['/api/.%2E/studio', '/studio'],
    ['/a/b/..', '/a/'],
    ['/a/.', '/a/'],
    ['/caf%C3%A9', '/caf%C3%A9'],
    // Listeners hand targets over as latin1: these are the two bytes of UTF-8 é.
    ['/caf\u00c3\u00a9', '/caf%C3%A9'],
    ['/a|^[]', '/a|^[]'],
    ['/a%3Bb', '/a%3Bb'],
    ['/a%23b', '/a%23b'],
  ])('%s → %s', (raw, expected) => {
    expect(canonicalPath(raw)).toEqual({ ok: true, path: expected })
  })

  it.each([
    ['/studio%2f', 'encoded slash'],
    ['/studio%2F..%2Fsql', 'encoded slash'],
    ['/a%5cb', 'encoded slash or backslash'],
    ['/a\\b', 'backslash'],
    ['/a%00b', 'control character'],
    ['/a%0d%0aX:y', 'control character'],
    ['/a%zz', 'malformed'],
    ['/a%4', 'malformed'],
    ['/%C3%28', 'not UTF-8'],
    ['/%FF', 'not UTF-8'],
    ['/..', 'climbs above the root'],
    ['/a/../../b', 'climbs above the root'],
    ['/%2e%2e/etc/passwd', 'climbs above the root'],
    ['relative', 'must start with /'],
    ['/caf\u00e9', 'not UTF-8'],
    ['/admin#', 'fragment'],
    ['/admin#x', 'fragment'],
    ['/admin;x', '";"'],
    ['/x/..;/admin', '";"'],
    ['/.;/admin', '";"'],
    ['/studio;jsessionid=1/', '";"'],
    ['/a b', 'percent-encoded'],
    ['/a"b', 'percent-encoded'],
    ['/a<b>', 'percent-encoded'],
    ['/a`b', 'percent-encoded'],
    ['/a{b}', 'percent-encoded'],
  ])('%s is refused (%s)', (raw, reason) => {
    const result = canonicalPath(raw)
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.reason).toContain(reason)
  })
})

describe('canonicalTarget', () => {
  it('keeps the query as sent after the canonical path', () => {
    expect(canonicalTarget('//api/./v1/../items?q=%2e%2e&x=/a/../b')).toEqual({
      ok: true,
      path: '/api/items',
      target: '/api/items?q=%2e%2e&x=/a/../b',
    })
  })

  it('percent-encodes raw bytes of the query (HTTP/2 passes them) as those of the path', () => {
    // latin1, as the listeners hand targets over: "é" in UTF-8 is the two bytes C3 A9.
    expect(canonicalTarget('/s?q=caf\u00c3\u00a9&x=1')).toEqual({
      ok: true,
      path: '/s',
      target: '/s?q=caf%C3%A9&x=1',
    })
  })

  it.each([
    ['/admin?x#', 'fragment'],
    ['/admin?a=1#frag', 'fragment'],
    ['/admin?a=b c', 'space or a control character'],
    ['/admin?a=\u0001', 'space or a control character'],
    ['/admin#?x', 'fragment'],
  ])('%j is refused (%s)', (raw, reason) => {
    const result = canonicalTarget(raw)
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.reason).toContain(reason)
  })
})

const segment = fc.stringMatching(/^[A-Za-z0-9._~%-]{0,6}$/)
const rawPath = fc
  .array(fc.oneof(segment, fc.constantFrom('.', '..', '', '%2e', '%2E%2e', '%73')), { maxLength: 8 })
  .map((parts) => `/${parts.join('/')}`)

describe('canonicalPath properties', () => {
  it('is idempotent: a canonical path is its own canonical form', () => {
    fc.assert(
      fc.property(rawPath, (raw) => {
        const once = canonicalPath(raw)
        if (!once.ok) return
        expect(canonicalPath(once.path)).toEqual(once)
      }),
      { numRuns: 2000 },
    )
  })

  it('never yields dot segments, empty inner segments, encoded unreserved characters or a way above the root', () => {
    fc.assert(
      fc.property(rawPath, (raw) => {
        const result = canonicalPath(raw)
        if (!result.ok) return
        const inner = result.path.split('/').slice(1, -1)
        expect(result.path.startsWith('/')).toBe(true)
        expect(inner).not.toContain('')
        expect(result.path.split('/')).not.toContain('.')
        expect(result.path.split('/')).not.toContain('..')
        expect(result.path).not.toMatch(/%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2[DE]|5F|7E)/i)
      }),
      { numRuns: 2000 },
    )
  })

  it('never throws, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (text) => {
        canonicalPath(`/${text}`)
      }),
      { numRuns: 3000 },
    )
  })
})

/** Pieces of request targets that some router family reads differently from another. */
const targetPiece = fc.constantFrom(
  'admin',
  'A',
  'x',
  '.',
  '..',
  '',
  '%2e',
  '%2E%2e',
  '.%2e',
  ';',
  ';x=1',
  '..;',
  '%3b',
  '%3B',
  '#',
  '#x',
  '%23',
  '?',
  '?a=/../b',
  '%3f',
  '%25',
  '%252e',
  '%2f',
  '%5c',
  '\\',
  '%00',
  '%20',
  ' ',
  '%41',
  '%7e',
  '~',
  '\u00c3\u00a9',
  '%c3%a9',
  '%ff',
  '%c0%af',
  '|',
  ':',
  '@',
  '!',
  '$',
  '&',
  "'",
  '(',
  '*',
  '+',
  ',',
  '=',
)
const requestTarget = fc
  .array(
    fc.array(targetPiece, { maxLength: 3 }).map((pieces) => pieces.join('')),
    { maxLength: 6 },
  )
  .map((segments) => `/${segments.join('/')}`)

describe('canonicalTarget against the router families', () => {
  it('either refuses a target, or every router family routes exactly the path the rules matched', () => {
    let accepted = 0
    fc.assert(
      fc.property(requestTarget, (raw) => {
        const result = canonicalTarget(raw)
        if (!result.ok) return
        accepted += 1
        for (const router of routerModels) {
          expect({ router: router.name, routes: router.resolve(result.target) }).toEqual({
            router: router.name,
            routes: router.decode(result.path),
          })
        }
      }),
      { numRuns: 5000 },
    )
    // The property says something only if many generated targets are accepted.
    expect(accepted).toBeGreaterThan(1000)
  })

  it('finds the bypasses of a gateway that matched the raw path: the models are not vacuous', () => {
    const disagreements = ['/admin#', '/x/..;/admin', '/.;/admin', '/admin;x'].map((raw) =>
      routerModels
        .filter((router) => router.resolve(raw) !== router.decode(raw))
        .map((router) => router.name),
    )
    expect(disagreements).toEqual([
      ['express', 'fastify'],
      ['fastify', 'tomcat'],
      ['fastify', 'tomcat'],
      ['fastify', 'tomcat'],
    ])
  })
})
