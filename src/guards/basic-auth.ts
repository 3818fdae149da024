import { createHash } from 'node:crypto'
import { unknownUserHash, verifyPassword } from '../auth/passwords.js'
import { compilePathScope } from '../net/path-pattern.js'
import {
  allow,
  coversEitherPath,
  type Decision,
  deny,
  type Guard,
  type GuardExchange,
} from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

/** Verified credentials are remembered briefly, so scrypt runs once per user and not on every request. */
const verifiedForMs = 5 * 60_000
const verifiedCacheSize = 1000

/**
 * HTTP Basic authentication in front of an app (RFC 7617), for apps that must not be reachable
 * without a login, such as Superposition run with AUTH_PROVIDER=DISABLED. Paths in `except` (health
 * checks) stay open; CORS preflights are answered before this guard, as browsers send no credentials
 * with them.
 */
export class BasicAuthGuard implements Guard {
  readonly name = 'basicAuth'
  private readonly covers: (path: string) => boolean
  private readonly challenge: string
  private readonly verified = new Map<string, number>()

  constructor(private readonly section: NonNullable<Policy['basicAuth']>) {
    this.covers = compilePathScope(section.paths, section.except)
    this.challenge = `Basic realm="${section.realm.replace(/["\\]/g, '')}", charset="UTF-8"`
  }

  applies(exchange: Pick<GuardExchange, 'path' | 'rewritten'>): boolean {
    return coversEitherPath(exchange, this.covers)
  }

  /** The credentials alone: the runner asks `applies` first, so each path is matched once. */
  async check(exchange: Pick<GuardExchange, 'headers'>): Promise<Decision> {
    const header = exchange.headers.authorization
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
