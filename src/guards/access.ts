import { CidrSet, parseCidr } from '../net/ip.js'
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

  /** `field`: where the rules are written, named in refusals (`access`, or a route's `routes[2].access`). */
  constructor(section: Policy['access'], field = 'access') {
    this.rules = section.map((rule, index) => {
      const cidrs = (list: string[]) => new CidrSet(list.flatMap((text) => parseCidr(text) ?? []))
      return {
        id: `${field}[${index}]`,
        path: rule.path,
        pattern: compilePathPattern(rule.path, rule.caseInsensitive),
        methods: rule.methods ? new Set(rule.methods) : undefined,
        allowList: rule.allow !== undefined,
        networks: rule.allow
          ? cidrs(rule.allow)
          : rule.deny === 'all' || !rule.deny
            ? undefined
            : cidrs(rule.deny),
        respond: rule.respond,
      }
    })
  }

  check(request: Pick<GuardExchange, 'method' | 'path' | 'identity'>): Decision {
    for (const rule of this.rules) {
      if (rule.methods && !rule.methods.has(request.method)) continue
      if (!rule.pattern.test(request.path)) continue
      const inNetworks = rule.networks?.has(request.identity.ip) ?? true
      const passes = rule.allowList ? inNetworks : !inNetworks
      if (passes) return allow
      const decidedBy = `${rule.id} ${rule.path}`
      return rule.respond === 404
        ? deny('PCL_NOT_FOUND', decidedBy, 'Not found')
        : deny('PCL_ACCESS_DENIED', decidedBy, `Access to ${rule.path} is restricted`)
    }
    return allow
  }
}
