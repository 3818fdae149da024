import { canonicalTarget } from '../net/canonical-path.js'
import { allow, type Decision, deny, type Guard, type GuardExchange } from '../pipeline/guard.js'

/**
 * The canonical target: every later rule matches the path every common app router would route, and
 * the upstream receives exactly that path (docs/guards.md, 3). A target whose meaning could differ
 * between routers is refused, in report-only mode too: there is no safe way to forward it.
 */
export class PathGuard implements Guard {
  readonly name = 'path'

  check(exchange: Pick<GuardExchange, 'url' | 'path' | 'target'>): Decision {
    // Route selection already canonicalised the target of an app with routes.
    if (exchange.target) return allow
    const canonical = canonicalTarget(exchange.url)
    if (!canonical.ok) return deny('PCL_BAD_REQUEST', 'path', `Invalid path: ${canonical.reason}`)
    exchange.path = canonical.path
    exchange.target = canonical.target
    return allow
  }

  describe(exchange: Pick<GuardExchange, 'path'>): string {
    return `canonical ${exchange.path}`
  }
}
