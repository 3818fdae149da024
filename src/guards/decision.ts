import type { OutgoingHttpHeaders } from 'node:http'
import type { ErrorCode } from '../errors.js'

/**
 * What a guard says about a request. Guards never throw or write responses: the pipeline acts on the
 * decision, so enforcement, report-only mode and `explain` all run the same code.
 */
export type Decision =
  /** Pass on; `responseHeaders` are added to whatever answer the client gets. */
  | { kind: 'allow'; responseHeaders?: OutgoingHttpHeaders }
  /** The gateway answers itself without an error (a CORS preflight). */
  | { kind: 'answer'; status: number; headers: OutgoingHttpHeaders; rule: string }
  /** Refused, with the code, the policy rule that decided and a message for the client. */
  | { kind: 'deny'; code: ErrorCode; rule: string; message: string; headers?: OutgoingHttpHeaders }

export const allow: Decision = { kind: 'allow' }

export function deny(
  code: ErrorCode,
  rule: string,
  message: string,
  headers?: OutgoingHttpHeaders,
): Decision {
  return headers ? { kind: 'deny', code, rule, message, headers } : { kind: 'deny', code, rule, message }
}
