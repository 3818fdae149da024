import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { type App, compilePolicies } from './compile.js'
import {
  type LoadedPolicy,
  loadPolicyTexts,
  type PolicyProblem,
  type PolicyText,
  policyFilesIn,
  readPolicyTexts,
} from './load.js'

/** The policy files' texts as read at one moment: what is validated, and what workers are sent. */
export interface PolicyTexts {
  files: readonly string[]
  texts: readonly PolicyText[]
  /** Of every file name and text: the generation's identity, which the primary and workers log. */
  digest: string
}

export type PolicySource =
  | {
      ok: true
      apps: readonly App[]
      policies: readonly LoadedPolicy[]
      files: readonly string[]
      texts: PolicyTexts
    }
  | { ok: false; problems: PolicyProblem[]; files: readonly string[] }

/**
 * The one way policies are read: each target a policy file or a directory of them, all read,
 * validated and compiled, or every problem found with its file, line and field. `serve` (at start-up
 * and on each reload), `check` and `explain` all load through here; nothing is applied.
 */
export async function loadPolicySource(targets: readonly string[]): Promise<PolicySource> {
  const read = await readPolicySource(targets)
  return 'problems' in read ? { ok: false, ...read } : compilePolicyTexts(read)
}

/** Every policy file of the targets, read now. */
export async function readPolicySource(
  targets: readonly string[],
): Promise<PolicyTexts | { problems: PolicyProblem[]; files: readonly string[] }> {
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
      return { problems: [problem], files }
    }
  }
  const texts = await readPolicyTexts(files)
  const digest = createHash('sha256').update(JSON.stringify(texts)).digest('hex').slice(0, 16)
  return { files, texts, digest }
}

/** Validates and compiles texts read before, without reading the policy files again. */
export async function compilePolicyTexts(read: PolicyTexts): Promise<PolicySource> {
  const { files } = read
  const set = await loadPolicyTexts(read.texts)
  if (set.problems.length > 0) return { ok: false, problems: set.problems, files }
  const compiled = await compilePolicies(set.policies)
  return compiled.ok
    ? { ok: true, apps: compiled.apps, policies: set.policies, files, texts: read }
    : { ok: false, problems: compiled.problems, files }
}
