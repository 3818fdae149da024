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
        if (
          ![payload.exp, payload.nbf, payload.iat].every(
            (time) => time === undefined || Number.isFinite(time),
          )
        )
          return required
            ? refuse('invalid_token', 'The bearer token is not valid (ERR_JWT_CLAIM_TIME)')
            : allow
        exchange.claims = payload
        if (typeof payload.sub === 'string') exchange.user ??= payload.sub
        return allow
      },
      (error: unknown) => {
        const reason = (error as { code?: string }).code ?? 'ERR_JWT_INVALID'
        return required ? refuse('invalid_token', `The bearer token is not valid (${reason})`) : allow
      },
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

function bearerToken(header: string | undefined): string | undefined {
  if (header?.slice(0, 7).toLowerCase() !== 'bearer ') return undefined
  return header.slice(7).trim() || undefined
}
