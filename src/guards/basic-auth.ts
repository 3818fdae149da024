import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import { compilePathPattern } from '../net/path-pattern.js'
import type { Policy } from '../policy/schema.js'
import { allow, type Decision, deny } from './decision.js'

/** Password hash format: `scrypt$N$r$p$<salt base64>$<key base64>`, made by `portcullis hash-password`. */
export const passwordHashPattern = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/

const hashParameters = { N: 16_384, r: 8, p: 1 } as const
/** Verified credentials are remembered briefly, so scrypt runs once per user and not on every request. */
const verifiedForMs = 5 * 60_000
const verifiedCacheSize = 1000

function derive(
  password: string,
  salt: Buffer,
  length: number,
  parameters: { N: number; r: number; p: number },
) {
  return new Promise<Buffer>((resolve, reject) =>
    scrypt(
      password,
      salt,
      length,
      { ...parameters, maxmem: 256 * parameters.N * parameters.r },
      (error, key) => (error ? reject(error) : resolve(key)),
    ),
  )
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await derive(password, salt, 32, hashParameters)
  const { N, r, p } = hashParameters
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`
}

/** Checks a password against a stored hash in constant time; scrypt runs on libuv's pool, off the event loop. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = passwordHashPattern.exec(stored)
  if (!parts) return false
  const [, N, r, p, salt = '', key = ''] = parts
  const expected = Buffer.from(key, 'base64')
  const derived = await derive(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N),
    r: Number(r),
    p: Number(p),
  })
  return timingSafeEqual(derived, expected)
}

/**
 * HTTP Basic authentication in front of an app (RFC 7617), for apps that must not be reachable
 * without a login, such as Superposition run with AUTH_PROVIDER=DISABLED. Paths in `except` (health
 * checks) stay open; CORS preflights are answered before this guard, as browsers send no credentials
 * with them.
 */
export class BasicAuthGuard {
  private readonly paths: RegExp[]
  private readonly except: RegExp[]
  private readonly challenge: string
  private readonly verified = new Map<string, number>()

  constructor(private readonly section: NonNullable<Policy['basicAuth']>) {
    this.paths = section.paths.map((path) => compilePathPattern(path, true))
    this.except = section.except.map((path) => compilePathPattern(path, true))
    this.challenge = `Basic realm="${section.realm.replace(/["\\]/g, '')}", charset="UTF-8"`
  }

  applies(matchPath: string): boolean {
    return (
      this.paths.some((pattern) => pattern.test(matchPath)) &&
      !this.except.some((pattern) => pattern.test(matchPath))
    )
  }

  /** The credentials alone: the pipeline asks `applies` first, so each path is matched once. */
  async authenticate(header: string | undefined): Promise<Decision> {
    const refuse = (message: string) =>
      deny('PCL_AUTH_REQUIRED', 'basicAuth', message, { 'www-authenticate': this.challenge })
    if (!header?.toLowerCase().startsWith('basic ')) return refuse('Authentication is required')
    const cacheKey = createHash('sha256').update(header).digest('base64')
    if ((this.verified.get(cacheKey) ?? 0) > Date.now()) return allow
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    const user = colon > 0 ? decoded.slice(0, colon) : ''
    const stored = Object.hasOwn(this.section.users, user) ? this.section.users[user] : undefined
    // An unknown user costs the same scrypt as a known one, so timing does not reveal which users exist.
    const valid = await verifyPassword(decoded.slice(colon + 1), stored ?? unknownUserHash)
    if (!valid || stored === undefined) return refuse('Wrong user name or password')
    if (this.verified.size >= verifiedCacheSize) this.verified.clear()
    this.verified.set(cacheKey, Date.now() + verifiedForMs)
    return allow
  }
}

const unknownUserHash = `scrypt$${hashParameters.N}$${hashParameters.r}$${hashParameters.p}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`
