// @peculiar/x509 needs the Reflect metadata API before it loads.
import 'reflect-metadata'
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import * as x509 from '@peculiar/x509'
import type { PemPair } from '../policy/compile.js'
import { writeFileAtomic } from './files.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const signing = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const day = 86_400_000
const caValidityMs = 3650 * day
const leafValidityMs = 30 * day

/**
 * A local certificate authority for `tls.mode: internal`, like Caddy's `tls internal`: created once under
 * `<stateDir>/internal/`, it signs one leaf per app covering the app's hosts. Trust `ca.crt` on the
 * machines that should accept the leaves.
 */
export class InternalCa {
  private constructor(
    private readonly directory: string,
    readonly ca: PemPair,
  ) {}

  static async open(stateDir: string): Promise<InternalCa> {
    const directory = path.join(stateDir, 'internal')
    const stored = await readPair(path.join(directory, 'ca.crt'), path.join(directory, 'ca.key'))
    if (stored && new X509Certificate(stored.cert).ca) return new InternalCa(directory, stored)
    const ca = await selfSigned('Portcullis Internal CA', [], caValidityMs, true)
    await writePair(path.join(directory, 'ca'), ca)
    return new InternalCa(directory, ca)
  }

  get caCertificateFile(): string {
    return path.join(this.directory, 'ca.crt')
  }

  /** The stored leaf for the app if it still covers `hosts` and has two thirds of its life left; else a new one. */
  async leafFor(appId: string, hosts: readonly string[]): Promise<PemPair> {
    const base = path.join(this.directory, appId)
    const stored = await readPair(`${base}.crt`, `${base}.key`)
    if (stored && this.isCurrent(stored, hosts)) return stored
    const leaf = await this.issue(hosts, leafValidityMs)
    await writePair(base, leaf)
    return leaf
  }

  private isCurrent(stored: PemPair, hosts: readonly string[]): boolean {
    const cert = new X509Certificate(stored.cert)
    // A certificate beside another key (a write cut between the two files) is issued again.
    try {
      if (!cert.checkPrivateKey(createPrivateKey(stored.key))) return false
    } catch {
      return false
    }
    const from = Date.parse(cert.validFrom)
    const to = Date.parse(cert.validTo)
    const renewAt = to - (to - from) / 3
    const names = new Set((cert.subjectAltName ?? '').split(', ').map((entry) => entry.replace(/^DNS:/, '')))
    return (
      Date.now() < renewAt &&
      cert.checkIssued(new X509Certificate(this.ca.cert)) &&
      names.size === hosts.length &&
      hosts.every((host) => names.has(host))
    )
  }

  private async issue(hosts: readonly string[], validityMs: number): Promise<PemPair> {
    const caKey = await importPrivateKey(this.ca.key)
    const keys = await webcrypto.subtle.generateKey(signing, true, ['sign', 'verify'])
    const caCert = new x509.X509Certificate(this.ca.cert)
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: `CN=${hosts[0] ?? 'portcullis'}`,
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + validityMs),
      signingAlgorithm: signing,
      publicKey: keys.publicKey,
      signingKey: caKey,
      extensions: leafExtensions(hosts),
    })
    return { cert: `${cert.toString('pem')}\n${this.ca.cert}`, key: await exportPrivateKey(keys.privateKey) }
  }
}

/**
 * A self-signed certificate. Used for the internal CA itself and for the placeholder served to clients
 * whose SNI names no app, so they get a clear error page instead of another app's certificate.
 */
export async function selfSigned(
  commonName: string,
  hosts: readonly string[],
  validityMs: number,
  isCa = false,
): Promise<PemPair> {
  const keys = await webcrypto.subtle.generateKey(signing, true, ['sign', 'verify'])
  const extensions: x509.Extension[] = isCa
    ? [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ]
    : leafExtensions(hosts)
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${commonName}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + validityMs),
    signingAlgorithm: signing,
    keys,
    extensions,
  })
  return { cert: cert.toString('pem'), key: await exportPrivateKey(keys.privateKey) }
}

function leafExtensions(hosts: readonly string[]): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ...(hosts.length > 0
      ? [
          new x509.SubjectAlternativeNameExtension(
            hosts.map((host) => ({ type: 'dns' as const, value: host })),
          ),
        ]
      : []),
  ]
}

function serialNumber(): string {
  // Positive 16-byte serial: the top bit is cleared so DER never reads it as negative.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0] = (bytes[0] ?? 0) & 0x7f
  return Buffer.from(bytes).toString('hex')
}

async function exportPrivateKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key))
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')
  return webcrypto.subtle.importKey('pkcs8', der, signing, false, ['sign'])
}

async function readPair(certFile: string, keyFile: string): Promise<PemPair | undefined> {
  try {
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') }
  } catch {
    return undefined
  }
}

async function writePair(base: string, pair: PemPair): Promise<void> {
  await writeFileAtomic(`${base}.key`, pair.key, 0o600)
  await writeFileAtomic(`${base}.crt`, pair.cert)
}
