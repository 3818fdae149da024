import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { addressFromHeaderEntry, type Cidr, CidrSet, canonicalIp, parseCidr } from '../../src/net/ip.js'

function cidr(text: string): Cidr {
  const parsed = parseCidr(text)
  if (!parsed) throw new Error(`not a CIDR: ${text}`)
  return parsed
}

describe('canonicalIp', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['::ffff:a00:1', '10.0.0.1'],
    ['0:0:0:0:0:ffff:cb00:7107', '203.0.113.7'],
    ['0000:0000:0000:0000:0000:FFFF:10.0.0.1', '10.0.0.1'],
    ['::ffff:0:a00:1', '::ffff:0:a00:1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['::1', '::1'],
    [undefined, ''],
    ['garbage', ''],
    ['1.2.3', ''],
    ['::ffff:1.2.3', ''],
  ])('%s → %s', (input, expected) => expect(canonicalIp(input)).toBe(expected))
})

describe('addressFromHeaderEntry', () => {
  it.each([
    [' 203.0.113.7 ', '203.0.113.7'],
    ['203.0.113.7:4711', '203.0.113.7'],
    ['[2001:db8::1]:443', '2001:db8::1'],
    ['[2001:DB8::1]', '2001:db8::1'],
    ['"[2001:db8::1]:443"', '2001:db8::1'],
    ['2001:db8::1', '2001:db8::1'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['[::ffff:a00:1]:443', '10.0.0.1'],
    ['unknown', ''],
    ['_hidden', ''],
    ['203.0.113.7:port', ''],
    ['[2001:db8::1', ''],
    ['[2001:db8::1]x', ''],
    ['', ''],
    ['1.2.3.4.5', ''],
  ])('%j → %j', (entry, expected) => expect(addressFromHeaderEntry(entry)).toBe(expected))
})

describe('CIDR matching', () => {
  const set = new CidrSet(['10.0.0.0/8', '192.168.1.1', '2001:db8::/32', '::ffff:172.16.0.0/108'].map(cidr))
  it.each([
    ['10.1.2.3', true],
    ['11.0.0.1', false],
    ['192.168.1.1', true],
    ['192.168.1.2', false],
    ['2001:db8:ffff::1', true],
    ['2001:db9::1', false],
    ['172.16.5.5', true],
    ['172.32.0.1', false],
    ['', false],
  ])('%s → %s', (ip, expected) => expect(set.has(ip)).toBe(expected))

  it.each(['10.0.0.0/33', '2001:db8::/129', 'nope/8', '10.0.0.0/-1', '::ffff:1.2.3.4/95'])(
    'refuses %s',
    (text) => expect(parseCidr(text)).toBeUndefined(),
  )

  it('an IPv4 network contains exactly the addresses that share its prefix bits', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (network, candidate, prefix) => {
        const toInt = (ip: string) => ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0)
        const mask = prefix === 0 ? 0 : 2 ** 32 - 2 ** (32 - prefix)
        const expected = (toInt(network) & mask) >>> 0 === (toInt(candidate) & mask) >>> 0
        const set = new CidrSet([cidr(`${network}/${prefix}`)])
        expect(set.has(candidate)).toBe(expected)
      }),
      { numRuns: 2000 },
    )
  })

  it('an IPv4 address and its IPv4-mapped IPv6 spelling canonicalise alike', () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        expect(canonicalIp(`::ffff:${ip}`)).toBe(canonicalIp(ip))
      }),
      { numRuns: 500 },
    )
  })
})
