import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ClientIpResolver } from '../../src/guards/client-ip.js'
import { compilePolicies } from '../../src/policy/compile.js'
import { parsePolicy } from '../../src/policy/load.js'
import { clientIpSchema } from '../../src/policy/schema.js'

const resolver = (section: Partial<ConstructorParameters<typeof ClientIpResolver>[0]> = {}) =>
  new ClientIpResolver({ trustedProxies: [], header: 'x-forwarded-for', ...section })

describe('client IP derivation', () => {
  const proxies = resolver({ trustedProxies: ['10.0.0.0/8', '2001:db8:ffff::/48'] })

  it.each([
    [
      'no trust: the peer, whatever the headers say',
      resolver(),
      '203.0.113.9',
      { 'x-forwarded-for': '1.1.1.1' },
      '203.0.113.9',
      'peer',
    ],
    [
      'untrusted peer with a forged chain',
      proxies,
      '203.0.113.9',
      { 'x-forwarded-for': '1.1.1.1, 10.0.0.1' },
      '203.0.113.9',
      'peer',
    ],
    [
      'trusted peer, one client',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '198.51.100.4' },
      '198.51.100.4',
      'x-forwarded-for',
    ],
    [
      'trusted hops are skipped from the right',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '6.6.6.6, 198.51.100.4, 10.2.2.2' },
      '198.51.100.4',
      'x-forwarded-for',
    ],
    [
      'all trusted: the leftmost',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '10.9.9.9, 10.2.2.2' },
      '10.9.9.9',
      'x-forwarded-for',
    ],
    ['trusted peer, no header', proxies, '10.0.0.1', {}, '10.0.0.1', 'peer'],
    [
      'garbage ends the walk at the last trusted hop',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '198.51.100.4, garbage' },
      '10.0.0.1',
      'peer',
    ],
    [
      'ports and brackets are understood',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '[2001:db8::7]:443, 10.2.2.2:80' },
      '2001:db8::7',
      'x-forwarded-for',
    ],
    [
      'IPv4-mapped peer is trusted as IPv4',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': '::ffff:198.51.100.4' },
      '198.51.100.4',
      'x-forwarded-for',
    ],
    [
      'IPv6 trusted proxy',
      proxies,
      '2001:db8:ffff::1',
      { 'x-forwarded-for': '198.51.100.4' },
      '198.51.100.4',
      'x-forwarded-for',
    ],
    [
      'several header lines join',
      proxies,
      '10.0.0.1',
      { 'x-forwarded-for': ['6.6.6.6', '198.51.100.4'] },
      '198.51.100.4',
      'x-forwarded-for',
    ],
  ])('%s', (_name, subject, peer, headers, ip, via) => {
    expect(subject.resolve(peer, headers)).toMatchObject({ ip, via })
  })

  it('sends upstream only the verified part of the chain', () => {
    expect(
      proxies.resolve('10.0.0.1', { 'x-forwarded-for': '6.6.6.6, 198.51.100.4, 10.2.2.2' }).chain,
    ).toEqual(['198.51.100.4', '10.2.2.2', '10.0.0.1'])
  })

  it('reads RFC 7239 Forwarded when configured', () => {
    const forwarded = resolver({ trustedProxies: ['10.0.0.0/8'], header: 'forwarded' })
    const headers = {
      forwarded: 'for=6.6.6.6, for="[2001:db8::9]:4711";proto=https, for=10.1.1.1;by=10.0.0.1',
    }
    expect(forwarded.resolve('10.0.0.1', headers)).toMatchObject({ ip: '2001:db8::9', via: 'forwarded' })
    expect(forwarded.resolve('10.0.0.1', { forwarded: 'for=unknown' })).toMatchObject({
      ip: '10.0.0.1',
      via: 'peer',
    })
    // X-Forwarded-For is not read when Forwarded is the configured header.
    expect(forwarded.resolve('10.0.0.1', { 'x-forwarded-for': '6.6.6.6' })).toMatchObject({ ip: '10.0.0.1' })
  })

  it('hops counts proxies from the right, only behind a trusted peer (Express "trust proxy = N")', () => {
    const twoHops = resolver({ trustedProxies: ['10.0.0.0/8'], hops: 2 })
    expect(twoHops.resolve('10.0.0.1', { 'x-forwarded-for': '6.6.6.6, 198.51.100.4, 203.0.113.1' }).ip).toBe(
      '198.51.100.4',
    )
    expect(twoHops.resolve('10.0.0.1', { 'x-forwarded-for': '198.51.100.4' }).ip).toBe('198.51.100.4')
    expect(twoHops.resolve('203.0.113.50', { 'x-forwarded-for': '6.6.6.6, 1.1.1.1' }).ip).toBe('203.0.113.50')
  })

  it('caps overlong chains to their last 32 entries', () => {
    const long = Array.from({ length: 5000 }, (_, i) => `10.0.${Math.floor(i / 250)}.${i % 250}`).join(', ')
    expect(
      proxies.resolve('10.0.0.1', { 'x-forwarded-for': `6.6.6.6, ${long}` }).chain.length,
    ).toBeLessThanOrEqual(33)
  })
})

describe('client IP properties', () => {
  const proxies = resolver({ trustedProxies: ['10.0.0.0/8'] })
  const untrustedPeer = fc.ipV4().filter((ip) => !ip.startsWith('10.'))
  const anyHeader = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.array(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string()), { maxLength: 8 }).map((parts) => parts.join(', ')),
  )

  it('an untrusted peer is the client, whatever forwarding headers it sends', () => {
    fc.assert(
      fc.property(untrustedPeer, anyHeader, anyHeader, (peer, xff, forwarded) => {
        expect(proxies.resolve(peer, { 'x-forwarded-for': xff, forwarded }).ip).toBe(peer)
      }),
      { numRuns: 2000 },
    )
  })

  it('behind a trusted peer, the client is never an unparsable entry and never throws', () => {
    fc.assert(
      fc.property(anyHeader, (xff) => {
        const { ip, chain } = proxies.resolve('10.0.0.1', { 'x-forwarded-for': xff })
        expect(ip).not.toBe('')
        expect(chain.at(-1)).toBe('10.0.0.1')
        expect(chain[0]).toBe(ip)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('a header of one address (CF-Connecting-IP), and trusted networks from a file', () => {
  const cloudflare = resolver({ trustedProxies: ['173.245.48.0/20'], header: 'cf-connecting-ip' })

  it.each([
    ['from the trusted proxy', '173.245.48.7', { 'cf-connecting-ip': '198.51.100.4' }, '198.51.100.4'],
    ['IPv6, bracketed', '173.245.48.7', { 'cf-connecting-ip': '[2001:db8::4]' }, '2001:db8::4'],
    ['forged by anyone else', '203.0.113.9', { 'cf-connecting-ip': '198.51.100.4' }, '203.0.113.9'],
    ['not an address', '173.245.48.7', { 'cf-connecting-ip': 'unknown' }, '173.245.48.7'],
    ['absent', '173.245.48.7', {}, '173.245.48.7'],
    ['X-Forwarded-For is not read', '173.245.48.7', { 'x-forwarded-for': '6.6.6.6' }, '173.245.48.7'],
  ])('%s', (_case, peer, headers, client) => {
    expect(cloudflare.resolve(peer, headers).ip).toBe(client)
  })

  it('sends the verified pair upstream as the chain', () => {
    expect(cloudflare.resolve('173.245.48.7', { 'cf-connecting-ip': '198.51.100.4' })).toEqual({
      ip: '198.51.100.4',
      via: 'cf-connecting-ip',
      chain: ['198.51.100.4', '173.245.48.7'],
      peerTrusted: true,
    })
  })

  it('refuses a hop count with a header of one address', () => {
    const parsed = clientIpSchema.safeParse({
      trustedProxies: ['10.0.0.0/8'],
      hops: 2,
      header: 'true-client-ip',
    })
    expect(parsed.success).toBe(false)
  })

  it('trusts the networks of trustedProxiesFile, and locates a bad line', async () => {
    const directory = await mkdtemp(path.join(tmpdir(), 'pcl-trusted-'))
    await writeFile(
      path.join(directory, 'cdn.txt'),
      '# published ranges\n173.245.48.0/20\n\n2400:cb00::/32 # v6\n',
    )
    const load = async (file: string) => {
      const parsed = parsePolicy(
        path.join(directory, 'app.yaml'),
        JSON.stringify({
          app: 'cdn',
          hosts: ['cdn.test'],
          upstream: { targets: ['http://127.0.0.1:1'] },
          clientIp: { trustedProxiesFile: file, header: 'cf-connecting-ip' },
        }),
      )
      if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems))
      return compilePolicies([parsed.loaded])
    }
    const compiled = await load('cdn.txt')
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.problems))
    const guard = compiled.apps[0]?.clientIp
    expect(guard?.resolve('2400:cb00::1', { 'cf-connecting-ip': '198.51.100.4' }).ip).toBe('198.51.100.4')
    expect(guard?.isTrusted('173.245.50.1')).toBe(true)

    await writeFile(path.join(directory, 'bad.txt'), '173.245.48.0/20\nnot-a-network\n')
    const bad = await load('bad.txt')
    expect(bad.ok ? [] : bad.problems.map((problem) => problem.message)).toEqual([
      'bad.txt:2: "not-a-network" is not an address or network',
    ])
    const missing = await load('missing.txt')
    expect(missing.ok ? '' : missing.problems[0]?.message).toMatch(/^cannot read missing\.txt \(ENOENT\)$/)
  })
})
