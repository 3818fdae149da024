import { describe, expect, it } from 'vitest'
import { parseProxyHeader } from '../../src/net/proxy-protocol.js'
import { proxyV2 } from '../support/proxy-protocol.js'

const signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

describe('PROXY protocol headers', () => {
  it.each([
    ['PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\nGET /', '198.51.100.7', 44],
    ['PROXY TCP6 2001:DB8::7 2001:db8::1 40000 443\r\n', '2001:db8::7', 46],
    ['PROXY UNKNOWN\r\n', undefined, 15],
  ])('v1 %j', (text, source, length) => {
    expect(parseProxyHeader(Buffer.from(text))).toEqual({ kind: 'complete', source, length })
  })

  it.each([
    ['PROXY TCP4 198.51.100.7 10.0.0.1 40000', 'incomplete'],
    ['PRO', 'incomplete'],
    ['PROXY TCP4 garbage 10.0.0.1 1 2\r\n', 'invalid'],
    ['PROXY TCP4 198.51.100.7 10.0.0.1 99999 443\r\n', 'invalid'],
    ['PROXY HTTP 1 2 3 4\r\n', 'invalid'],
    [`PROXY TCP4 ${'1'.repeat(120)}`, 'invalid'],
    ['GET / HTTP/1.1\r\n', 'invalid'],
    ['PROXY TCP4 2001:db8::7 10.0.0.1 40000 443\r\n', 'invalid'],
    ['PROXY TCP4 ::ffff:198.51.100.7 10.0.0.1 40000 443\r\n', 'invalid'],
    ['PROXY TCP4 198.51.100.7 2001:db8::1 40000 443\r\n', 'invalid'],
    ['PROXY TCP6 198.51.100.7 2001:db8::1 40000 443\r\n', 'invalid'],
    ['PROXY TCP4 198.51.100.7 10.0.0.1 040000 443\r\n', 'invalid'],
    ['PROXY TCP4 198.51.100.7 10.0.0.1 40000 -1\r\n', 'invalid'],
  ])('v1 %j is %s', (text, kind) => {
    expect(parseProxyHeader(Buffer.from(text)).kind).toBe(kind)
  })

  it('v2 IPv4, IPv6 and LOCAL', () => {
    expect(parseProxyHeader(proxyV2('198.51.100.7'))).toEqual({
      kind: 'complete',
      source: '198.51.100.7',
      length: 28,
    })
    expect(parseProxyHeader(proxyV2('2001:db8:0:0:0:0:0:7'))).toEqual({
      kind: 'complete',
      source: '2001:db8::7',
      length: 52,
    })
    expect(parseProxyHeader(proxyV2('198.51.100.7', 0x20))).toEqual({
      kind: 'complete',
      source: undefined,
      length: 28,
    })
  })

  it('v2 refuses an address block shorter than its family needs, and families that are not TCP', () => {
    const shortV4 = Buffer.concat([proxyV2('198.51.100.7').subarray(0, 16), Buffer.alloc(4, 7)])
    shortV4.writeUInt16BE(4, 14)
    expect(parseProxyHeader(shortV4)).toMatchObject({ kind: 'invalid', reason: /too short/ })
    const shortV6 = Buffer.concat([proxyV2('2001:db8::7').subarray(0, 16), Buffer.alloc(12)])
    shortV6.writeUInt16BE(12, 14)
    expect(parseProxyHeader(shortV6)).toMatchObject({ kind: 'invalid', reason: /too short/ })
    const udp = proxyV2('198.51.100.7')
    udp[13] = 0x12
    expect(parseProxyHeader(udp).kind).toBe('invalid')
    const mapped = proxyV2('0:0:0:0:0:ffff:c633:6407')
    expect(parseProxyHeader(mapped)).toMatchObject({ kind: 'complete', source: '198.51.100.7' })
  })

  it('v2 waits for the whole header and refuses other versions', () => {
    expect(parseProxyHeader(proxyV2('198.51.100.7').subarray(0, 20)).kind).toBe('incomplete')
    expect(parseProxyHeader(signature.subarray(0, 5)).kind).toBe('incomplete')
    const badVersion = proxyV2('198.51.100.7')
    badVersion[12] = 0x11
    expect(parseProxyHeader(badVersion).kind).toBe('invalid')
  })
})
