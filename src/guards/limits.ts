import { compilePathPattern } from '../net/path-pattern.js'
import {
  allow,
  type BodyLimit,
  type Decision,
  deny,
  type Guard,
  type GuardExchange,
} from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

/**
 * Request size limits, as two guards of one policy section: the head (URL and header sizes) is judged
 * first, on the raw request, before the path is even parsed; the declared body size once the path is
 * known, since body limits are per path. A body without a declared length is counted while it streams
 * (the `bodyLimit` this guard sets on the exchange).
 */
export class HeadLimitsGuard implements Guard {
  readonly name = 'limits: url and headers'
  private readonly maxUrlLength: number
  private readonly maxHeaderSize: number

  constructor(section: Policy['limits']) {
    this.maxUrlLength = section.maxUrlLength
    this.maxHeaderSize = section.maxHeaderSize
  }

  check(request: Pick<GuardExchange, 'url' | 'rawHeaders'>): Decision {
    if (request.url.length > this.maxUrlLength) {
      return deny(
        'PCL_URL_TOO_LONG',
        'limits.maxUrlLength',
        `The request target is longer than ${this.maxUrlLength} bytes`,
      )
    }
    let headerBytes = 0
    for (const part of request.rawHeaders) headerBytes += part.length
    if (headerBytes > this.maxHeaderSize) {
      return deny(
        'PCL_HEADERS_TOO_LARGE',
        'limits.maxHeaderSize',
        `The request headers are larger than ${this.maxHeaderSize} bytes`,
      )
    }
    return allow
  }
}

export class BodyLimitsGuard implements Guard {
  readonly name = 'limits: body'
  private readonly maxBodySize: number
  private readonly bodySizes: { pattern: RegExp; max: number; id: string }[]

  constructor(section: Policy['limits']) {
    this.maxBodySize = section.maxBodySize
    this.bodySizes = section.bodySizes.map((entry, index) => ({
      pattern: compilePathPattern(entry.path, true),
      max: entry.max,
      id: `limits.bodySizes[${index}] ${entry.path}`,
    }))
  }

  /** The body limit for a path and the rule it comes from. */
  limitFor(path: string): BodyLimit {
    const entry = this.bodySizes.find((candidate) => candidate.pattern.test(path))
    return entry ? { max: entry.max, rule: entry.id } : { max: this.maxBodySize, rule: 'limits.maxBodySize' }
  }

  check(exchange: Pick<GuardExchange, 'path' | 'rewritten' | 'headers' | 'bodyLimit'>): Decision {
    // After a route's rewrite, the stricter of the two paths' limits.
    const asSent = this.limitFor(exchange.path)
    const rewritten = exchange.rewritten && this.limitFor(exchange.rewritten.path)
    const limit = rewritten && rewritten.max < asSent.max ? rewritten : asSent
    exchange.bodyLimit = limit
    const declared = exchange.headers['content-length']
    if (declared === undefined) return allow
    return Number(declared) > limit.max
      ? deny('PCL_BODY_TOO_LARGE', limit.rule, `The request body is larger than ${limit.max} bytes`)
      : allow
  }
}
