import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileAsync } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { httpUpstream, type Upstream } from '../support/upstreams.js'

interface Finding {
  id: string
  severity: 'OK' | 'INFO' | 'LOW' | 'MEDIUM' | 'HIGH' | 'CRITICAL' | 'WARN' | 'DEBUG' | 'FATAL'
  finding: string
}

/**
 * testssl.sh (Debian's testssl.sh package) against the default profile: protocols (-p), cipher
 * categories (-s), forward secrecy with its curves and finite-field groups (-f) and the known
 * vulnerabilities (-U, LUCKY13 among them). The certificate checks are left out: the internal CA is
 * not publicly trusted, which says nothing about the TLS settings. About 40-90 s.
 */
describe('a TLS scanner against the default profile', () => {
  let gateway: RunningGateway
  let upstream: Upstream
  let findings: Finding[]

  beforeAll(async () => {
    // A short answer, like the Caddy it is compared with (`respond "ok"`): an app's compressible pages
    // make the scanner's HTTP check report BREACH, which no TLS setting changes.
    upstream = await httpUpstream((_request, response) => response.end('ok'))
    gateway = await startGateway({
      policies: { 'shop.yaml': policyYaml({ app: 'shop', hosts: ['shop.test'], target: upstream.url }) },
    })
    const json = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-testssl-')), 'scan.json')
    const scan = execFileAsync(
      'testssl',
      [
        ...['--quiet', '--color', '0', '--warnings', 'batch', '--jsonfile', json],
        // The name is made up: connect to loopback, and ask DNS nothing it could wait on.
        ...['--ip', '127.0.0.1', '--nodns', 'min'],
        ...['-p', '-s', '-f', '-U'],
        `https://shop.test:${gateway.ports.https}`,
      ],
      { timeout: 170_000 * timeoutScale, maxBuffer: 16 * 1024 * 1024 },
    )
    scan.child.stdin?.end()
    await scan
    findings = JSON.parse(await readFile(json, 'utf8')) as Finding[]
  }, 180_000 * timeoutScale)

  afterAll(async () => {
    await gateway?.stop()
    await upstream?.close()
  })

  const about = (id: string) => findings.find((finding) => finding.id === id)

  it('scanned the listener for real: both protocol versions, strong ciphers, forward secrecy', () => {
    expect(findings.length).toBeGreaterThan(30)
    expect(about('TLS1_2')).toMatchObject({ severity: 'OK', finding: 'offered' })
    expect(about('TLS1_3')).toMatchObject({ severity: 'OK', finding: expect.stringMatching(/^offered/) })
    expect(about('cipherlist_STRONG')).toMatchObject({ severity: 'OK', finding: 'offered' })
    expect(about('PFS')).toMatchObject({ severity: 'OK', finding: 'offered' })
  })

  it('finds nothing at LOW or above: no CBC (LUCKY13), no average ciphers, no old protocols', () => {
    // "Above LOW" alone would pass Node's defaults: their CBC suites are LOW findings (LUCKY13,
    // cipherlist_AVERAGE). engine_problem is the scanner's note about its own openssl binary.
    const flagged = findings.filter(
      (finding) =>
        !['OK', 'INFO'].includes(finding.severity) &&
        finding.id !== 'engine_problem' &&
        finding.id !== 'scanTime',
    )
    expect(flagged).toEqual([])
    expect(about('LUCKY13')).toMatchObject({ severity: 'OK', finding: 'not vulnerable' })
    expect(about('cipherlist_AVERAGE')?.finding).toBe('not offered')
    for (const old of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) expect(about(old)?.finding).toBe('not offered')
  })

  it('offers X25519, P-256 and P-384 and no finite-field group', () => {
    expect(about('PFS_ECDHE_curves')?.finding.split(' ').sort()).toEqual([
      'X25519',
      'prime256v1',
      'secp384r1',
    ])
    expect(findings.filter((finding) => /ffdhe/.test(finding.finding))).toEqual([])
    // Every suite offered with forward secrecy is an AEAD one.
    const suites = about('PFS_ciphers')?.finding.split(' ') ?? []
    expect(suites.length).toBeGreaterThan(0)
    for (const suite of suites) expect(suite).toMatch(/GCM|CHACHA20/)
  })
})
