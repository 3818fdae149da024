import { mkdtemp, readdir, stat, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { certificateFingerprint, curl, fetchOnce, presentedCertificate } from '../support/clients.js'
import { type RunningGateway, startGateway, stoppedAfterEach } from '../support/gateway.js'
import {
  acmeArgs,
  acmePolicy,
  gatewayPorts,
  type Pebble,
  preparePebbleApi,
  startPebble,
} from '../support/pebble.js'
import { type RedisServer, startRedis } from '../support/redis.js'
import { closedPort, echoUpstream, type Upstream } from '../support/upstreams.js'

const issued = (line: { msg?: string }) => line.msg === 'ACME certificate issued and now served'
const ordering = (line: { msg?: string }) => line.msg === 'ordering an ACME certificate'

/** curl verifying the chain against pebble's root and the host name: what a browser that trusted pebble would do. */
async function verifiedGet(port: number, host: string, rootFile: string): Promise<string> {
  return curl([
    '--cacert',
    rootFile,
    '--resolve',
    `${host}:${port}:127.0.0.1`,
    '-o',
    '/dev/null',
    '-w',
    '%{http_code} %{ssl_verify_result}',
    `https://${host}:${port}/`,
  ])
}

async function writeRoot(pebble: Pebble): Promise<string> {
  const file = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-pebble-root-')), 'root.pem')
  await writeFile(file, await pebble.issuingRoot())
  return file
}

describe('ACME against pebble', () => {
  let upstream: Upstream
  const running = stoppedAfterEach()

  beforeAll(async () => {
    upstream = await echoUpstream()
  })
  afterAll(async () => {
    await upstream?.close()
  })

  async function launch(options: Parameters<typeof startGateway>[0]): Promise<RunningGateway> {
    const gateway = await startGateway(options)
    running.push(gateway)
    return gateway
  }

  it('issues over HTTP-01 for two names, serves a chain to pebble’s root, and reuses it after a restart', async () => {
    const ports = await gatewayPorts()
    const pebble = await startPebble({ httpPort: ports.http, tlsPort: ports.https })
    running.push(pebble)
    const stateDir = await mkdtemp(path.join(tmpdir(), 'pcl-acme-state-'))
    const policies = {
      'shop.yaml': acmePolicy('shop', ['shop.test', 'www.shop.test'], upstream.url, pebble.directory),
    }
    const env = { NODE_EXTRA_CA_CERTS: pebble.apiCaFile }
    const first = await launch({ policies, stateDir, env, args: acmeArgs(ports) })
    // Until the CA issues, the names get a self-signed placeholder.
    expect(first.logs.some((line) => String(line.msg).includes('placeholder'))).toBe(true)
    await first.waitForLog(issued, 20_000)

    const root = await writeRoot(pebble)
    expect(await verifiedGet(ports.https, 'shop.test', root)).toBe('200 0')
    expect(await verifiedGet(ports.https, 'www.shop.test', root)).toBe('200 0')
    expect(await presentedCertificate(ports.https, 'shop.test')).toContain('DNS:shop.test, DNS:www.shop.test')

    // Keys 0600; no temporary files left behind.
    const certificates = path.join(stateDir, 'acme/certificates')
    expect(((await stat(path.join(certificates, 'shop.key'))).mode & 0o777).toString(8)).toBe('600')
    const accounts = await readdir(path.join(stateDir, 'acme/accounts'))
    expect(accounts).toHaveLength(1)
    expect(
      ((await stat(path.join(stateDir, 'acme/accounts', accounts[0] ?? ''))).mode & 0o777).toString(8),
    ).toBe('600')
    expect((await readdir(certificates)).filter((name) => name.endsWith('.tmp'))).toEqual([])

    // The certificate is reported on the admin listener: health, expiry and order metrics.
    const health = await fetchOnce('http://127.0.0.1/health', { port: first.ports.admin })
    const certificateCheck = health.json<{
      checks: { certificates: { status: string; apps: Record<string, unknown> } }
    }>().checks.certificates
    expect(certificateCheck.status).toBe('pass')
    expect(certificateCheck.apps.shop).toEqual({ expiresAt: expect.stringMatching(/^20\d\d-/) })
    const metrics = (await fetchOnce('http://127.0.0.1/metrics', { port: first.ports.admin })).body
    expect(metrics).toContain('portcullis_acme_orders_total{app="shop",result="success"} 1')
    expect(metrics).toMatch(/portcullis_certificate_expiry_timestamp_seconds\{app="shop"\} \d+/)

    const before = await certificateFingerprint(ports.https, 'shop.test')
    expect(await first.stop()).toBe(0)
    running.splice(running.indexOf(first), 1)

    const second = await launch({ policies, stateDir, env, args: acmeArgs(ports) })
    await second.waitForLog((line) => line.msg === 'serving the stored ACME certificate')
    expect(await certificateFingerprint(ports.https, 'shop.test')).toBe(before)
    expect(second.logs.filter(ordering)).toEqual([])
    expect(second.logs.filter((line) => line.msg === 'ACME account created')).toEqual([])

    // With the CA gone, a reload that adds a host cannot get it a certificate: the names that had one
    // keep it (no placeholder) while the order is retried.
    await pebble.stop()
    await second.writePolicy(
      'shop.yaml',
      acmePolicy('shop', ['shop.test', 'www.shop.test', 'new.shop.test'], upstream.url, pebble.directory),
    )
    await second.waitForLog((line) => String(line.msg).startsWith('ACME certificate order failed'))
    expect(await certificateFingerprint(ports.https, 'shop.test')).toBe(before)
  })

  it('issues over TLS-ALPN-01 with port 80 closed to the CA', async () => {
    const ports = await gatewayPorts()
    // The validator's HTTP port points nowhere: only TLS-ALPN-01 can succeed.
    const pebble = await startPebble({ httpPort: await closedPort(), tlsPort: ports.https })
    running.push(pebble)
    const gateway = await launch({
      policies: {
        'api.yaml': acmePolicy('api', ['api.test'], upstream.url, pebble.directory, 'tls-alpn-01'),
      },
      env: { NODE_EXTRA_CA_CERTS: pebble.apiCaFile },
      args: acmeArgs(ports),
    })
    await gateway.waitForLog(issued, 20_000)
    expect(await verifiedGet(ports.https, 'api.test', await writeRoot(pebble))).toBe('200 0')
    // Ordinary HTTP/2 and HTTP/1.1 clients are unaffected by the ALPN routing.
    expect(
      await curl([
        '-k',
        '--http2',
        '--resolve',
        `api.test:${ports.https}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_version}',
        `https://api.test:${ports.https}/`,
      ]),
    ).toBe('2')
  })

  it('renews a short-lived certificate and swaps it live while a keep-alive client keeps working', async () => {
    const ports = await gatewayPorts()
    const pebble = await startPebble({ httpPort: ports.http, tlsPort: ports.https, certificateValidity: 12 })
    running.push(pebble)
    const gateway = await launch({
      policies: { 'live.yaml': acmePolicy('live', ['live.test'], upstream.url, pebble.directory) },
      env: { NODE_EXTRA_CA_CERTS: pebble.apiCaFile },
      args: acmeArgs(ports),
    })
    await gateway.waitForLog(issued, 20_000)
    const root = await pebble.issuingRoot()
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: root })
    const get = () =>
      new Promise<{ status: number; localPort: number; fingerprint: string }>((resolve, reject) => {
        const outgoing = request(
          {
            host: '127.0.0.1',
            port: ports.https,
            servername: 'live.test',
            headers: { host: 'live.test' },
            agent,
            path: '/',
          },
          (response) => {
            response.resume()
            const socket = response.socket as import('node:tls').TLSSocket
            response.on('end', () =>
              resolve({
                status: response.statusCode ?? 0,
                localPort: socket.localPort ?? 0,
                fingerprint: socket.getPeerCertificate().fingerprint256,
              }),
            )
          },
        )
        outgoing.on('error', reject)
        outgoing.end()
      })
    const before = await get()
    const issuedCount = gateway.logs.filter(issued).length
    await gateway.waitForLog(
      (line) => issued(line) && gateway.logs.filter(issued).length > issuedCount,
      20_000,
    )
    // The open connection keeps its certificate and keeps working; a new one gets the renewed certificate.
    const during = await get()
    expect(during.status).toBe(200)
    expect(during.localPort).toBe(before.localPort)
    expect(during.fingerprint).toBe(before.fingerprint)
    const renewed = await certificateFingerprint(ports.https, 'live.test')
    expect(renewed).not.toBe(before.fingerprint)
    agent.destroy()
  })

  it('two replicas sharing Redis order once, serve the same certificate, and answer each other’s challenges', async () => {
    const redis: RedisServer = await startRedis()
    running.push(redis)
    const front = await gatewayPorts()
    const pebble = await startPebble({ httpPort: front.http, tlsPort: front.https })
    running.push(pebble)
    const env = { NODE_EXTRA_CA_CERTS: pebble.apiCaFile }
    const shared = ['--redis', redis.url, '--redis-timeout', '2s']
    const policies = { 'team.yaml': acmePolicy('team', ['team.test'], upstream.url, pebble.directory) }
    // Both start at once: the lock lets one order, the other picks the result up.
    const [a, b] = await Promise.all([
      launch({ policies, env, args: acmeArgs(front, shared) }),
      launch({ policies, env, args: acmeArgs(await gatewayPorts(), shared) }),
    ])
    await Promise.race([a.waitForLog(issued, 20_000), b.waitForLog(issued, 20_000)])
    const pickedUp = (line: { msg?: string }) =>
      issued(line) || String(line.msg).startsWith('serving the stored ACME certificate')
    await Promise.all([a.waitForLog(pickedUp, 20_000), b.waitForLog(pickedUp, 20_000)])
    // One certificate for the name: one order succeeded and the other replica picked its result up.
    // (Under load an attempt can fail; whichever replica takes the lock next retries, never both.)
    const warnings = JSON.stringify([...a.logs, ...b.logs].filter((line) => Number(line.level) >= 40))
    expect([...a.logs, ...b.logs].filter(issued), warnings).toHaveLength(1)
    expect(await certificateFingerprint(b.ports.https, 'team.test')).toBe(
      await certificateFingerprint(a.ports.https, 'team.test'),
    )

    // A replica added later, with an empty state dir, serves the shared certificate from its start.
    const added = await launch({ policies, env, args: acmeArgs(await gatewayPorts(), shared) })
    expect(
      added.logs.some((line) => String(line.msg).startsWith('serving the stored ACME certificate')),
    ).toBe(true)
    expect(added.logs.some((line) => String(line.msg).includes('placeholder'))).toBe(false)
    expect(await certificateFingerprint(added.ports.https, 'team.test')).toBe(
      await certificateFingerprint(a.ports.https, 'team.test'),
    )

    // A replica the CA cannot reach orders; the one it can reach answers from the shared store.
    const lateHosts = { 'late.yaml': acmePolicy('late', ['late.test'], upstream.url, pebble.directory) }
    const hidden = await launch({ policies: lateHosts, env, args: acmeArgs(await gatewayPorts(), shared) })
    await hidden.waitForLog(issued, 20_000)
    expect(hidden.logs.filter(issued)).toHaveLength(1)
    expect(await verifiedGet(hidden.ports.https, 'late.test', await writeRoot(pebble))).toBe('200 0')
  })

  it('starts and serves a placeholder while the CA is unreachable, retries, and issues once it is back', async () => {
    const ports = await gatewayPorts()
    const acmePort = await closedPort()
    const api = await preparePebbleApi()
    const gateway = await launch({
      policies: {
        'wait.yaml': acmePolicy('wait', ['wait.test'], upstream.url, `https://127.0.0.1:${acmePort}/dir`),
      },
      env: { NODE_EXTRA_CA_CERTS: api.apiCaFile },
      args: acmeArgs(ports),
    })
    expect(await presentedCertificate(ports.https, 'wait.test')).toContain('placeholder')
    const failed = (line: { msg?: string }) => String(line.msg).startsWith('ACME certificate order failed')
    await gateway.waitForLog((line) => failed(line) && gateway.logs.filter(failed).length >= 2, 10_000)
    const https = (host: string) =>
      curl([
        '-k',
        '--resolve',
        `${host}:${ports.https}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `https://${host}:${ports.https}/`,
      ])
    expect(await https('wait.test')).toBe('200')
    const retries = gateway.logs.filter(failed).map((line) => Number(line.retryInMs))
    expect(retries[1]).toBeGreaterThan(retries[0] ?? 0)
    const health = await fetchOnce('http://127.0.0.1/health', { port: gateway.ports.admin })
    expect(health.status).toBe(200)
    expect(health.json<{ status: string; checks: { certificates: unknown } }>()).toMatchObject({
      status: 'degraded',
      checks: { certificates: { status: 'warn', apps: { wait: { placeholder: true } } } },
    })

    const pebble = await startPebble({ httpPort: ports.http, tlsPort: ports.https, acmePort, api })
    running.push(pebble)
    await gateway.waitForLog(issued, 30_000)
    expect(await verifiedGet(ports.https, 'wait.test', await writeRoot(pebble))).toBe('200 0')
  })
})
