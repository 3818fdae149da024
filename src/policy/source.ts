import { stat } from 'node:fs/promises'
import { type App, compilePolicies } from './compile.js'
import { type LoadedPolicy, loadPolicySet, type PolicyProblem, policyFilesIn } from './load.js'

export type PolicySource =
  | { ok: true; apps: readonly App[]; policies: readonly LoadedPolicy[]; files: readonly string[] }
  | { ok: false; problems: PolicyProblem[]; files: readonly string[] }

/**
 * The one way policies are read: each target a policy file or a directory of them, all read,
 * validated and compiled, or every problem found with its file, line and field. `serve` (at start-up
 * and on each reload), `check` and `explain` all load through here; nothing is applied.
 */
export async function loadPolicySource(targets: readonly string[]): Promise<PolicySource> {
  const files: string[] = []
  for (const target of targets) {
    const isDirectory = await stat(target).then(
      (info) => info.isDirectory(),
      () => false,
    )
    if (!isDirectory) {
      files.push(target)
      continue
    }
    try {
      files.push(...(await policyFilesIn(target)))
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? String(error)
      const problem = {
        file: target,
        line: 1,
        column: 1,
        field: '',
        message: `cannot read directory (${reason})`,
      }
      return { ok: false, problems: [problem], files }
    }
  }
  const set = await loadPolicySet(files)
  if (set.problems.length > 0) return { ok: false, problems: set.problems, files }
  const compiled = await compilePolicies(set.policies)
  return compiled.ok
    ? { ok: true, apps: compiled.apps, policies: set.policies, files }
    : { ok: false, problems: compiled.problems, files }
}
