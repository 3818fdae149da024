import { type App, compilePolicies } from '../../src/policy/compile.js'
import { parsePolicy } from '../../src/policy/load.js'
import type { PolicyInput } from '../../src/policy/schema.js'

/** A compiled app from a policy object, through the same loader and compiler as `serve` (JSON is YAML). */
export async function compileApp(
  input: Partial<PolicyInput> & Pick<PolicyInput, 'app' | 'hosts'>,
): Promise<App> {
  const parsed = parsePolicy(
    `${input.app}.yaml`,
    JSON.stringify({ upstream: { targets: ['http://127.0.0.1:1'] }, ...input }),
  )
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems))
  const compiled = await compilePolicies([parsed.loaded])
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.problems))
  return compiled.apps[0] as App
}
