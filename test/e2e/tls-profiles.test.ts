import { once } from 'node:events'
import { type ClientHttp2Session, connect as http2Connect } from 'node:http2'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { execFileAsync, fetchOnce } from '../support/clients.js'
import {
  policyYaml,
  type RunningGateway,
  runCli,
  startGateway,
  stoppedAfterEach,
} from '../support/gateway.js'
import { rawHttp1 } from '../support/raw-requests.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

interface Handshake {
  ok: boolean
  protocol?: string
  suite?: string
  /** `X25519`, or OpenSSL's name of an ECDH curve such as `secp384r1`. */
  group?: string
  /** What openssl said when the handshake failed. */
  error?: string
}

/** One handshake by `openssl s_client` for `servername`, with the client limited by `args`. */
async function handshake(port: number, servername: string, args: string[]): Promise<Handshake> {
  const command = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername, '-brief', ...args]
  try {
    const running = execFileAsync('openssl', command, { timeout: 20_000 })
    // End of input: s_client closes once the handshake is done instead of waiting for what to send.
    running.child.stdin?.end()
    const { stderr } = await running
    const field = (name: string) => new RegExp(`^${name}: (.+)$`, 'm').exec(stderr)?.[1]
    const key = field('Server Temp Key')
    return {
      ok: true,
      ...(field('Protocol version') ? { protocol: field('Protocol version') } : {}),
      ...(field('Ciphersuite') ? { suite: field('Ciphersuite') } : {}),
      ...(key ? { group: key.includes('ECDH,') ? (key.split(', ')[1] as string) : key.split(',')[0] } : {}),
    }
  } catch (error) {
    return { ok: false, error: String((error as { stderr?: string }).stderr ?? error) }
  }
}

/** A handshake the server refused with a TLS alert: not a closed port or a client that offered nothing. */
function refusedByServer(result: Handshake, alert: 'handshake failure' | 'protocol version'): void {
  expect(result.ok).toBe(false)
  expect(result.error).toMatch(new RegExp(`alert ${alert}`))
}

const tls13Suites = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_CCM_SHA256',
  'TLS_AES_128_CCM_8_SHA256',
]
const groups = [
  'X25519',
  'X448',
  'P-256',
  'P-384',
  'P-521',
  'ffdhe2048',
  'ffdhe3072',
  'ffdhe4096',
  'ffdhe8192',
]

/**
 * Every TLS 1.2 suite this OpenSSL knows that an ECDSA certificate (the internal CA's) or none could
 * complete: CBC, CCM, ARIA, CAMELLIA, NULL and anonymous ones included. The others can never succeed.
 */
async function tls12Candidates(): Promise<string[]> {
  const { stdout } = await execFileAsync('openssl', ['ciphers', '-v', 'ALL:COMPLEMENTOFALL:@SECLEVEL=0'])
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([, version, , auth]) => version !== 'TLSv1.3' && /^Au=(ECDSA|None)$/.test(auth ?? ''))
    .map(([name]) => name as string)
    .filter((name) => !name.includes('PSK'))
}

/** Runs `work` over `items`, a few at a time: the machine has two cores shared with other work. */
async function inBatches<T, R>(items: readonly T[], work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = []
  for (let start = 0; start < items.length; start += 4)
    results.push(...(await Promise.all(items.slice(start, start + 4).map(work))))
  return results
}

/** What a server accepts for `servername`: each suite and group tried alone. */
async function accepted(port: number, servername: string, tls12: readonly string[]) {
  const suites12 = await inBatches(tls12, async (suite) =>
    (await handshake(port, servername, ['-tls1_2', '-cipher', `${suite}:@SECLEVEL=0`])).ok ? suite : '',
  )
  const suites13 = await inBatches(tls13Suites, async (suite) =>
    (await handshake(port, servername, ['-tls1_3', '-ciphersuites', suite])).ok ? suite : '',
  )
  const groups13 = await inBatches(groups, async (group) =>
    (await handshake(port, servername, ['-tls1_3', '-groups', group])).ok ? group : '',
  )
  return {
    tls12: suites12.filter(Boolean).sort(),
    tls13: suites13.filter(Boolean).sort(),
    groups: groups13.filter(Boolean),
  }
}

/** A TLS connection for `servername` as Node's client makes it (all of its suites offered). */
async function connectTls(port: number, servername: string, alpn: string[]): Promise<TLSSocket> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    servername,
    ALPNProtocols: alpn,
    rejectUnauthorized: false,
  })
  await once(socket, 'secureConnect')
  return socket
}

/**
 * Three apps on one HTTPS listener: the default profile, `profile: modern`, and an app with its own
 * suites (one TLS 1.2 suite, one TLS 1.3 suite: ChaCha20, which Node's client never prefers) and group.
 * openssl s_client says what each name is offered; the rest checks that the tuned app's server (a
 * connection on ChaCha20 proves it is that one) is wired like the default one.
 */
describe('TLS profiles on one listener', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let tls12: string[]
  const tuned = { servername: 'tuned.test', suite: 'TLS_CHACHA20_POLY1305_SHA256' }

  beforeAll(async () => {
    ;[echo, tls12] = await Promise.all([echoUpstream(), tls12Candidates()])
    gateway = await startGateway({
      policies: {
        'alpha.yaml': policyYaml({ app: 'alpha', hosts: ['alpha.test'], target: echo.url }),
        'strict.yaml': policyYaml({
          app: 'strict',
          hosts: ['strict.test'],
          target: echo.url,
          tls: '  profile: modern',
        }),
        'tuned.yaml': policyYaml({
          app: 'tuned',
          hosts: ['tuned.test'],
          target: echo.url,
          tls: [
            '  ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384, TLS_CHACHA20_POLY1305_SHA256]',
            // X25519 kept: without it, clients that send an X25519 key share must retry the handshake.
            '  groups: [X25519, P-384]',
          ].join('\n'),
        }),
      },
      args: ['--keep-alive-timeout', '1s'],
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  it('the default profile: ECDHE with AEAD on TLS 1.2, TLS 1.3, X25519, P-256 and P-384, nothing else', async () => {
    expect(tls12.length).toBeGreaterThan(20)
    expect(await accepted(gateway.ports.https, 'alpha.test', tls12)).toEqual({
      tls12: [
        'ECDHE-ECDSA-AES128-GCM-SHA256',
        'ECDHE-ECDSA-AES256-GCM-SHA384',
        'ECDHE-ECDSA-CHACHA20-POLY1305',
      ],
      tls13: ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'],
      groups: ['X25519', 'P-256', 'P-384'],
    })
    const port = gateway.ports.https
    refusedByServer(
      await handshake(port, 'alpha.test', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA']),
      'handshake failure',
    )
    refusedByServer(
      await handshake(port, 'alpha.test', ['-tls1_3', '-groups', 'ffdhe2048']),
      'handshake failure',
    )
    expect(
      await handshake(port, 'alpha.test', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256']),
    ).toMatchObject({
      ok: true,
      protocol: 'TLSv1.2',
      suite: 'ECDHE-ECDSA-AES128-GCM-SHA256',
      group: 'X25519',
    })
    expect(await handshake(port, 'alpha.test', ['-tls1_3'])).toMatchObject({ ok: true, protocol: 'TLSv1.3' })
    // A name no app claims, and no name at all, get the default profile too.
    expect(await handshake(port, 'nobody.test', ['-tls1_2'])).toMatchObject({ ok: true, protocol: 'TLSv1.2' })
    refusedByServer(
      await handshake(port, 'nobody.test', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA']),
      'handshake failure',
    )
  })

  it('profile modern refuses TLS 1.2 for its name while the app beside it accepts TLS 1.2', async () => {
    const port = gateway.ports.https
    refusedByServer(await handshake(port, 'strict.test', ['-tls1_2']), 'protocol version')
    expect(await handshake(port, 'alpha.test', ['-tls1_2'])).toMatchObject({ ok: true, protocol: 'TLSv1.2' })
    expect(await handshake(port, 'strict.test', ['-tls1_3'])).toMatchObject({ ok: true, protocol: 'TLSv1.3' })
    const strict = await accepted(port, 'strict.test', tls12)
    expect(strict).toEqual({
      tls12: [],
      tls13: ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'],
      groups: ['X25519', 'P-256', 'P-384'],
    })
    const answer = await fetchOnce('https://strict.test/modern', { port })
    expect(answer.status).toBe(200)
    expect(answer.json().url).toBe('/modern')
  })

  it('an app with its own suites and groups is offered exactly those', async () => {
    expect(await accepted(gateway.ports.https, 'tuned.test', tls12)).toEqual({
      tls12: ['ECDHE-ECDSA-AES256-GCM-SHA384'],
      tls13: ['TLS_CHACHA20_POLY1305_SHA256'],
      groups: ['X25519', 'P-384'],
    })
    expect(await handshake(gateway.ports.https, 'tuned.test', ['-groups', 'P-521:P-384'])).toMatchObject({
      ok: true,
      protocol: 'TLSv1.3',
      suite: 'TLS_CHACHA20_POLY1305_SHA256',
      group: 'secp384r1',
    })
  })

  it('a profile’s server answers HTTP/1.1 and HTTP/2 (ALPN) and refuses CONNECT with JSON', async () => {
    const socket = await connectTls(gateway.ports.https, tuned.servername, ['http/1.1'])
    expect([socket.getCipher().name, socket.alpnProtocol]).toEqual([tuned.suite, 'http/1.1'])
    socket.destroy()
    const session = http2Connect(`https://127.0.0.1:${gateway.ports.https}`, {
      servername: tuned.servername,
      rejectUnauthorized: false,
    })
    try {
      await once(session, 'connect')
      expect([(session.socket as TLSSocket).getCipher().name, session.alpnProtocol]).toEqual([
        tuned.suite,
        'h2',
      ])
      const get = await h2Request(session, { ':path': '/over-h2', ':authority': 'tuned.test' })
      expect(get.status).toBe(200)
      expect(JSON.parse(get.body).url).toBe('/over-h2')
      const connect = await h2Request(session, { ':method': 'CONNECT', ':authority': 'tuned.test:443' })
      expect(connect.status).toBe(400)
      expect(JSON.parse(connect.body)).toMatchObject({ error: { code: 'PCL_BAD_REQUEST' } })
    } finally {
      session.destroy()
    }
    const http1 = await rawHttp1(gateway.ports.https, {
      target: '/over-h1',
      host: 'tuned.test',
      servername: tuned.servername,
    })
    expect(http1.status).toBe(200)
  })

  it('a profile’s server holds Expect: 100-continue for the guards, answers bad heads with JSON, closes idle connections', async () => {
    const socket = await connectTls(gateway.ports.https, tuned.servername, ['http/1.1'])
    expect(socket.getCipher().name).toBe(tuned.suite)
    const received = readAll(socket)
    socket.write(
      'POST /upload HTTP/1.1\r\nHost: tuned.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n',
    )
    await received.until(/^HTTP\/1\.1 100 Continue\r\n/)
    socket.write('hello')
    await received.until(/HTTP\/1\.1 200 OK[\s\S]*"method":"POST"/)
    // Nothing more is asked: the keep-alive deadline (1 s here) closes the connection.
    await once(socket, 'close')

    const bad = await connectTls(gateway.ports.https, tuned.servername, ['http/1.1'])
    expect(bad.getCipher().name).toBe(tuned.suite)
    const answer = readAll(bad)
    bad.write('NOT A REQUEST\r\n\r\n')
    await answer.until(/^HTTP\/1\.1 400 [\s\S]*"code":"PCL_BAD_REQUEST"/)
    bad.destroy()
  })

  it('a profile’s server relays WebSockets and resumes its own TLS sessions, and only those', async () => {
    // ws hands `servername` to tls.connect, though its types do not list it.
    const socket = new WebSocket(`wss://127.0.0.1:${gateway.ports.https}/live`, {
      headers: { host: tuned.servername },
      rejectUnauthorized: false,
      ...({ servername: tuned.servername } as WebSocket.ClientOptions),
    })
    const hello = once(socket, 'message')
    await once(socket, 'open')
    expect((socket as unknown as { _socket: TLSSocket })._socket.getCipher().name).toBe(tuned.suite)
    expect(JSON.parse(String((await hello)[0]))).toMatchObject({ url: '/live' })
    socket.send('over the tuned server')
    const [echoed] = await once(socket, 'message')
    expect(String(echoed)).toBe('over the tuned server')
    socket.close()

    const first = tlsConnect({
      host: '127.0.0.1',
      port: gateway.ports.https,
      servername: tuned.servername,
      rejectUnauthorized: false,
    })
    const [session] = (await once(first, 'session')) as [Buffer]
    first.destroy()
    const second = tlsConnect({
      host: '127.0.0.1',
      port: gateway.ports.https,
      servername: tuned.servername,
      session,
      rejectUnauthorized: false,
    })
    await once(second, 'secureConnect')
    expect([second.getCipher().name, second.isSessionReused()]).toEqual([tuned.suite, true])
    second.destroy()
    // Not on another profile's server: it would resume a session made with other settings.
    const elsewhere = tlsConnect({
      host: '127.0.0.1',
      port: gateway.ports.https,
      servername: 'alpha.test',
      session,
      rejectUnauthorized: false,
    })
    await once(elsewhere, 'secureConnect')
    expect(elsewhere.isSessionReused()).toBe(false)
    elsewhere.destroy()
  })

  it('a connection that reached another profile’s server (no SNI) is refused with 421, never served', async () => {
    const noSni = (host: string) =>
      fetchOnce(`https://${host}/`, { port: gateway.ports.https, servername: '' })
    const misdirected = await noSni('tuned.test')
    expect(misdirected.status).toBe(421)
    expect(misdirected.json()).toMatchObject({ error: { code: 'PCL_MISDIRECTED_REQUEST' } })
    const line = await gateway.waitForLog(
      (l) => l.code === 'PCL_MISDIRECTED_REQUEST' && l.host === 'tuned.test',
    )
    expect(line.rule).toBe('tls.profile')
    expect((await noSni('alpha.test')).status).toBe(200)
  })

  it('explain says which profile each app gets', async () => {
    const { stdout } = await runCli([
      'explain',
      '--policies',
      gateway.policiesDir,
      '--url',
      'https://tuned.test/',
    ])
    expect(stdout).toContain(
      'tls: profile intermediate + own ciphers and groups (TLSv1.2 and later; groups X25519:P-384; ciphers ECDHE-ECDSA-AES256-GCM-SHA384:TLS_CHACHA20_POLY1305_SHA256)',
    )
  })

  it('drains a profile’s server on shutdown: its HTTP/2 session gets GOAWAY', async () => {
    const session = http2Connect(`https://127.0.0.1:${gateway.ports.https}`, {
      servername: tuned.servername,
      rejectUnauthorized: false,
    })
    session.on('error', () => {}) // the gateway's exit ends the session
    await once(session, 'connect')
    expect((session.socket as TLSSocket).getCipher().name).toBe(tuned.suite)
    const goaway = once(session, 'goaway')
    const exited = gateway.stop()
    await goaway
    expect(await exited).toBe(0)
    session.destroy()
  })
})

/** Profiles that appear on a reload get their server when first needed; the others keep theirs. */
describe('TLS profiles on reload', () => {
  const running = stoppedAfterEach()

  it('a modern app added by SIGHUP refuses TLS 1.2 from then on; the other app still accepts it', async () => {
    const echo = await echoUpstream()
    running.push({ stop: () => echo.close() })
    const gateway = await startGateway({
      policies: { 'alpha.yaml': policyYaml({ app: 'alpha', hosts: ['alpha.test'], target: echo.url }) },
      args: ['--watch', 'false'],
    })
    running.push(gateway)
    const port = gateway.ports.https
    // Not an app yet: the default profile (and the placeholder certificate) take TLS 1.2.
    expect(await handshake(port, 'late.test', ['-tls1_2'])).toMatchObject({ ok: true })
    await gateway.writePolicy(
      'late.yaml',
      policyYaml({ app: 'late', hosts: ['late.test'], target: echo.url, tls: '  profile: modern' }),
    )
    gateway.process.kill('SIGHUP')
    await gateway.waitForLog((line) => line.msg === 'policies reloaded')
    refusedByServer(await handshake(port, 'late.test', ['-tls1_2']), 'protocol version')
    await gateway.waitForLog((line) => line.msg === 'HTTPS server made for a TLS profile')
    expect(await handshake(port, 'alpha.test', ['-tls1_2'])).toMatchObject({ ok: true, protocol: 'TLSv1.2' })
    const answer = await fetchOnce('https://late.test/new', { port })
    expect([answer.status, answer.json().url]).toEqual([200, '/new'])
  })
})

/** An HTTP/2 request on `session`: status and body. */
function h2Request(
  session: ClientHttp2Session,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers)
    let status = 0
    let body = ''
    stream.on('response', (head) => {
      status = Number(head[':status'])
    })
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.once('end', () => resolve({ status, body }))
    stream.once('error', reject)
    stream.end()
  })
}

/** Everything a socket receives, and a wait for it to match. */
function readAll(socket: TLSSocket): { until(pattern: RegExp): Promise<void> } {
  let text = ''
  const waiters: { pattern: RegExp; resolve: () => void }[] = []
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    text += chunk
    for (const waiter of [...waiters]) {
      if (waiter.pattern.test(text)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
  })
  return {
    until: (pattern) =>
      pattern.test(text) ? Promise.resolve() : new Promise((resolve) => waiters.push({ pattern, resolve })),
  }
}
