import { lookup } from 'node:dns/promises'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { SecureContextOptions } from 'node:tls'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { listen } from '../../src/demo/echo-app.js'
import { InternalCa } from '../../src/tls/internal-ca.js'
import { type RunningGateway, runCli, startGateway } from '../support/gateway.js'
import { echoUpstream, refusingPort, tcpUpstream, type Upstream } from '../support/upstreams.js'

interface Check {
  id: string
  status: 'pass' | 'fail' | 'skip' | 'error'
  evidence: string
}

/** Every check `verify` runs when given a policy with CORS, WebSocket and access rules, and --health. */
const allChecks = [
  'https-redirect',
  'tls-version',
  'certificate',
  'hsts',
  'cors-foreign-origin',
  'websocket-foreign-origin',
  'forwarded-for-spoofing',
  'same-origin-write',
  'preflight-allowed-headers',
  'websocket-own-origin',
  'restricted-paths',
  'health',
]

const good = [
  'app: good',
  'hosts: [good.test]',
  'upstream: { targets: ["UPSTREAM"] }',
  'clientIp: { trustedProxies: [10.0.0.0/8] }',
  'cors: { origins: [https://app.example.com] }',
  'websocket: { paths: [{ path: /live/** }] }',
  'access:',
  '  - { path: /studio/**, allow: [10.0.0.0/8] }',
  '  - { path: /sql, deny: all, respond: 404 }',
  'rateLimits: [{ name: per-ip, limit: 100, window: 10m }]',
  '',
].join('\n')

/** `verify --format json` with these arguments: its exit code and its checks by id. */
async function runVerify(args: string[]): Promise<{ code: number | null; checks: Map<string, Check> }> {
  const result = await runCli(['verify', ...args, '--format', 'json'])
  const checks = JSON.parse(result.stdout) as Check[]
  return { code: result.code, checks: new Map(checks.map((check) => [check.id, check])) }
}

/** The good policy, for probes of something that is not the gateway (its upstream is never asked). */
async function goodPolicyFile(): Promise<string> {
  const file = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-verify-')), 'good.yaml')
  await writeFile(file, good.replace('UPSTREAM', 'http://127.0.0.1:9'))
  return file
}

/**
 * `verify` of nothing: a closed port, a host that does not resolve, a server that hangs up at once. No
 * answer is no evidence, so no check may pass, and the run must not exit 0.
 */
describe('portcullis verify with nothing to answer', () => {
  let policy: string
  let hangUp: Upstream
  beforeAll(async () => {
    // The premise: were it to resolve, the probes would leave the loopback.
    await expect(lookup('nothing.invalid')).rejects.toMatchObject({ code: 'ENOTFOUND' })
    policy = await goodPolicyFile()
    hangUp = await tcpUpstream((socket) => socket.destroy())
  })
  afterAll(async () => {
    await hangUp?.close()
  })

  const targets: [string, () => string[]][] = [
    ['a closed port', () => [`https://good.test:${refusingPort}`, '--connect', '127.0.0.1']],
    ['a host that does not resolve', () => [`https://nothing.invalid:${refusingPort}`]],
    ['a server that hangs up at once', () => [`https://good.test:${hangUp.port}`, '--connect', '127.0.0.1']],
  ]
  it.each(targets)('%s: every check is an error, none passes, exit 1', async (_name, target) => {
    const port = new URL(target()[0] ?? '').port
    const { code, checks } = await runVerify([
      ...target(),
      '--http-port',
      port,
      '--policy',
      policy,
      '--health',
      '/health',
    ])
    expect([...checks.keys()]).toEqual(allChecks)
    const all = [...checks.values()]
    expect(all.filter((check) => check.status === 'pass')).toEqual([])
    // Not a fail either: nothing was seen that says the deployment is wrong.
    expect(
      all.filter((check) => check.status !== 'error' || !check.evidence.startsWith('no answer: ')),
    ).toEqual([])
    expect(code).toBe(1)
  })

  it('prints the error with its reason', async () => {
    const result = await runCli([
      'verify',
      `https://good.test:${refusingPort}`,
      '--connect',
      '127.0.0.1',
      '--http-port',
      String(refusingPort),
    ])
    expect(result.stdout).toMatch(
      /^ERROR websocket-foreign-origin +A foreign Origin cannot open a WebSocket: no answer: upgrade to wss:\/\/good\.test:1\/: connect ECONNREFUSED 127\.0\.0\.1:1$/m,
    )
    expect(result.stdout).toMatch(
      /^ERROR https-redirect +.*: no answer: GET http:\/\/good\.test:1\/verify\?probe=1: connect ECONNREFUSED/m,
    )
    expect(result.stdout).toMatch(/^12 checks: 0 passed, 4 skipped, 0 failed, 8 errors \(no answer\)$/m)
    expect(result.code).toBe(1)
  })
})

/**
 * `verify` of a server that is not the gateway: one HTTPS and one HTTP listener, with a certificate
 * trusted for good.test, answering the same status to every request, upgrades included. What holds for
 * any server (a trusted certificate, a health path that answers) passes; what needs the gateway's own
 * refusal, grant or relay does not, whatever the status.
 */
describe('portcullis verify of a server that is not the gateway', () => {
  let policy: string
  let caFile: string
  let leaf: { cert: string; key: string }
  const servers: Server[] = []
  beforeAll(async () => {
    policy = await goodPolicyFile()
    const ca = await InternalCa.open(await mkdtemp(path.join(tmpdir(), 'pcl-verify-ca-')))
    leaf = await ca.leafFor('plain', ['good.test'])
    caFile = ca.caCertificateFile
  })
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  })

  /** An answer of `status` to every request, with the headers `headers` gives for the nth answer. */
  function answering(status: number, headers: (nth: number) => Record<string, string> = () => ({})) {
    let answered = 0
    const answer: RequestListener = (request, response) => {
      request.resume()
      response.writeHead(status, { 'content-type': 'text/plain', ...headers(++answered) }).end('plain\n')
    }
    return answer
  }

  /** The two listeners' ports; neither has an upgrade listener, so upgrades are answered as requests. */
  async function plainServer(
    answer: RequestListener,
    tls: SecureContextOptions = {},
  ): Promise<{ https: number; http: number }> {
    const https = createHttpsServer({ ...leaf, ...tls }, answer)
    const http = createHttpServer(answer)
    servers.push(https, http)
    return { https: await listen(https, 0), http: await listen(http, 0) }
  }

  const verifyPlain = (ports: { https: number; http: number }) =>
    runVerify([
      `https://good.test:${ports.https}`,
      '--connect',
      '127.0.0.1',
      '--http-port',
      String(ports.http),
      '--ca',
      caFile,
      '--policy',
      policy,
      '--health',
      '/health',
    ])

  const fails = {
    'https-redirect': 'fail',
    'tls-version': 'pass',
    certificate: 'pass',
    hsts: 'fail',
    'cors-foreign-origin': 'fail',
    'websocket-foreign-origin': 'fail',
    'forwarded-for-spoofing': 'skip',
    'same-origin-write': 'fail',
    'preflight-allowed-headers': 'fail',
    'websocket-own-origin': 'fail',
    'restricted-paths': 'fail',
  }
  it.each([
    [200, { ...fails, health: 'pass' }],
    [403, { ...fails, health: 'fail' }],
    [404, { ...fails, health: 'fail' }],
  ])(
    'one that answers %i to everything passes nothing that needs the gateway, exit 1',
    async (status, expected) => {
      const ports = await plainServer(answering(status))
      const { code, checks } = await verifyPlain(ports)
      expect(Object.fromEntries([...checks.values()].map((check) => [check.id, check.status]))).toEqual(
        expected,
      )
      expect(checks.get('websocket-foreign-origin')?.evidence).toBe(
        `upgrade to /live/verify from https://portcullis-verify.invalid → ${status} (not the gateway's Origin refusal)`,
      )
      expect(checks.get('restricted-paths')?.evidence).toBe(
        `GET /studio/verify → ${status} (not the gateway's refusal), GET /sql → ${status} (not the gateway's refusal)`,
      )
      expect(code).toBe(1)
    },
  )

  it('one that still speaks TLS 1.1 fails tls-version: the probe offers it in earnest', async () => {
    const ports = await plainServer(answering(200), { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' })
    const { checks } = await verifyPlain(ports)
    expect(checks.get('tls-version')).toMatchObject({
      status: 'fail',
      evidence: 'negotiated TLSv1.3; TLS 1.1 accepted TLSv1.1',
    })
  })

  it('one that redirects to another host fails https-redirect', async () => {
    const elsewhere = 'https://good.test.evil.invalid/verify?probe=1'
    const ports = await plainServer(answering(308, () => ({ location: elsewhere })))
    const { checks } = await verifyPlain(ports)
    expect(checks.get('https-redirect')).toMatchObject({
      status: 'fail',
      evidence: `http://good.test:${ports.http}/verify → 308 ${elsewhere}`,
    })
  })

  it('one whose RateLimit header comes on some answers only fails forwarded-for-spoofing', async () => {
    const ports = await plainServer(
      answering(
        200,
        (nth): Record<string, string> =>
          nth % 2 === 0 ? { ratelimit: `"per-ip";r=${100 - nth};t=600` } : {},
      ),
    )
    const { checks } = await verifyPlain(ports)
    expect(checks.get('forwarded-for-spoofing')).toMatchObject({
      status: 'fail',
      evidence: expect.stringMatching(
        /^only 4 of 8 answers to forged X-Forwarded-For carried a RateLimit header$/,
      ),
    })
  })
})

/** `verify` against a deployment configured well and one configured badly, on the same gateway. */
describe('portcullis verify', () => {
  let gateway: RunningGateway
  let echo: Upstream
  const bad = [
    'app: bad',
    'hosts: [bad.test]',
    'upstream: { targets: ["UPSTREAM"] }',
    'hsts: { maxAge: 3600 }',
    'clientIp: { trustedProxies: [0.0.0.0/0] }',
    'cors: { origins: ["*"] }',
    'rateLimits: [{ name: per-ip, limit: 100, window: 10m }]',
    '',
  ].join('\n')

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'good.yaml': good.replace('UPSTREAM', echo.url),
        'bad.yaml': bad.replace('UPSTREAM', echo.url),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  /** `verify` of a host on the test gateway, trusting its internal CA. */
  const verifyArgs = (host: string) => [
    `https://${host}:${gateway.ports.https}`,
    '--connect',
    '127.0.0.1',
    '--http-port',
    String(gateway.ports.http),
    '--ca',
    path.join(gateway.stateDir, 'internal/ca.crt'),
  ]

  const run = (host: string, policy = path.join(gateway.policiesDir, 'good.yaml')) =>
    runVerify([...verifyArgs(host), '--policy', policy, '--health', '/health'])

  it('passes every check on a well-configured deployment, with evidence', async () => {
    const { code, checks } = await run('good.test')
    expect([...checks.values()].filter((check) => check.status !== 'pass')).toEqual([])
    expect(code).toBe(0)
    expect(checks.get('tls-version')?.evidence).toBe(
      'negotiated TLSv1.3; TLS 1.1 refused by the server (ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION)',
    )
    expect(checks.get('restricted-paths')?.evidence).toBe(
      'GET /studio/verify → 403 PCL_ACCESS_DENIED, GET /sql → 404 PCL_NOT_FOUND',
    )
    expect(checks.get('forwarded-for-spoofing')?.evidence).toMatch(
      /sent at once: (\d+, ){7}\d+ \(one shared budget/,
    )
  })

  it('fails where a deployment is misconfigured, and exits 1', async () => {
    const { code, checks } = await run('bad.test')
    expect(code).toBe(1)
    const failed = [...checks.values()].filter((check) => check.status === 'fail').map((check) => check.id)
    expect(failed.sort()).toEqual([
      'cors-foreign-origin',
      'forwarded-for-spoofing',
      'hsts',
      'restricted-paths',
      'websocket-foreign-origin',
    ])
    expect(checks.get('hsts')?.evidence).toBe('Strict-Transport-Security: max-age=3600')
    expect(checks.get('https-redirect')?.status).toBe('pass')
  })

  it("checks what must work too: same-origin writes, the own origin's WebSockets, every allowed header", async () => {
    const { checks } = await run('good.test')
    expect(checks.get('same-origin-write')?.evidence).toMatch(
      /^POST \/ with Origin https:\/\/good\.test:\d+ → 200, POST \/ with Origin null → 200$/,
    )
    expect(checks.get('websocket-own-origin')?.evidence).toMatch(/^upgrade to \/live\/verify from .* → 101/)
    // A policy that means more than the deployment allows: its client's header is refused.
    const expected = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-verify-')), 'meant.yaml')
    await writeFile(
      expected,
      good
        .replace('UPSTREAM', echo.url)
        .replace(
          'cors: { origins: [https://app.example.com] }',
          'cors: { origins: [https://app.example.com], allowedHeaders: [content-type, apikey] }',
        ),
    )
    const meant = await run('good.test', expected)
    expect(meant.checks.get('preflight-allowed-headers')).toMatchObject({
      status: 'fail',
      evidence: expect.stringMatching(/with content-type, apikey → 403 PCL_CORS_HEADER_DENIED$/),
    })
  })

  it('prints one line per check', async () => {
    const result = await runCli(['verify', ...verifyArgs('good.test')])
    expect(result.stdout).toMatch(
      /^PASS +https-redirect +Plain HTTP redirects to HTTPS: http:\/\/good\.test:\d+\/verify → 308 https:\/\/good\.test:\d+\/verify\?probe=1$/m,
    )
    expect(result.stdout).toMatch(/^SKIP +restricted-paths/m)
    expect(result.stdout).toMatch(/^12 checks: \d+ passed, \d+ skipped, 0 failed, 0 errors \(no answer\)$/m)
    expect(result.code).toBe(0)
  })
})
