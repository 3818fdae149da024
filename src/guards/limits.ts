import type { IncomingHttpHeaders } from 'node:http'
import { compilePathPattern } from '../net/path-pattern.js'
import type { Policy } from '../policy/schema.js'
import { allow, type Decision, deny } from './decision.js'

/**
 * Request size limits. URL, header and declared body sizes are refused before anything reaches the
 * upstream; a body without a declared length is counted while it streams (see `bodyLimit`).
 */
export class LimitsGuard {
  private readonly maxUrlLength: number
  private readonly maxHeaderSize: number
  private readonly maxBodySize: number
  private readonly bodySizes: { pattern: RegExp; max: number; id: string }[]

  constructor(section: Policy['limits']) {
    this.maxUrlLength = section.maxUrlLength
    this.maxHeaderSize = section.maxHeaderSize
    this.maxBodySize = section.maxBodySize
    this.bodySizes = section.bodySizes.map((entry, index) => ({
      pattern: compilePathPattern(entry.path, true),
      max: entry.max,
      id: `limits.bodySizes[${index}] ${entry.path}`,
    }))
  }

  /** Checks that need no parsing of the path: run first, on the raw request. */
  checkHead(request: { url: string; rawHeaders: readonly string[] }): Decision {
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

  /** The body limit for a path and the rule it comes from. */
  bodyLimit(matchPath: string): { max: number; rule: string } {
    const entry = this.bodySizes.find((candidate) => candidate.pattern.test(matchPath))
    return entry ? { max: entry.max, rule: entry.id } : { max: this.maxBodySize, rule: 'limits.maxBodySize' }
  }

  checkDeclaredBody(matchPath: string, headers: IncomingHttpHeaders): Decision {
    const declared = headers['content-length']
    if (declared === undefined) return allow
    const { max, rule } = this.bodyLimit(matchPath)
    return Number(declared) > max
      ? deny('PCL_BODY_TOO_LARGE', rule, `The request body is larger than ${max} bytes`)
      : allow
  }
}
