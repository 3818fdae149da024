import { readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import type { z } from 'zod'
import { type Policy, policySchema } from './schema.js'
import {
  type FieldPath,
  locateIn,
  type ParsedYaml,
  type PolicyProblem,
  parseYaml,
  parseYamlOffThread,
  type YamlSource,
} from './yaml.js'

export type { FieldPath, PolicyProblem } from './yaml.js'

/** A validated policy and how to point back into its file. */
export interface LoadedPolicy {
  file: string
  policy: Policy
  /** Position of a field (or of its closest existing parent) in the source file. */
  locate(field: FieldPath, message: string): PolicyProblem
}

export type LoadResult = { ok: true; loaded: LoadedPolicy } | { ok: false; problems: PolicyProblem[] }

export function formatProblem(problem: PolicyProblem): string {
  const where = `${problem.file}:${problem.line}:${problem.column}`
  return problem.field ? `${where} ${problem.field}: ${problem.message}` : `${where} ${problem.message}`
}

/** Parses and validates one policy file's text on this thread. `file` is the name used in messages. */
export function parsePolicy(file: string, text: string): LoadResult {
  return validatePolicy(parseYaml(file, text))
}

/** Validates parsed YAML against the policy schema, locating every problem in the file. */
function validatePolicy(parsed: ParsedYaml): LoadResult {
  if (!parsed.ok) return parsed
  const { file, positions } = parsed
  const locate = (field: FieldPath, message: string, pointAtKey = false) =>
    locateIn(file, positions, field, message, pointAtKey)
  const result = policySchema.safeParse(parsed.data)
  if (!result.success) {
    return { ok: false, problems: result.error.issues.flatMap((issue) => describeIssue(issue, locate)) }
  }
  return { ok: true, loaded: { file, policy: result.data, locate } }
}

function describeIssue(
  issue: z.core.$ZodIssue,
  locate: (field: FieldPath, message: string, pointAtKey?: boolean) => PolicyProblem,
): PolicyProblem[] {
  const field = issue.path.filter((segment): segment is string | number => typeof segment !== 'symbol')
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => locate([...field, key], 'unknown field', true))
  }
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    return [locate(field, 'is required')]
  }
  if (issue.code === 'invalid_type' && field.length === 0) {
    return [locate(field, 'the file must be a YAML mapping (app:, hosts:, upstream: ...)')]
  }
  if (issue.code === 'invalid_type') return [locate(field, `must be a ${issue.expected}`)]
  if (issue.code === 'invalid_value') {
    return [locate(field, `must be one of ${issue.values.map((value) => JSON.stringify(value)).join(', ')}`)]
  }
  if (issue.code === 'too_small' && issue.origin === 'number')
    return [locate(field, `must be at least ${issue.minimum}`)]
  return [locate(field, issue.message)]
}

/** Policy files are a few kilobytes; anything much larger is a mistake or an attack on the parser. */
const maxPolicyBytes = 1024 * 1024

/** Reads a file for parsing, or says why it cannot be (unreadable, too large). */
async function readPolicyText(file: string): Promise<YamlSource | LoadResult> {
  const refuse = (message: string): LoadResult => ({
    ok: false,
    problems: [{ file, line: 1, column: 1, field: '', message }],
  })
  try {
    const { size } = await stat(file)
    if (size > maxPolicyBytes) return refuse(`is ${size} bytes; a policy file may be at most 1 MiB`)
    return { file, text: await readFile(file, 'utf8') }
  } catch (error) {
    return refuse(`cannot read file (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
  }
}

/** Reads, parses (off the main thread) and validates policy files, each with its own result. */
async function loadPolicyFiles(files: readonly string[]): Promise<LoadResult[]> {
  const read = await Promise.all(files.map(readPolicyText))
  const sources = read.filter((entry): entry is YamlSource => 'text' in entry)
  const parsed = await parseYamlOffThread(sources)
  let next = 0
  return read.map((entry) => ('text' in entry ? validatePolicy(parsed[next++] as ParsedYaml) : entry))
}

export async function loadPolicyFile(file: string): Promise<LoadResult> {
  const [result] = await loadPolicyFiles([file])
  return result as LoadResult
}

/** The policy files of a directory: `*.yaml` and `*.yml` directly inside it, in name order. */
export async function policyFilesIn(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true })
  return entries
    .filter((entry) => entry.isFile() && /\.ya?ml$/.test(entry.name))
    .map((entry) => path.join(directory, entry.name))
    .sort()
}

export interface PolicySet {
  policies: LoadedPolicy[]
  problems: PolicyProblem[]
}

/**
 * Loads every file, then checks what no single file can: app ids and hosts must be unique across files.
 * All problems are returned at once so a user fixes them in one pass.
 */
export async function loadPolicySet(files: readonly string[]): Promise<PolicySet> {
  const results = await loadPolicyFiles(files)
  const policies: LoadedPolicy[] = []
  const problems: PolicyProblem[] = []
  for (const result of results) {
    if (result.ok) policies.push(result.loaded)
    else problems.push(...result.problems)
  }
  problems.push(...conflictsAcrossFiles(policies))
  return { policies, problems }
}

function conflictsAcrossFiles(policies: readonly LoadedPolicy[]): PolicyProblem[] {
  const problems: PolicyProblem[] = []
  const appOwners = new Map<string, LoadedPolicy>()
  const hostOwners = new Map<string, LoadedPolicy>()
  for (const loaded of policies) {
    const { app, hosts } = loaded.policy
    const appOwner = appOwners.get(app)
    if (appOwner) problems.push(loaded.locate(['app'], `app id "${app}" is already used by ${appOwner.file}`))
    else appOwners.set(app, loaded)
    for (const [index, host] of hosts.entries()) {
      const owner = hostOwners.get(host)
      if (owner === loaded) {
        problems.push(loaded.locate(['hosts', index], `host "${host}" is listed twice`))
      } else if (owner) {
        problems.push(
          loaded.locate(
            ['hosts', index],
            `host "${host}" is already claimed by ${owner.file} (app ${owner.policy.app})`,
          ),
        )
      } else {
        hostOwners.set(host, loaded)
      }
    }
  }
  return problems
}
