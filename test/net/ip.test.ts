import { describe, expect, it } from 'vitest'
import { canonicalIp } from '../../src/net/ip.js'

describe('canonicalIp', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['::1', '::1'],
    [undefined, ''],
  ])('%s → %s', (input, expected) => expect(canonicalIp(input)).toBe(expected))
})
