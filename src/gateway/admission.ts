import type { Logger } from 'pino'
import type { App, PemPair } from '../policy/compile.js'
import type { LoadedPolicy, PolicyProblem } from '../policy/load.js'
import { checkAlways, checkProduction, formatFinding } from '../policy/rules.js'
import type { Settings } from '../settings.js'
import type { InternalCa } from '../tls/internal-ca.js'

/**
 * Whether valid policy files may be served by this gateway: what its listeners can serve and, in
 * production, the production rules. Start-up and every reload ask this; with workers the primary asks
 * it once for all of them (`quiet` keeps the workers from logging the same warnings again).
 */
export function admissionProblems(
  loaded: { apps: readonly App[]; policies: readonly LoadedPolicy[] },
  settings: Pick<Settings, 'httpPort' | 'env' | 'replicas'>,
  log: Logger,
  options: { redis: boolean; quiet: boolean },
): PolicyProblem[] {
  const warn = (fields: object, message: string) =>
    options.quiet ? log.debug(fields, message) : log.warn(fields, message)
  return [
    ...listenerProblems(loaded.policies, settings),
    ...productionProblems(loaded, settings, warn, options),
  ]
}

/** Apps that need the plain-HTTP listener cannot be served when `--http-port off` closes it. */
function listenerProblems(
  policies: readonly LoadedPolicy[],
  settings: Pick<Settings, 'httpPort'>,
): PolicyProblem[] {
  if (settings.httpPort !== 'off') return []
  return policies.flatMap(({ policy, locate }) => {
    if (policy.tls.mode === 'off')
      return [locate(['tls', 'mode'], 'tls.mode off needs the HTTP listener, which --http-port off closes')]
    if (policy.tls.acme?.challenge === 'http-01')
      return [
        locate(
          ['tls', 'acme', 'challenge'],
          'http-01 needs the HTTP listener, which --http-port off closes: use tls-alpn-01',
        ),
      ]
    return []
  })
}

/**
 * In production the production rules run on every load, as `check --production` does: errors refuse
 * the policies (all of them listed), warnings are logged. In development, the rules that hold
 * everywhere (a route no request reaches) are logged, and rate limits without Redis get a loud
 * warning: they are per replica and reset on restart.
 */
function productionProblems(
  loaded: { apps: readonly App[]; policies: readonly LoadedPolicy[] },
  settings: Pick<Settings, 'env' | 'replicas'>,
  warn: (fields: object, message: string) => void,
  options: { redis: boolean },
): PolicyProblem[] {
  if (settings.env === 'production') {
    const findings = checkProduction(loaded.policies, { redis: options.redis, replicas: settings.replicas })
    for (const finding of findings.filter((entry) => entry.severity === 'warning'))
      warn({ rule: finding.rule, problem: formatFinding(finding) }, formatFinding(finding))
    return findings
      .filter((finding) => finding.severity === 'error')
      .map((finding) => ({ ...finding, message: `${finding.rule}: ${finding.message}. Fix: ${finding.fix}` }))
  }
  for (const finding of checkAlways(loaded.policies))
    warn({ rule: finding.rule, problem: formatFinding(finding) }, formatFinding(finding))
  const limited = loaded.apps.filter((app) => app.rateLimited)
  if (!options.redis && limited.length > 0) {
    warn(
      { apps: limited.map((app) => app.id) },
      'RATE LIMITS ARE PER REPLICA: no --redis, so every replica counts on its own (its workers share one count) and restarts reset the counts',
    )
  }
  return []
}

/** Each internal-CA app's certificate, issued and written now unless a current one is on disk. */
export async function internalLeaves(
  apps: readonly App[],
  internalCa: InternalCa,
): Promise<{ ok: true; leaves: Map<string, PemPair> } | { ok: false; problems: PolicyProblem[] }> {
  const leaves = new Map<string, PemPair>()
  for (const app of apps) {
    if (app.tls.mode !== 'internal') continue
    try {
      leaves.set(app.id, await internalCa.leafFor(app.id, app.hosts))
    } catch (error) {
      const message = `cannot issue the internal certificate (${error instanceof Error ? error.message : String(error)})`
      return { ok: false, problems: [{ file: app.file, line: 1, column: 1, field: 'tls', message }] }
    }
  }
  return { ok: true, leaves }
}
