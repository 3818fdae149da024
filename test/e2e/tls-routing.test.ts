import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { InternalCa } from '../../src/tls/internal-ca.js'
import { curl, fetchOnce, presentedCertificate } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/**
 * Two TLS apps with their own certificates (manual files signed by a test CA), one internal-TLS app
 * that requires TLS 1.3, and one plain-HTTP app (tls: off), all on one gateway.
 */
describe('TLS, SNI and host routing', () => {
  let gateway: RunningGateway
  let alpha: Upstream
  let beta: Upstream
  let testCa: string
  let internalCa: string

  beforeAll(async () => {
    ;[alpha, beta] = await Promise.all([echoUpstream(), echoUpstream()])
    const caDir = await mkdtemp(path.join(tmpdir(), 'pcl-test-ca-'))
    const ca = await InternalCa.open(caDir)
    await ca.leafFor('alpha', ['alpha.test', '*.alpha.test'])
    await ca.leafFor('beta', ['beta.test'])
    testCa = ca.ca.cert
    const certs = path.join(caDir, 'internal')
    const manual = (name: string) =>
      `  mode: manual\n  manual: { cert: ${path.join(certs, `${name}.crt`)}, key: ${path.join(certs, `${name}.key`)} }`
    gateway = await startGateway({
      policies: {
        'alpha.yaml': policyYaml({
          app: 'alpha',
          hosts: ['alpha.test', '"*.alpha.test"'],
          target: alpha.url,
          tls: manual('alpha'),
        }),
        'beta.yaml': policyYaml({
          app: 'beta',
          hosts: ['beta.test'],
          target: beta.url,
          tls: manual('beta'),
          extra: 'hsts: { maxAge: 63072000, includeSubDomains: true, preload: true }',
        }),
        'modern.yaml': policyYaml({
          app: 'modern',
          hosts: ['modern.test'],
          target: alpha.url,
          tls: '  mode: internal\n  minVersion: TLSv1.3',
        }),
        'plain.yaml': policyYaml({
          app: 'plain',
          hosts: ['plain.test'],
          target: beta.url,
          tls: '  mode: off',
        }),
      },
    })
    internalCa = await readFile(path.join(gateway.stateDir, 'internal/ca.crt'), 'utf8')
  })

  afterAll(async () => {
    await gateway?.stop()
    await Promise.all([alpha?.close(), beta?.close()])
  })

  it('presents each app its own certificate, chosen by SNI', async () => {
    expect(await presentedCertificate(gateway.ports.https, 'alpha.test')).toContain(
      'DNS:alpha.test, DNS:*.alpha.test',
    )
    expect(await presentedCertificate(gateway.ports.https, 'www.alpha.test')).toContain('DNS:*.alpha.test')
    expect(await presentedCertificate(gateway.ports.https, 'beta.test')).toContain('DNS:beta.test')
    expect(await presentedCertificate(gateway.ports.https, 'nobody.test')).toContain('placeholder')
  })

  it('routes by host to the right upstream over verified TLS', async () => {
    const a = await fetchOnce('https://alpha.test/a?x=1', { port: gateway.ports.https, ca: testCa })
    const b = await fetchOnce('https://beta.test/b', { port: gateway.ports.https, ca: testCa })
    const wildcard = await fetchOnce('https://api.alpha.test/w', { port: gateway.ports.https, ca: testCa })
    expect([a.status, b.status, wildcard.status]).toEqual([200, 200, 200])
    expect(a.json().url).toBe('/a?x=1')
    expect(a.json<{ headers: Record<string, string> }>().headers.host).toBe('alpha.test')
    expect(b.json().url).toBe('/b')
    expect(wildcard.json<{ headers: Record<string, string> }>().headers.host).toBe('api.alpha.test')
  })

  it('sends HSTS on HTTPS responses only, as each policy sets it', async () => {
    const a = await fetchOnce('https://alpha.test/', { port: gateway.ports.https, ca: testCa })
    const b = await fetchOnce('https://beta.test/', { port: gateway.ports.https, ca: testCa })
    const plain = await fetchOnce('http://plain.test/', { port: gateway.ports.http })
    const redirect = await fetchOnce('http://alpha.test/', { port: gateway.ports.http })
    expect(a.headers['strict-transport-security']).toBe('max-age=31536000')
    expect(b.headers['strict-transport-security']).toBe('max-age=63072000; includeSubDomains; preload')
    expect(plain.headers['strict-transport-security']).toBeUndefined()
    expect(redirect.headers['strict-transport-security']).toBeUndefined()
  })

  it('redirects plain HTTP to HTTPS with 308, keeping host, path and query', async () => {
    const answer = await fetchOnce('http://alpha.test/some/path?q=1&r=%20', {
      port: gateway.ports.http,
      method: 'POST',
    })
    expect(answer.status).toBe(308)
    expect(answer.headers.location).toBe(`https://alpha.test:${gateway.ports.https}/some/path?q=1&r=%20`)
  })

  it('serves a tls: off app on plain HTTP and refuses it on HTTPS', async () => {
    const plain = await fetchOnce('http://plain.test/p', { port: gateway.ports.http })
    expect(plain.status).toBe(200)
    expect(plain.json<{ headers: Record<string, string> }>().headers['x-forwarded-proto']).toBe('http')
    const overTls = await fetchOnce('https://plain.test/p', {
      port: gateway.ports.https,
      servername: 'plain.test',
    })
    expect(overTls.status).toBe(421)
    expect(overTls.json()).toMatchObject({ error: { code: 'PCL_MISDIRECTED_REQUEST' } })
  })

  it('answers an unknown host with a JSON 404 on both listeners, never another app', async () => {
    for (const [url, port] of [
      ['https://unknown.test/', gateway.ports.https],
      ['http://unknown.test/', gateway.ports.http],
    ] as const) {
      const answer = await fetchOnce(url, { port })
      expect(answer.status).toBe(404)
      expect(answer.headers['content-type']).toMatch(/^application\/json/)
      const body = answer.json<{ error: { code: string; requestId: string } }>()
      expect(body.error.code).toBe('PCL_UNKNOWN_HOST')
      expect(body.error.requestId).toMatch(/^[0-9a-f-]{36}$/)
    }
  })

  it('answers 421 when the Host belongs to another app than the TLS connection', async () => {
    const answer = await fetchOnce('https://beta.test/', {
      port: gateway.ports.https,
      servername: 'alpha.test',
      ca: testCa,
    })
    expect(answer.status).toBe(421)
    expect(answer.json()).toMatchObject({ error: { code: 'PCL_MISDIRECTED_REQUEST' } })
    const line = await gateway.waitForLog(
      (l) => l.code === 'PCL_MISDIRECTED_REQUEST' && l.host === 'beta.test',
    )
    expect(line.rule).toBe('hosts')
  })

  it('serves HTTP/2 and HTTP/1.1 on the same port (ALPN)', async () => {
    const caFile = path.join(gateway.stateDir, 'test-ca.pem')
    await writeFile(caFile, testCa)
    const common = ['--resolve', `alpha.test:${gateway.ports.https}:127.0.0.1`, '--cacert', caFile]
    const writeOut = ['-o', '/dev/null', '-w', '%{http_version} %{response_code}']
    const url = `https://alpha.test:${gateway.ports.https}/`
    expect(await curl([...common, '--http2', ...writeOut, url])).toBe('2 200')
    expect(await curl([...common, '--http1.1', ...writeOut, url])).toBe('1.1 200')
  })

  it('enforces an app’s minimum TLS version even though the listener accepts TLS 1.2', async () => {
    const old = await fetchOnce('https://modern.test/', {
      port: gateway.ports.https,
      ca: internalCa,
      maxVersion: 'TLSv1.2',
    })
    expect(old.status).toBe(403)
    expect(old.json()).toMatchObject({ error: { code: 'PCL_TLS_VERSION_TOO_OLD' } })
    const current = await fetchOnce('https://modern.test/', { port: gateway.ports.https, ca: internalCa })
    expect(current.status).toBe(200)
    // The 1.2 listener floor still holds for everyone.
    await expect(
      fetchOnce('https://alpha.test/', {
        port: gateway.ports.https,
        ca: testCa,
        maxVersion: 'TLSv1.1' as 'TLSv1.2',
      }),
    ).rejects.toThrow()
  })

  it('issues internal certificates from a local CA kept in the state dir', async () => {
    const answer = await fetchOnce('https://modern.test/', { port: gateway.ports.https, ca: internalCa })
    expect(answer.status).toBe(200)
    const key = await stat(path.join(gateway.stateDir, 'internal/modern.key'))
    expect(key.mode & 0o777).toBe(0o600)
  })
})
