import { createPublicKey, type KeyObject } from 'node:crypto'
import { createRemoteJWKSet, type JWTVerifyGetKey, jwtVerify } from 'jose'
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

type Section = NonNullable<Policy['jwt']>

/**
 * Bearer tokens (JWT) verified with jose: signature by the issuer's JWKS (fetched, cached, fetched
 * again for a key id it has not seen: rotation) or a public key, issuer, audience, algorithm (never
 * `none` or a shared secret), an `exp`, and time within the clock skew. Only a verified token's
 * claims are kept for access rules and rate-limit keys. On `paths` a token is required: none or a bad
 * one is a 401 with `WWW-Authenticate: Bearer`; elsewhere a bad token is ignored, as if there were none.
 */
export class JwtGuard implements Guard {
  readonly name = 'jwt'
  private readonly keys: JWTVerifyGetKey | KeyObject
  /** Where a token is required. */
  private readonly requires: (path: string) => boolean

  constructor(private readonly section: Section) {
    this.keys = section.jwksUrl
      ? createRemoteJWKSet(new URL(section.jwksUrl), { cooldownDuration: 5_000, timeoutDuration: 5_000 })
      : createPublicKey(section.publicKey ?? '')
    this.requires = compilePathScope(section.paths, section.except)
  }

  check(exchange: GuardExchange): Decision | Promise<Decision> {
    const required = coversEitherPath(exchange, this.requires)
    const token = bearerToken(exchange.headers.authorization)
    if (token === undefined) return required ? refuse('invalid_request', 'A bearer token is required') : allow
    const { issuer, audiences, algorithms, clockSkew } = this.section
    const unverified = (reason: string) =>
      required ? refuse('invalid_token', `The bearer token is not valid (${reason})`) : allow
    const verified = jwtVerify(token, this.keys as JWTVerifyGetKey, {
      issuer,
      audience: audiences,
      algorithms,
      clockTolerance: clockSkew / 1000,
      // A token without an expiry would be good forever, however it leaked.
      requiredClaims: ['exp'],
    })
    return verified.then(
      ({ payload }) => {
        // `exp: 1e400` parses as Infinity, which jose takes as a time far ahead: good forever.
        const times = [payload.exp, payload.nbf, payload.iat]
        if (!times.every((time) => time === undefined || Number.isFinite(time)))
          return unverified('ERR_JWT_CLAIM_TIME')
        if (decodedSegments(token).some(hasDuplicateMembers)) return unverified('ERR_JWT_DUPLICATE_MEMBER')
        exchange.claims = payload
        if (typeof payload.sub === 'string') exchange.user ??= payload.sub
        return allow
      },
      (error: unknown) => unverified((error as { code?: string }).code ?? 'ERR_JWT_INVALID'),
    )
  }

  describe(exchange: Pick<GuardExchange, 'claims'>): string {
    return exchange.claims
      ? `verified token of ${String(exchange.claims.sub ?? '(no sub)')}`
      : 'no verified token'
  }
}

function refuse(error: string, message: string): Decision {
  return deny('PCL_TOKEN_INVALID', 'jwt', message, { 'www-authenticate': `Bearer error="${error}"` })
}

/**
 * Whether a JSON text names one member twice in an object (`"role":"user","role":"admin"`): jose
 * reads the last, a first-wins parser in the app the first, so the token would mean two things.
 * RFC 7515 §4 lets a verifier reject such tokens; no issuer writes them.
 */
export function hasDuplicateMembers(json: string): boolean {
  const objects: (Set<string> | undefined)[] = []
  let expectsKey = false
  for (let index = 0; index < json.length; index++) {
    const char = json[index]
    if (char === '"') {
      let end = index + 1
      while (end < json.length && json[end] !== '"') end += json[end] === '\\' ? 2 : 1
      const members = objects.at(-1)
      if (expectsKey && members) {
        // Escapes folded: "r\u006fle" is "role".
        const key = JSON.parse(json.slice(index, end + 1)) as string
        if (members.has(key)) return true
        members.add(key)
      }
      expectsKey = false
      index = end
    } else if (char === '{') {
      objects.push(new Set())
      expectsKey = true
    } else if (char === '[') objects.push(undefined)
    else if (char === '}' || char === ']') objects.pop()
    else if (char === ',') expectsKey = objects.at(-1) !== undefined
  }
  return false
}

function decodedSegments(token: string): string[] {
  return token
    .split('.')
    .slice(0, 2)
    .map((segment) => Buffer.from(segment, 'base64url').toString('utf8'))
}

function bearerToken(header: string | undefined): string | undefined {
  if (header?.slice(0, 7).toLowerCase() !== 'bearer ') return undefined
  return header.slice(7).trim() || undefined
}
