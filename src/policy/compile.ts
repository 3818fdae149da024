import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { createSecureContext } from 'node:tls'
import { AccessGuard } from '../guards/access.js'
import { BasicAuthGuard } from '../guards/basic-auth.js'
import { ClientIpResolver } from '../guards/client-ip.js'
import { CookieHardener } from '../guards/cookies.js'
import { CorsGuard } from '../guards/cors.js'
import { SecurityHeaders } from '../guards/headers.js'
import { LimitsGuard } from '../guards/limits.js'
import { RateLimitGuard } from '../guards/rate-limit.js'
import { WebSocketGuard } from '../guards/websocket.js'
import { parseCidr } from '../net/ip.js'
import type { LoadedPolicy, PolicyProblem } from './load.js'
import { acmeDirectories, type Policy } from './schema.js'

export interface PemPair {
  cert: string
  key: string
}

/** Everything the request path needs about one app, computed once at load time. */
export interface App {
  readonly id: string
  readonly file: string
  readonly mode: Policy['mode']
  readonly hosts: readonly string[]
  readonly upstream: {
    /** Origins such as `http://127.0.0.1:8080`. */
    readonly targets: readonly string[]
    readonly timeouts: Policy['upstream']['timeouts']
    readonly balance: Policy['upstream']['balance']
    readonly hashOn: Policy['upstream']['hashOn']
    readonly healthCheck: Policy['upstream']['healthCheck']
    readonly passive: Policy['upstream']['passive']
    readonly retries: number
    readonly maxConnections: number
    readonly maxQueue: number
  }
  readonly tls: {
    readonly mode: Policy['tls']['mode']
    readonly minVersion: Policy['tls']['minVersion']
    /** The certificate files' contents, for `manual`. */
    readonly manual?: PemPair
    readonly acme?: AcmeSettings
  }
  readonly healthPath: string | undefined
  readonly compression: Policy['compression']
  /** Static directories, resolved to absolute paths. */
  readonly static: readonly { readonly path: string; readonly root: string; readonly cacheControl: string }[]
  /** The Strict-Transport-Security value, or undefined when HSTS is off (max-age 0). */
  readonly hstsHeader: string | undefined
  /** Each guard built once from its policy section; the pipeline runs them in order. */
  readonly guards: Guards
}

export interface AcmeSettings {
  readonly email: string
  readonly directoryUrl: string
  readonly challenge: 'http-01' | 'tls-alpn-01'
  readonly eab?: { readonly kid: string; readonly hmacKey: string }
}

export interface Guards {
  readonly clientIp: ClientIpResolver
  readonly limits: LimitsGuard
  readonly access: AccessGuard
  readonly cors: CorsGuard | undefined
  readonly websocket: WebSocketGuard
  readonly headers: SecurityHeaders
  readonly cookies: CookieHardener
  readonly rateLimits: RateLimitGuard
  readonly basicAuth: BasicAuthGuard | undefined
}

function buildGuards(policy: Policy): Guards {
  return {
    clientIp: new ClientIpResolver(policy.clientIp),
    limits: new LimitsGuard(policy.limits),
    access: new AccessGuard(policy.access),
    cors: policy.cors ? new CorsGuard(policy.cors) : undefined,
    websocket: new WebSocketGuard(policy.websocket, policy.cors?.origins),
    headers: new SecurityHeaders(policy.headers),
    cookies: new CookieHardener(policy.cookies),
    rateLimits: new RateLimitGuard(policy.app, policy.rateLimits),
    basicAuth: policy.basicAuth ? new BasicAuthGuard(policy.basicAuth) : undefined,
  }
}

export type CompileResult = { ok: true; apps: App[] } | { ok: false; problems: PolicyProblem[] }

export async function compilePolicies(policies: readonly LoadedPolicy[]): Promise<CompileResult> {
  const results = await Promise.all(policies.map(compilePolicy))
  const problems = results.flatMap((result) => (result.ok ? [] : result.problems))
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, apps: results.flatMap((result) => (result.ok ? [result.app] : [])) }
}

async function compilePolicy(
  loaded: LoadedPolicy,
): Promise<{ ok: true; app: App } | { ok: false; problems: PolicyProblem[] }> {
  const { policy, file } = loaded
  const trustedFromFile = await readTrustedProxiesFile(loaded)
  if (!trustedFromFile.ok) return trustedFromFile
  let manual: PemPair | undefined
  if (policy.tls.manual) {
    const result = await readManualCertificate(loaded, policy.tls.manual)
    if (!result.ok) return result
    manual = result.pair
  }
  const app: App = Object.freeze({
    id: policy.app,
    file,
    mode: policy.mode,
    upstream: deepFreeze({
      targets: policy.upstream.targets.map((target) => new URL(target).origin),
      timeouts: policy.upstream.timeouts,
      balance: policy.upstream.balance,
      hashOn: policy.upstream.hashOn,
      healthCheck: policy.upstream.healthCheck,
      passive: policy.upstream.passive,
      retries: policy.upstream.retries,
      maxConnections: policy.upstream.maxConnections,
      maxQueue: policy.upstream.maxQueue,
    }),
    hosts: Object.freeze([...policy.hosts]),
    tls: deepFreeze({
      mode: policy.tls.mode,
      minVersion: policy.tls.minVersion,
      ...(manual ? { manual } : {}),
      ...(policy.tls.acme ? { acme: acmeSettings(policy.tls.acme) } : {}),
    }),
    healthPath: policy.healthPath,
    compression: deepFreeze({ ...policy.compression }),
    static: deepFreeze(
      policy.static.map((entry) => ({
        path: entry.path,
        root: path.resolve(path.dirname(file), entry.dir),
        cacheControl: entry.cacheControl,
      })),
    ),
    hstsHeader: hstsHeader(policy.hsts),
    guards: Object.freeze(
      buildGuards({
        ...policy,
        clientIp: {
          ...policy.clientIp,
          trustedProxies: [...policy.clientIp.trustedProxies, ...trustedFromFile.networks],
        },
      }),
    ),
  })
  return { ok: true, app }
}

async function readManualCertificate(
  loaded: LoadedPolicy,
  files: { cert: string; key: string },
): Promise<{ ok: true; pair: PemPair } | { ok: false; problems: PolicyProblem[] }> {
  const directory = path.dirname(loaded.file)
  const pair: Partial<PemPair> = {}
  const problems: PolicyProblem[] = []
  for (const field of ['cert', 'key'] as const) {
    try {
      pair[field] = await readFile(path.resolve(directory, files[field]), 'utf8')
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? String(error)
      problems.push(loaded.locate(['tls', 'manual', field], `cannot read ${files[field]} (${reason})`))
    }
  }
  if (problems.length > 0 || pair.cert === undefined || pair.key === undefined) return { ok: false, problems }
  try {
    createSecureContext({ cert: pair.cert, key: pair.key })
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    return {
      ok: false,
      problems: [loaded.locate(['tls', 'manual'], `unusable certificate or key (${reason})`)],
    }
  }
  return { ok: true, pair: { cert: pair.cert, key: pair.key } }
}

/** The networks of `clientIp.trustedProxiesFile`: one per line, `#` starts a comment, blank lines skipped. */
async function readTrustedProxiesFile(
  loaded: LoadedPolicy,
): Promise<{ ok: true; networks: string[] } | { ok: false; problems: PolicyProblem[] }> {
  const name = loaded.policy.clientIp.trustedProxiesFile
  if (name === undefined) return { ok: true, networks: [] }
  const field = ['clientIp', 'trustedProxiesFile']
  let text: string
  try {
    text = await readFile(path.resolve(path.dirname(loaded.file), name), 'utf8')
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error)
    return { ok: false, problems: [loaded.locate(field, `cannot read ${name} (${reason})`)] }
  }
  const networks: string[] = []
  for (const [index, line] of text.split('\n').entries()) {
    const entry = (line.split('#', 1)[0] ?? '').trim()
    if (!entry) continue
    if (!parseCidr(entry))
      return {
        ok: false,
        problems: [loaded.locate(field, `${name}:${index + 1}: "${entry}" is not an address or network`)],
      }
    networks.push(entry)
  }
  return { ok: true, networks }
}

function isNamedDirectory(name: string): name is keyof typeof acmeDirectories {
  return Object.hasOwn(acmeDirectories, name)
}

function acmeSettings(acme: NonNullable<Policy['tls']['acme']>): AcmeSettings {
  const directory = acme.directory
  return {
    email: acme.email,
    directoryUrl: isNamedDirectory(directory) ? acmeDirectories[directory] : directory,
    challenge: acme.challenge,
    ...(acme.eab ? { eab: acme.eab } : {}),
  }
}

function hstsHeader(hsts: Policy['hsts']): string | undefined {
  if (hsts.maxAge === 0) return undefined
  let value = `max-age=${hsts.maxAge}`
  if (hsts.includeSubDomains) value += '; includeSubDomains'
  if (hsts.preload) value += '; preload'
  return value
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner)
    Object.freeze(value)
  }
  return value
}
