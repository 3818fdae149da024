import { describe, expect, it } from 'vitest'
import {
  cipherWeakness,
  defaultTlsProfile,
  groupWeakness,
  isCipherSuite,
  tlsProfile,
} from '../../src/net/tls-profiles.js'

describe('TLS profiles', () => {
  it('intermediate: TLS 1.2 with ECDHE and AEAD suites and TLS 1.3, on X25519, P-256 and P-384', () => {
    expect(defaultTlsProfile).toMatchObject({
      name: 'intermediate',
      minVersion: 'TLSv1.2',
      ciphers:
        'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:' +
        'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:' +
        'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305',
      groups: 'X25519:P-256:P-384',
    })
    expect(defaultTlsProfile.ciphers.split(':').map(cipherWeakness)).toEqual(Array(9).fill(undefined))
  })

  it('modern: TLS 1.3 only, same groups', () => {
    expect(tlsProfile('modern')).toMatchObject({
      name: 'modern',
      minVersion: 'TLSv1.3',
      ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
      groups: 'X25519:P-256:P-384',
    })
  })

  it('own suites or groups replace the profile’s, and only equal settings share a key', () => {
    const own = tlsProfile('intermediate', { ciphers: ['TLS_AES_256_GCM_SHA384'], groups: ['P-384'] })
    expect(own).toMatchObject({
      name: 'intermediate + own ciphers and groups',
      minVersion: 'TLSv1.2',
      ciphers: 'TLS_AES_256_GCM_SHA384',
      groups: 'P-384',
    })
    const keys = new Set(
      [
        defaultTlsProfile,
        tlsProfile('intermediate'),
        tlsProfile('modern'),
        own,
        tlsProfile('intermediate', { groups: ['P-384'] }),
        tlsProfile('modern', { ciphers: ['TLS_AES_256_GCM_SHA384'] }),
      ].map((profile) => profile.key),
    )
    expect(keys.size).toBe(5)
  })

  it.each([
    ['ECDHE-ECDSA-AES128-GCM-SHA256', true],
    ['TLS_CHACHA20_POLY1305_SHA256', true],
    ['ECDHE-ECDSA-AES128-SHA', true],
    ['NULL-SHA256', true],
    ['HIGH', false],
    ['ECDHE+AESGCM', false],
    ['!aNULL', false],
    ['ECDHE-ECDSA-AES128-GCM-SHA256:HIGH', false],
    ['ecdhe-ecdsa-aes128-gcm-sha256', false],
    ['ECDHE-ECDSA-AES128-GCM-SHA512', false],
    ['TLS_AES_128_GCM', false],
  ])('%s is a cipher suite name: %s', (name, known) => {
    expect(isCipherSuite(name)).toBe(known)
  })

  it.each([
    ['TLS_AES_128_GCM_SHA256', undefined],
    ['ECDHE-RSA-AES256-GCM-SHA384', undefined],
    ['ECDHE-ECDSA-CHACHA20-POLY1305', undefined],
    ['ECDHE-ECDSA-AES128-CCM', undefined],
    ['ECDHE-RSA-AES128-SHA256', 'CBC, not AEAD (Lucky13)'],
    ['ECDHE-ECDSA-CAMELLIA256-SHA384', 'CBC, not AEAD (Lucky13)'],
    ['AES128-GCM-SHA256', 'no ECDHE key exchange'],
    ['DHE-RSA-CHACHA20-POLY1305', 'no ECDHE key exchange'],
    ['PSK-AES128-GCM-SHA256', 'no ECDHE key exchange'],
    ['DES-CBC3-SHA', '3DES or DES'],
    ['ECDHE-RSA-DES-CBC3-SHA', '3DES or DES'],
    ['RC4-SHA', 'RC4'],
    ['EXP-RC4-MD5', 'export-grade'],
    ['ECDHE-ECDSA-NULL-SHA', 'no encryption (NULL)'],
  ])('%s: %s', (name, weakness) => {
    expect(cipherWeakness(name)).toBe(weakness)
  })

  it('finite-field groups are weak, elliptic curves are not', () => {
    expect(['X25519', 'X448', 'P-256', 'P-384', 'P-521'].map(groupWeakness)).toEqual(Array(5).fill(undefined))
    expect(groupWeakness('ffdhe2048')).toMatch(/finite-field/)
  })
})
