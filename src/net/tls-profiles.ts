import { createSecureContext } from 'node:tls'

/**
 * The TLS settings an HTTPS server is made with: versions, cipher suites and key-exchange groups.
 * Node cannot change them per connection (a SecureContext from SNICallback keeps the listener's
 * ciphers, groups and versions), so the HTTPS listener runs one server per distinct profile.
 */
export interface TlsProfile {
  /** As explain and the logs say it: `intermediate`, `modern`, or either with `+ own ciphers/groups`. */
  readonly name: string
  /** Equal exactly when the settings are: apps with the same settings share a server. */
  readonly key: string
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
  /** Node's `ciphers`: OpenSSL names, TLS 1.3 suites (`TLS_*`) included. */
  readonly ciphers: string
  /** Node's `ecdhCurve`: the groups offered for the key exchange. */
  readonly groups: string
}

export const tlsProfileNames = ['intermediate', 'modern'] as const
export type TlsProfileName = (typeof tlsProfileNames)[number]

/** Mozilla's three TLS 1.3 suites (all of them AEAD, the key exchange set by the groups). */
const tls13Suites = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']

/** Mozilla "intermediate" for TLS 1.2 without DHE: ECDHE and AEAD only, for ECDSA and RSA certificates. */
const tls12Suites = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
]

/** Elliptic-curve groups only: no finite-field (ffdhe) group, which Node offers by default. */
const profileGroups = ['X25519', 'P-256', 'P-384']

/** The groups a policy may name: OpenSSL's spelling. */
export const tlsGroupNames = [
  'X25519',
  'X448',
  'P-256',
  'P-384',
  'P-521',
  'ffdhe2048',
  'ffdhe3072',
  'ffdhe4096',
  'ffdhe6144',
  'ffdhe8192',
] as const
export type TlsGroupName = (typeof tlsGroupNames)[number]

const profiles: Record<TlsProfileName, { minVersion: TlsProfile['minVersion']; ciphers: string[] }> = {
  intermediate: { minVersion: 'TLSv1.2', ciphers: [...tls13Suites, ...tls12Suites] },
  modern: { minVersion: 'TLSv1.3', ciphers: tls13Suites },
}

/** A profile, with the policy's own suites or groups in place of the profile's when it names them. */
export function tlsProfile(
  name: TlsProfileName,
  own: { ciphers?: readonly string[] | undefined; groups?: readonly string[] | undefined } = {},
): TlsProfile {
  const { minVersion, ciphers } = profiles[name]
  const chosen = {
    minVersion,
    ciphers: (own.ciphers ?? ciphers).join(':'),
    groups: (own.groups ?? profileGroups).join(':'),
  }
  const extras = [own.ciphers ? 'ciphers' : '', own.groups ? 'groups' : ''].filter(Boolean)
  return Object.freeze({
    name: extras.length > 0 ? `${name} + own ${extras.join(' and ')}` : name,
    key: `${chosen.minVersion} ${chosen.ciphers} ${chosen.groups}`,
    ...chosen,
  })
}

/** What a connection for a name no TLS app claims gets, and every app that sets nothing. */
export const defaultTlsProfile = tlsProfile('intermediate')

export function isTls13Suite(name: string): boolean {
  return name.startsWith('TLS_')
}

const suitePattern = /^(?:TLS_[A-Z0-9_]+|[A-Z0-9]+(?:-[A-Z0-9]+)+)$/
const knownSuites = new Map<string, boolean>()

/**
 * Whether this Node's OpenSSL can use `name` as one cipher suite. Only whole suite names count: cipher
 * string keywords (HIGH, !aNULL, ECDHE+AESGCM) are not names, and would hide what is offered.
 */
export function isCipherSuite(name: string): boolean {
  if (!suitePattern.test(name)) return false
  let known = knownSuites.get(name)
  if (known === undefined) {
    try {
      createSecureContext({ ciphers: name })
      known = true
    } catch {
      known = false
    }
    knownSuites.set(name, known)
  }
  return known
}

/**
 * Why a suite is weak, or undefined for an ECDHE (or TLS 1.3) AEAD suite. Read from the OpenSSL name:
 * TLS 1.2 names spell the key exchange first (none for plain RSA) and the AEAD modes GCM, CCM and
 * CHACHA20-POLY1305; everything else is CBC or worse.
 */
export function cipherWeakness(name: string): string | undefined {
  if (isTls13Suite(name)) return undefined
  const parts = name.split('-')
  if (parts.includes('NULL')) return 'no encryption (NULL)'
  if (parts.some((part) => part.startsWith('EXP'))) return 'export-grade'
  if (parts.some((part) => part.startsWith('RC4'))) return 'RC4'
  if (parts.some((part) => part === 'DES' || part === 'CBC3' || part === '3DES')) return '3DES or DES'
  if (!name.startsWith('ECDHE-')) return 'no ECDHE key exchange'
  if (!/-(?:GCM|CCM|CCM8|CHACHA20-POLY1305)(?:-|$)/.test(name)) return 'CBC, not AEAD (Lucky13)'
  return undefined
}

/** Why a group is weak, or undefined for an elliptic-curve group. */
export function groupWeakness(name: string): string | undefined {
  return name.startsWith('ffdhe')
    ? 'a finite-field group: far slower than an elliptic curve of the same strength'
    : undefined
}
