import { CidrSet, parseCidr } from '../net/ip.js'
import { coveredMethods } from '../net/methods.js'
import { compilePathPattern } from '../net/path-pattern.js'
import { allow, type Decision, deny, type Guard, type GuardExchange } from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

interface CompiledRule {
  id: string
  path: string
  pattern: RegExp
  methods: ReadonlySet<string> | undefined
  /** true: only `networks` pass; false: `networks` are refused (all when undefined). */
  allowList: boolean
  /** Set for a rule that wants a verified claim instead of networks. */
  require: { claim: string; oneOf: ReadonlySet<string> } | undefined
  networks: CidrSet | undefined
  respond: 403 | 404
}

/**
 * IP-restricted and blocked paths. Rules are tried in order on the canonical path and the first that
 * matches path and method decides; a path no rule matches passes.
 */
export class AccessGuard implements Guard {
  readonly name = 'access'
  private readonly rules: CompiledRule[]

  /**
   * `field`: where the rules are written, named in refusals (`access`, or a route's `routes[2].access`);
   * `rewrittenBy`: the route whose path rewrite the rules also judge, named when that decides.
   */
  constructor(
    section: Policy['access'],
    field = 'access',
    private readonly rewrittenBy?: string,
  ) {
    this.rules = section.map((rule, index) => {
      const cidrs = (list: string[]) => new CidrSet(list.flatMap((text) => parseCidr(text) ?? []))
      return {
        id: `${field}[${index}]`,
        path: rule.path,
        pattern: compilePathPattern(rule.path, rule.caseInsensitive),
        methods: coveredMethods(rule.methods),
        allowList: rule.allow !== undefined,
        networks: rule.allow
          ? cidrs(rule.allow)
          : rule.deny === 'all' || !rule.deny
            ? undefined
            : cidrs(rule.deny),
        respond: rule.respond,
        require: rule.require ? { claim: rule.require.claim, oneOf: new Set(rule.require.oneOf) } : undefined,
      }
    })
  }

  /**
   * The first rule that matches decides, on the canonical path and, when a route rewrites it, on the
   * path the upstream receives: a refusal on either refuses.
   */
  check(request: Pick<GuardExchange, 'method' | 'path' | 'rewritten' | 'identity' | 'claims'>): Decision {
    const decision = this.judge(request, request.path, '')
    if (decision.kind !== 'allow' || !request.rewritten) return decision
    return this.judge(
      request,
      request.rewritten.path,
      ` (the path ${this.rewrittenBy ?? 'a route'} rewrites to)`,
    )
  }

  private judge(
    request: Pick<GuardExchange, 'method' | 'identity' | 'claims'>,
    path: string,
    rewritten: string,
  ): Decision {
    for (const rule of this.rules) {
      if (rule.methods && !rule.methods.has(request.method)) continue
      if (!rule.pattern.test(path)) continue
      if (rule.require) {
        if (hasClaim(request.claims, rule.require)) return allow
        return deny(
          'PCL_ACCESS_DENIED',
          `${rule.id} ${rule.path}${rewritten}`,
          `Access to ${rule.path} needs a verified ${rule.require.claim}`,
        )
      }
      const inNetworks = rule.networks?.has(request.identity.ip) ?? true
      const passes = rule.allowList ? inNetworks : !inNetworks
      if (passes) return allow
      const decidedBy = `${rule.id} ${rule.path}${rewritten}`
      return rule.respond === 404
        ? deny('PCL_NOT_FOUND', decidedBy, 'Not found')
        : deny('PCL_ACCESS_DENIED', decidedBy, `Access to ${rule.path} is restricted`)
    }
    return allow
  }
}

/** Whether a verified claim (a value, or a list of them) has one of the wanted values. */
function hasClaim(
  claims: Readonly<Record<string, unknown>> | undefined,
  wanted: { claim: string; oneOf: ReadonlySet<string> },
): boolean {
  const value = claims?.[wanted.claim]
  const values = Array.isArray(value) ? value : [value]
  return values.some(
    (entry) => (typeof entry === 'string' || typeof entry === 'number') && wanted.oneOf.has(String(entry)),
  )
}
