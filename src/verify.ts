import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { type PeerCertificate, connect as tlsConnect } from 'node:tls'
import WebSocket, { type ClientOptions } from 'ws'
import { type ErrorCode, errorCodes, errorStatus } from './errors.js'
import type { Policy } from './policy/schema.js'

/**
 * Probes a live deployment from the outside, as the seeds' "sanity check before go-live" sections do:
 * every check sends real requests and reports pass, fail or skip with the evidence it saw, or error when a
 * probe got no answer to judge (refused, unresolved, reset, timed out): never a pass.
 */
export interface VerifyOptions {
  /** https://host[:port] of the deployment. */
  target: string
  /** Connect here instead of resolving the host (like curl --resolve). */
  connect?: string
  /** Port of the plain-HTTP listener, for the redirect check. */
  httpPort: number
  /** Extra CA certificates to trust (PEM). */
  ca?: string
  /** The app's policy: restricted paths, WebSocket paths and rate limits to probe. */
  policy?: Policy
  /** A health path expected to answer 2xx. */
  healthPath?: string
}

export type CheckStatus = 'pass' | 'fail' | 'skip' | 'error'

export interface CheckResult {
  id: string
  title: string
  status: CheckStatus
  evidence: string
}

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  /** The first 4 KiB of the body, enough to see a gateway error code. */
  body: string
}

const foreignOrigin = 'https://portcullis-verify.invalid'
const halfYearSeconds = 15_552_000

export async function verify(options: VerifyOptions): Promise<CheckResult[]> {
  const url = new URL(options.target)
  const checks: [string, string, () => Promise<[CheckStatus, string]>][] = [
    ['https-redirect', 'Plain HTTP redirects to HTTPS', () => checkRedirect(options, url)],
    ['tls-version', 'TLS 1.2 or later, and nothing older', () => checkTlsVersion(options, url)],
    [
      'certificate',
      'Certificate valid for the host, with 14+ days left',
      () => checkCertificate(options, url),
    ],
    ['hsts', 'HSTS present with max-age of 180+ days', () => checkHsts(options, url)],
    [
      'cors-foreign-origin',
      "A foreign Origin's preflight is refused, with no CORS grant",
      () => checkCors(options, url),
    ],
    [
      'websocket-foreign-origin',
      'A foreign Origin cannot open a WebSocket',
      () => checkWebSocket(options, url),
    ],
    [
      'forwarded-for-spoofing',
      'A forged X-Forwarded-For does not change the client',
      () => checkSpoofing(options, url),
    ],
    [
      'same-origin-write',
      "A POST from the app's own pages is not refused for its Origin",
      () => checkSameOriginWrite(options, url),
    ],
    [
      'preflight-allowed-headers',
      'A listed origin may send every allowed header',
      () => checkPreflight(options, url),
    ],
    [
      'websocket-own-origin',
      "The app's own pages may open its WebSockets",
      () => checkOwnWebSocket(options, url),
    ],
    [
      'restricted-paths',
      'Restricted paths are refused by the gateway from here',
      () => checkRestricted(options, url),
    ],
    ['health', 'The health endpoint answers', () => checkHealth(options, url)],
  ]
  const results: CheckResult[] = []
  for (const [id, title, run] of checks) {
    try {
      const [status, evidence] = await run()
      results.push({ id, title, status, evidence })
    } catch (error) {
      // No answer is no evidence: the property may hold or not, so the check neither passes nor fails.
      results.push({ id, title, status: 'error', evidence: `no answer: ${(error as Error).message}` })
    }
  }
  return results
}

export function formatResults(results: readonly CheckResult[]): string {
  const lines = results.map(
    (result) =>
      `${result.status.toUpperCase().padEnd(5)} ${result.id.padEnd(26)} ${result.title}: ${result.evidence}`,
  )
  const count = (status: CheckStatus) => results.filter((result) => result.status === status).length
  lines.push(
    `${results.length} checks: ${count('pass')} passed, ${count('skip')} skipped, ${count('fail')} failed, ${count('error')} errors (no answer)`,
  )
  return lines.join('\n')
}

/** Whether a run may be trusted: every check passed or did not apply. */
export function allPassed(results: readonly CheckResult[]): boolean {
  return results.every((result) => result.status === 'pass' || result.status === 'skip')
}

/** What a probe that got no answer says: the OpenSSL code for TLS, else the message and its code. */
function failure(probe: string, error: unknown): Error {
  const { message, code } = error as NodeJS.ErrnoException
  if (code?.startsWith('ERR_SSL_')) return new Error(`${probe}: TLS ${code}`, { cause: error })
  return new Error(`${probe}: ${message}${code && !message.includes(code) ? ` (${code})` : ''}`, {
    cause: error,
  })
}

/**
 * The code of a refusal the gateway itself wrote: its JSON error body, with the status of that code,
 * under the X-Request-Id it answered with. A bare 403 or 404 may come from anywhere (the app, a proxy
 * in front, a server that is not the gateway) and says nothing about the gateway's guards.
 */
function gatewayRefusal(answer: Answer): ErrorCode | undefined {
  let error: { code?: unknown; requestId?: unknown } | undefined
  try {
    error = (JSON.parse(answer.body) as { error?: typeof error } | null)?.error
  } catch {
    return undefined
  }
  const code = error?.code
  if (typeof code !== 'string' || !Object.hasOwn(errorCodes, code)) return undefined
  const requestId = answer.headers['x-request-id']
  if (typeof requestId !== 'string' || error?.requestId !== requestId) return undefined
  return errorStatus(code as ErrorCode) === answer.status ? (code as ErrorCode) : undefined
}

/** A status as evidence: with the gateway's code when the gateway refused, e.g. `403 PCL_ACCESS_DENIED`. */
function describeAnswer(answer: Answer): string {
  const code = gatewayRefusal(answer)
  return code ? `${answer.status} ${code}` : String(answer.status)
}

function fetchHead(
  options: VerifyOptions,
  url: URL,
  path: string,
  extra: { secure?: boolean; headers?: Record<string, string>; method?: string } = {},
): Promise<Answer> {
  const secure = extra.secure ?? true
  const method = extra.method ?? 'GET'
  const port = secure ? Number(url.port || 443) : options.httpPort
  const probe = `${method} ${secure ? 'https' : 'http'}://${url.hostname}:${port}${path}`
  return new Promise((resolve, reject) => {
    const send = secure ? httpsRequest : httpRequest
    const request = send(
      {
        host: options.connect ?? url.hostname,
        port,
        method,
        path,
        headers: { host: secure ? url.host : url.hostname, ...extra.headers },
        agent: false,
        timeout: 10_000,
        ...(secure ? { servername: url.hostname, ...(options.ca ? { ca: options.ca } : {}) } : {}),
      },
      (response) => {
        let body = ''
        response.on('data', (chunk: Buffer) => {
          if (body.length < 4096) body += chunk.toString('utf8')
        })
        response.once('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
        )
        // An answer cut off before its end is no answer: its status may not be what the server meant.
        response.once('error', (error) => reject(failure(probe, error)))
        response.once('close', () => {
          if (!response.complete) reject(new Error(`${probe}: the answer was cut off`))
        })
      },
    )
    request.once('timeout', () => request.destroy(new Error('timed out')))
    request.once('error', (error) => reject(failure(probe, error)))
    request.end()
  })
}

async function checkRedirect(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const answer = await fetchHead(options, url, '/verify?probe=1', { secure: false })
  const location = String(answer.headers.location ?? '')
  // The same host, parsed: `https://good.test.evil.example/` starts like `https://good.test` too.
  const to = URL.canParse(location) ? new URL(location) : undefined
  const ok =
    (answer.status === 301 || answer.status === 308) &&
    to?.protocol === 'https:' &&
    to.hostname === url.hostname
  return [
    ok ? 'pass' : 'fail',
    `http://${url.hostname}:${options.httpPort}/verify → ${answer.status} ${location || '(no Location)'}`,
  ]
}

function handshake(
  options: VerifyOptions,
  url: URL,
  maxVersion?: 'TLSv1.1',
): Promise<{ protocol: string | null; certificate: PeerCertificate; authorized: boolean; error?: string }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      {
        host: options.connect ?? url.hostname,
        port: Number(url.port || 443),
        servername: url.hostname,
        rejectUnauthorized: false,
        ...(options.ca ? { ca: options.ca } : {}),
        // OpenSSL's default security level forbids TLS 1.0 and 1.1 signatures here: without level 0 this
        // side gives up before the server has its say, and every server would seem to refuse them.
        ...(maxVersion ? { maxVersion, minVersion: 'TLSv1' as const, ciphers: 'DEFAULT@SECLEVEL=0' } : {}),
      },
      () => {
        resolve({
          protocol: socket.getProtocol(),
          certificate: socket.getPeerCertificate(),
          authorized: socket.authorized,
          ...(socket.authorizationError ? { error: String(socket.authorizationError) } : {}),
        })
        socket.end()
      },
    )
    socket.setTimeout(10_000, () => socket.destroy(new Error('timed out')))
    socket.once('error', (error) =>
      reject(
        failure(`TLS${maxVersion ? ' 1.1' : ''} handshake with ${url.hostname}:${url.port || 443}`, error),
      ),
    )
  })
}

async function checkTlsVersion(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const modern = await handshake(options, url)
  const old = await handshake(options, url, 'TLSv1.1').then(
    (result) => ({ refused: false, seen: `accepted ${result.protocol}` }),
    (error: Error) => {
      // Only the server's word is a refusal: a reset or a timeout says nothing about TLS 1.1.
      const code = (error.cause as NodeJS.ErrnoException | undefined)?.code ?? ''
      if (!isTlsRefusal(code)) throw error
      return { refused: true, seen: `refused by the server (${code})` }
    },
  )
  const ok = (modern.protocol === 'TLSv1.2' || modern.protocol === 'TLSv1.3') && old.refused
  return [ok ? 'pass' : 'fail', `negotiated ${modern.protocol}; TLS 1.1 ${old.seen}`]
}

/** OpenSSL's codes for a server that refused the handshake: an alert it sent, or a version it chose. */
function isTlsRefusal(code: string): boolean {
  return /^ERR_SSL_(SSLV3|TLSV1)_ALERT_/.test(code) || code === 'ERR_SSL_UNSUPPORTED_PROTOCOL'
}

async function checkCertificate(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const { certificate, authorized, error } = await handshake(options, url)
  const expires = new Date(certificate.valid_to)
  const days = Math.floor((expires.getTime() - Date.now()) / 86_400_000)
  const evidence = `${authorized ? 'trusted' : `not trusted (${error})`}, subject ${certificate.subject?.CN ?? '?'}, expires ${expires.toISOString()} (${days} days)`
  return [authorized && days >= 14 ? 'pass' : 'fail', evidence]
}

async function checkHsts(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const answer = await fetchHead(options, url, '/')
  const hsts = answer.headers['strict-transport-security']
  const maxAge = Number(/max-age=(\d+)/i.exec(String(hsts ?? ''))?.[1] ?? 0)
  return [
    maxAge >= halfYearSeconds ? 'pass' : 'fail',
    hsts ? `Strict-Transport-Security: ${hsts}` : 'no Strict-Transport-Security header',
  ]
}

/** Passes only on the gateway's refusal: a preflight answered without a grant may just be an app's. */
async function checkCors(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const answer = await fetchHead(options, url, '/', {
    method: 'OPTIONS',
    headers: { origin: foreignOrigin, 'access-control-request-method': 'POST' },
  })
  const granted = answer.headers['access-control-allow-origin']
  const grants = granted === '*' || granted === foreignOrigin
  const refused = gatewayRefusal(answer) === 'PCL_CORS_ORIGIN_DENIED'
  return [
    refused && !grants ? 'pass' : 'fail',
    `preflight from ${foreignOrigin} → ${describeAnswer(answer)}${refused ? '' : " (not the gateway's CORS refusal)"}, Access-Control-Allow-Origin: ${granted ?? '(none)'}`,
  ]
}

/** What must work: the app's own pages post to it, with an Origin or (no-referrer pages) `null`. */
async function checkSameOriginWrite(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const seen: string[] = []
  let ok = true
  for (const origin of [url.origin, 'null']) {
    const answer = await fetchHead(options, url, '/', {
      method: 'POST',
      headers: { origin, 'sec-fetch-site': 'same-origin', 'content-length': '0' },
    })
    // Evidence that the gateway judged it: its X-Request-Id is on every answer it sends or relays.
    const judged = typeof answer.headers['x-request-id'] === 'string'
    const refused = gatewayRefusal(answer)?.startsWith('PCL_CORS_') ?? false
    if (!judged || refused) ok = false
    const note = refused ? ' (refused by CORS)' : judged ? '' : ' (not from the gateway: no X-Request-Id)'
    seen.push(`POST / with Origin ${origin} → ${describeAnswer(answer)}${note}`)
  }
  return [ok ? 'pass' : 'fail', seen.join(', ')]
}

async function checkPreflight(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const cors = options.policy?.cors
  const origin = cors?.origins.find((entry) => !entry.includes('*') && entry !== 'null')
  if (!cors || !origin) return ['skip', 'no --policy with an exact CORS origin to probe']
  const headers = cors.allowedHeaders.join(', ')
  const method = cors.methods.find((entry) => entry !== 'GET' && entry !== 'HEAD') ?? 'POST'
  const answer = await fetchHead(options, url, '/', {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': method,
      'access-control-request-headers': headers,
    },
  })
  const ok = answer.status >= 200 && answer.status < 300
  const missing = ok ? ungranted(answer, origin, method, cors.allowedHeaders) : []
  return [
    ok && missing.length === 0 ? 'pass' : 'fail',
    `preflight from ${origin} for ${method} with ${headers} → ${describeAnswer(answer)}${missing.length > 0 ? ` (no grant for ${missing.join(', ')})` : ''}`,
  ]
}

/**
 * What a 2xx preflight answer leaves out, judged as a browser does (Fetch's CORS-preflight check): an
 * OK status alone lets nothing through. `*` is no grant with credentials, and never for Authorization.
 */
function ungranted(answer: Answer, origin: string, method: string, headers: readonly string[]): string[] {
  const list = (name: string) =>
    new Set(
      String(answer.headers[name] ?? '')
        .split(',')
        .map((entry) => entry.trim().toLowerCase())
        .filter(Boolean),
    )
  const credentials = answer.headers['access-control-allow-credentials'] === 'true'
  const wildcard = (granted: ReadonlySet<string>) => !credentials && granted.has('*')
  const missing: string[] = []
  const allowOrigin = answer.headers['access-control-allow-origin']
  if (allowOrigin !== origin && (credentials || allowOrigin !== '*')) missing.push('the origin')
  const methods = list('access-control-allow-methods')
  const safelisted = method === 'GET' || method === 'HEAD' || method === 'POST'
  if (!safelisted && !methods.has(method.toLowerCase()) && !wildcard(methods)) missing.push(method)
  const allowed = list('access-control-allow-headers')
  for (const header of headers.map((name) => name.toLowerCase())) {
    if (!allowed.has(header) && (header === 'authorization' || !wildcard(allowed))) missing.push(header)
  }
  return missing
}

async function checkOwnWebSocket(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const paths = (options.policy?.websocket.paths ?? []).map((rule) => websocketProbePath(rule.path))
  if (paths.length === 0) return ['skip', 'no --policy with WebSocket paths to probe']
  const seen: string[] = []
  let ok = true
  for (const path of paths) {
    const outcome = await upgrade(options, url, path, url.origin)
    if (!outcome.opened) ok = false
    seen.push(`upgrade to ${path} from ${url.origin} → ${describeUpgrade(outcome)}`)
  }
  return [ok ? 'pass' : 'fail', seen.join(', ')]
}

function websocketProbePath(pattern: string): string {
  return pattern.replace(/\/\*\*$/, '/verify').replace(/\*/g, 'x')
}

/** How a WebSocket handshake ended: opened, or answered with a status that is not 101. */
type Upgrade = { opened: true } | { opened: false; answer: Answer }

/** A WebSocket handshake; rejects when it got no answer (refused, reset, timed out, closed unanswered). */
function upgrade(options: VerifyOptions, url: URL, path: string, origin: string): Promise<Upgrade> {
  const probe = `upgrade to wss://${url.hostname}:${url.port || 443}${path}`
  return new Promise<Upgrade>((resolve, reject) => {
    const socket = new WebSocket(`wss://${options.connect ?? url.hostname}:${url.port || 443}${path}`, {
      headers: { host: url.host, origin },
      rejectUnauthorized: false,
      handshakeTimeout: 10_000,
      // ws hands TLS options to https.request; its types leave servername out.
      ...({ servername: url.hostname } as ClientOptions),
    })
    socket.once('open', () => {
      socket.terminate()
      resolve({ opened: true })
    })
    socket.once('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => {
        if (body.length < 4096) body += chunk.toString('utf8')
      })
      // A refusal's body ends with its length or with the connection; either way it is what was said.
      response.once('close', () => {
        resolve({
          opened: false,
          answer: { status: response.statusCode ?? 0, headers: response.headers, body },
        })
        socket.terminate()
      })
    })
    socket.once('error', (error) => reject(failure(probe, error)))
  })
}

function describeUpgrade(outcome: Upgrade): string {
  return outcome.opened ? '101 (opened)' : describeAnswer(outcome.answer)
}

/** Passes only when the gateway refused the upgrade for its Origin; any other answer proves nothing. */
async function checkWebSocket(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  const path = websocketProbePath(options.policy?.websocket.paths[0]?.path ?? '/')
  const outcome = await upgrade(options, url, path, foreignOrigin)
  const refused = !outcome.opened && gatewayRefusal(outcome.answer) === 'PCL_WS_ORIGIN_DENIED'
  const note = refused || outcome.opened ? '' : " (not the gateway's Origin refusal)"
  return [
    refused ? 'pass' : 'fail',
    `upgrade to ${path} from ${foreignOrigin} → ${describeUpgrade(outcome)}${note}`,
  ]
}

async function checkSpoofing(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  // Eight probes at once, each with its own forged address. One identity means one budget, so the
  // remaining counts differ; a gateway that believed the header would give each a fresh, equal budget.
  // Sent together so that a fast refill between probes cannot make one budget look like many.
  const probes = await Promise.all(
    Array.from({ length: 8 }, async (_, index) => {
      const forged = `198.51.100.${index + 1}`
      const answer = await fetchHead(options, url, '/', {
        headers: { 'x-forwarded-for': forged, 'x-real-ip': forged },
      })
      const match = /;r=(\d+)/.exec(String(answer.headers.ratelimit ?? ''))
      return match ? Number(match[1]) : undefined
    }),
  )
  const counted = probes.filter((remaining) => remaining !== undefined).length
  if (counted === 0)
    return ['skip', 'no RateLimit header on / to compare budgets (no rate limit applies there)']
  // Budgets that cannot all be compared, or that are all spent, say nothing about whose they are.
  if (counted < probes.length)
    return ['fail', `only ${counted} of 8 answers to forged X-Forwarded-For carried a RateLimit header`]
  if (probes.every((remaining) => remaining === 0))
    return ['fail', 'every answer to 8 forged X-Forwarded-For had a spent budget (RateLimit remaining 0)']
  const distinct = new Set(probes).size
  return [
    distinct > 1 ? 'pass' : 'fail',
    `RateLimit remaining for 8 different forged X-Forwarded-For sent at once: ${probes.join(', ')} (${distinct > 1 ? 'one shared budget: one identity' : 'equal fresh budgets: the header chose the identity'})`,
  ]
}

async function checkRestricted(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  // Rules that shut out everyone but a list (or everyone) must hold from here; deny-lists need not.
  const rules = (options.policy?.access ?? []).filter(
    (rule) => rule.allow !== undefined || rule.deny === 'all',
  )
  if (rules.length === 0) return ['skip', 'no --policy with allow-list or deny-all access rules to probe']
  const seen: string[] = []
  let ok = true
  for (const rule of rules) {
    const path = rule.path.replace(/\/\*\*$/, '/verify').replace(/\*/g, 'x')
    const method = rule.methods?.[0] ?? 'GET'
    const answer = await fetchHead(options, url, path, { method })
    // The access guard's refusal, not a 403 or 404 the app (or anything else) happened to send.
    const code = gatewayRefusal(answer)
    const refused = code === 'PCL_ACCESS_DENIED' || code === 'PCL_NOT_FOUND'
    if (!refused) ok = false
    seen.push(`${method} ${path} → ${describeAnswer(answer)}${refused ? '' : " (not the gateway's refusal)"}`)
  }
  return [ok ? 'pass' : 'fail', seen.join(', ')]
}

async function checkHealth(options: VerifyOptions, url: URL): Promise<[CheckStatus, string]> {
  if (!options.healthPath) return ['skip', 'no --health path given']
  const answer = await fetchHead(options, url, options.healthPath)
  return [
    answer.status >= 200 && answer.status < 300 ? 'pass' : 'fail',
    `GET ${options.healthPath} → ${answer.status}`,
  ]
}
