import { createHash } from 'node:crypto'
import type { OutgoingHttpHeaders } from 'node:http'
import { ipv6Network } from '../net/ip.js'
import { coveredMethods } from '../net/methods.js'
import { compilePathPattern } from '../net/path-pattern.js'
import {
  allow,
  coversEitherPath,
  type Decision,
  deny,
  type Guard,
  type GuardExchange,
  type RateLimitStores,
} from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'
import type { LimitOutcome } from '../stores/rate-limit-store.js'
import type { ResilientOutcome } from '../stores/resilient-store.js'

type RuleSection = Policy['rateLimits'][number]

interface CompiledRule {
  id: string
  section: RuleSection
  pattern: RegExp
  methods: ReadonlySet<string> | undefined
  headerName: string | undefined
  /** `jwt:<claim>`: the claim of a verified token, never of an unverified one. */
  claim: string | undefined
  /** The Redis key is `keyPrefix + identity + keySuffix`; the hash tag holds the app and identity. */
  keyPrefix: string
  keySuffix: string
  intervalMs: number
  burst: number
  policyItem: string
}

interface Matched {
  rule: CompiledRule
  key: string
}

type RateLimitRequest = Pick<
  GuardExchange,
  'method' | 'path' | 'rewritten' | 'identity' | 'headers' | 'services' | 'claims'
>

/** Header values used as keys are capped and hashed: no client-chosen bytes or lengths reach Redis. */
const maxKeyMaterial = 256

/**
 * Rate limits of one app. Every rule matching the request is checked in one atomic store call (per
 * hash slot on Redis Cluster), and the strictest answer wins. When Redis
 * cannot answer, each rule does what its `onStoreError` says.
 */
export class RateLimitGuard implements Guard {
  readonly name = 'rateLimits'
  private readonly rules: CompiledRule[]

  /** `groups`: the app's rules, then a route's, each with the policy field it is written under. */
  constructor(
    private readonly appId: string,
    groups: readonly { field: string; rules: Policy['rateLimits'] }[],
  ) {
    this.rules = groups.flatMap(({ field, rules }) =>
      rules.map((section, index) => this.compile(`${field}[${index}] ${section.name}`, section)),
    )
  }

  private compile(id: string, section: RuleSection): CompiledRule {
    const intervalMs = section.window / section.limit
    return {
      id,
      section,
      pattern: compilePathPattern(section.match.path, true),
      methods: coveredMethods(section.match.methods),
      headerName: section.key.startsWith('header:') ? section.key.slice(7) : undefined,
      claim: section.key.startsWith('jwt:') ? section.key.slice(4) : undefined,
      keyPrefix: `pcl:rl:{${this.appId}:`,
      keySuffix: `}:${section.name}`,
      intervalMs,
      burst: section.burst ?? section.limit,
      policyItem: `"${section.name}";q=${section.limit};w=${Math.ceil(section.window / 1000)}`,
    }
  }

  /** A promise only when a rule matches: most paths of most apps have nothing to wait for. */
  check(request: RateLimitRequest): Decision | Promise<Decision> {
    const stores = request.services.rateLimits
    let matched: Matched[] | undefined
    for (const rule of this.rules) {
      if (rule.methods && !rule.methods.has(request.method)) continue
      // A route's rewrite lands on the app's paths: a limit on /login also counts /v1/login.
      if (!coversEitherPath(request, (path) => rule.pattern.test(path))) continue
      const key = rule.keyPrefix + this.identity(rule, request) + rule.keySuffix
      if (matched) matched.push({ rule, key })
      else matched = [{ rule, key }]
    }
    if (!matched) return allow
    // One atomic store call for all of them. On Redis Cluster a call stays within one hash slot, so
    // there it is one call per identity (rules keyed on the same identity share the hash tag).
    const results =
      matched.length === 1 || !stores.store.sameSlotOnly
        ? this.checkGroup(matched, stores)
        : Promise.all(bySlot(matched).map((group) => this.checkGroup(group, stores))).then((each) =>
            each.flat(),
          )
    return results.then((counted) => {
      const decision = this.decide(counted)
      stores.onDecision?.(this.appId, decision.kind === 'allow')
      return decision
    })
  }

  private identity(rule: CompiledRule, request: RateLimitRequest): string {
    const ip = ipv6Network(request.identity.ip, rule.section.ipv6Prefix)
    if (rule.claim) {
      const value = request.claims?.[rule.claim]
      if (typeof value === 'string' || typeof value === 'number')
        return `j:${digest(String(value).slice(0, maxKeyMaterial))}`
    }
    if (rule.headerName) {
      const value = request.headers[rule.headerName]
      const text = Array.isArray(value) ? value[0] : value
      if (text) return `h:${digest(text.slice(0, maxKeyMaterial))}`
    }
    if (rule.section.key === 'ip+path') {
      // Keyed on the path the upstream receives, as the rule matches it (case and a final slash aside):
      // one budget however a route or the client spells it.
      const path = (request.rewritten?.path ?? request.path).toLowerCase().replace(/(?<=.)\/$/, '')
      return `p:${digest(`${ip} ${path.slice(0, maxKeyMaterial)}`)}`
    }
    return `ip:${ip}`
  }

  private checkGroup(group: Matched[], stores: RateLimitStores): Promise<RuleResult[]> {
    const checks = group.map(({ rule, key }) => ({
      key,
      intervalMs: rule.intervalMs,
      toleranceMs: rule.burst * rule.intervalMs,
      onStoreError: rule.section.onStoreError,
    }))
    return stores.store
      .check(checks)
      .then((outcomes) =>
        group.map(({ rule }, index) => ({ rule, outcome: outcomes[index] as ResilientOutcome })),
      )
  }

  private decide(results: RuleResult[]): Decision {
    const headers = rateLimitHeaders(results)
    const failClosed = results.find((result) => result.outcome === 'deny')
    if (failClosed) {
      return deny(
        'PCL_RATE_LIMIT_UNAVAILABLE',
        `${failClosed.rule.id}.onStoreError`,
        `Rate limit "${failClosed.rule.section.name}" cannot be checked right now`,
        { ...headers, 'retry-after': '1' },
      )
    }
    // The refusal that waits longest names the rule (the first of equals), found without sorting.
    let refused: { rule: CompiledRule; outcome: LimitOutcome } | undefined
    for (const { rule, outcome } of results) {
      if (typeof outcome !== 'object' || outcome.allowed) continue
      if (!refused || outcome.retryAfterMs > refused.outcome.retryAfterMs) refused = { rule, outcome }
    }
    if (refused) {
      const { section } = refused.rule
      return deny(
        'PCL_RATE_LIMITED',
        refused.rule.id,
        `Rate limit "${section.name}" exceeded: ${section.limit} requests per ${section.window / 1000} s`,
        { ...headers, 'retry-after': String(Math.max(1, Math.ceil(refused.outcome.retryAfterMs / 1000))) },
      )
    }
    return { kind: 'allow', responseHeaders: headers }
  }
}

interface RuleResult {
  rule: CompiledRule
  /** Counted, or (the store unreachable) what the rule's onStoreError chose. */
  outcome: ResilientOutcome
}

/**
 * draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists every limit that applied, `RateLimit`
 * the state of each (r: remaining, t: seconds until the budget is full); X-RateLimit-* on request.
 */
function rateLimitHeaders(results: RuleResult[]): OutgoingHttpHeaders {
  // One pass, no intermediate arrays: this runs on every rate-limited request, mostly with one rule.
  let policy = ''
  let state = ''
  let strictest: LimitOutcome | undefined
  let strictestLimit = 0
  let legacy = false
  for (const { rule, outcome } of results) {
    policy = policy ? `${policy}, ${rule.policyItem}` : rule.policyItem
    if (typeof outcome !== 'object') continue
    const item = `"${rule.section.name}";r=${outcome.remaining};t=${Math.ceil(outcome.resetMs / 1000)}`
    state = state ? `${state}, ${item}` : item
    if (!strictest || outcome.remaining < strictest.remaining) {
      strictest = outcome
      strictestLimit = rule.section.limit
    }
    legacy ||= rule.section.legacyHeaders
  }
  const headers: OutgoingHttpHeaders = { 'ratelimit-policy': policy }
  if (!strictest) return headers
  headers.ratelimit = state
  if (legacy) {
    headers['x-ratelimit-limit'] = String(strictestLimit)
    headers['x-ratelimit-remaining'] = String(strictest.remaining)
    headers['x-ratelimit-reset'] = String(Math.ceil(strictest.resetMs / 1000))
  }
  return headers
}

/** Matched rules grouped by hash tag, for Redis Cluster where one call stays within one slot. */
function bySlot(matched: Matched[]): Matched[][] {
  const groups = new Map<string, Matched[]>()
  for (const entry of matched) {
    const tag = entry.key.slice(entry.key.indexOf('{'), entry.key.indexOf('}') + 1)
    const group = groups.get(tag)
    if (group) group.push(entry)
    else groups.set(tag, [entry])
  }
  return [...groups.values()]
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}
