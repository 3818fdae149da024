import type { OutgoingHttpHeaders } from 'node:http'
import type { ErrorCode } from '../errors.js'
import type { Decision, Guard, GuardExchange, ResponseEdit, TraceStep } from './guard.js'

type Allowed = Extract<Decision, { kind: 'allow' }>

/**
 * Runs an app's guards in their compiled order. The first guard that does not allow decides; headers
 * that allowing guards add (CORS grants, Vary, RateLimit) are kept for the answer, whatever it is, so a
 * page can read a refusal. Synchronous until a guard returns a promise: most requests of most apps
 * have nothing to wait for, and get no promise.
 */
export function runGuards(
  chain: readonly Guard[],
  exchange: GuardExchange,
  trace?: TraceStep[],
): Decision | Promise<Decision> {
  return continueFrom(chain, 0, exchange, undefined, trace)
}

function continueFrom(
  chain: readonly Guard[],
  start: number,
  exchange: GuardExchange,
  added: OutgoingHttpHeaders | undefined,
  trace: TraceStep[] | undefined,
): Decision | Promise<Decision> {
  let kept = added
  for (let index = start; index < chain.length; index++) {
    const guard = chain[index] as Guard
    if (guard.applies && !guard.applies(exchange)) continue
    const decision = guard.check(exchange)
    if (decision instanceof Promise) {
      return decision.then((settled) => {
        const next = judge(guard, settled, exchange, kept, trace)
        return next.kind === 'allow'
          ? continueFrom(chain, index + 1, exchange, next.responseHeaders, trace)
          : next
      })
    }
    const next = judge(guard, decision, exchange, kept, trace)
    if (next.kind !== 'allow') return next
    kept = next.responseHeaders
  }
  return kept ? { kind: 'allow', responseHeaders: kept } : { kind: 'allow' }
}

/** One guard's decision with what earlier guards added: an allow carries all of it on, a refusal keeps it. */
function judge(
  guard: Guard,
  decision: Decision,
  exchange: GuardExchange,
  added: OutgoingHttpHeaders | undefined,
  trace: TraceStep[] | undefined,
): Decision | Allowed {
  if (trace) {
    const detail = decision.kind === 'allow' ? guard.describe?.(exchange) : undefined
    trace.push(
      detail === undefined ? { guard: guard.name, decision } : { guard: guard.name, decision, detail },
    )
  }
  if (!added) return decision
  if (decision.kind === 'allow')
    return decision.responseHeaders
      ? { kind: 'allow', responseHeaders: { ...added, ...decision.responseHeaders } }
      : { kind: 'allow', responseHeaders: added }
  return { ...decision, headers: { ...added, ...decision.headers } }
}

/**
 * An app's mode applied to a decision. In report-only mode a policy refusal passes and is reported
 * as `wouldBlock`, keeping its informational headers (RateLimit, Vary) but not Retry-After. Malformed
 * requests (bad paths) are refused in either mode: there is no safe way to forward them.
 */
export function applyMode(
  mode: 'enforce' | 'report-only',
  decision: Decision,
): { decision: Decision; wouldBlock?: { code: ErrorCode; rule: string; message: string } } {
  if (decision.kind !== 'deny' || mode !== 'report-only' || decision.code === 'PCL_BAD_REQUEST')
    return { decision }
  const wouldBlock = { code: decision.code, rule: decision.rule, message: decision.message }
  if (!decision.headers) return { decision: { kind: 'allow' }, wouldBlock }
  const { 'retry-after': _retryAfter, ...informational } = decision.headers
  return { decision: { kind: 'allow', responseHeaders: informational }, wouldBlock }
}

/**
 * An app's response edits, in their compiled order, over the headers of an answer: the app's (empty
 * for the gateway's own answers). The app's headers that an edit drops go, every edit runs, then what
 * the guards and the edge add for this request (CORS grant, Vary, a sticky cookie) goes on top.
 */
export class ResponseEdits {
  private readonly droppers: ((name: string) => boolean)[]
  private readonly editors: ResponseEdit[]
  /** What each edit does, in order, for `explain`. */
  readonly explained: readonly string[]

  constructor(edits: readonly ResponseEdit[]) {
    this.explained = edits.map((edit) => edit.explainEdit())
    this.droppers = edits.flatMap((edit) => (edit.drops ? [edit.drops.bind(edit)] : []))
    this.editors = edits.filter((edit) => edit.edit !== undefined)
  }

  apply(
    fromApp: OutgoingHttpHeaders,
    added: OutgoingHttpHeaders | undefined,
    secure: boolean,
  ): OutgoingHttpHeaders {
    // One pass into a fresh object: deleting keys would turn it into a slow dictionary on the hot path.
    const headers: OutgoingHttpHeaders = {}
    for (const name in fromApp) {
      if (!this.droppers.some((drops) => drops(name))) headers[name] = fromApp[name]
    }
    // Cookies the gateway adds (an auth service's, the sticky one) are hardened as the app's are.
    const addedCookies = added?.['set-cookie']
    if (addedCookies !== undefined)
      headers['set-cookie'] = [headers['set-cookie'] ?? [], addedCookies].flat() as string[]
    for (const editor of this.editors) editor.edit?.(headers, secure)
    if (added) {
      for (const name in added) {
        if (name === 'set-cookie') continue
        const existing = headers[name]
        const value = added[name]
        headers[name] = existing !== undefined && name === 'vary' ? `${existing}, ${value}` : value
      }
    }
    return headers
  }
}
