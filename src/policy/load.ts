import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { type Document, isMap, isSeq, LineCounter, type Node, parseDocument } from 'yaml'
import type { z } from 'zod'
import { type Policy, policySchema } from './schema.js'

/** One thing wrong with a policy file, located to the line and column of the offending field. */
export interface PolicyProblem {
  file: string
  line: number
  column: number
  /** Field path like `cors.origins[1]`; empty when the problem is the file itself. */
  field: string
  message: string
}

export type FieldPath = readonly (string | number)[]

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

export function formatFieldPath(field: FieldPath): string {
  let text = ''
  for (const segment of field) {
    text += typeof segment === 'number' ? `[${segment}]` : text ? `.${segment}` : segment
  }
  return text
}

/** Parses and validates one policy file's text. `file` is the name used in messages. */
export function parsePolicy(file: string, text: string): LoadResult {
  const lineCounter = new LineCounter()
  const document = parseDocument(text, { lineCounter, prettyErrors: false })
  const positionOf = (offset: number) => lineCounter.linePos(offset)

  if (document.errors.length > 0) {
    return {
      ok: false,
      problems: document.errors.map((error) => {
        const { line, col } = positionOf(error.pos[0])
        return { file, line, column: col, field: '', message: `invalid YAML: ${firstLine(error.message)}` }
      }),
    }
  }

  const locate = (field: FieldPath, message: string, pointAtKey = false): PolicyProblem => {
    const { line, col } = positionOf(nodeOffset(document, field, pointAtKey))
    return { file, line, column: col, field: formatFieldPath(field), message }
  }

  const parsed = policySchema.safeParse(document.toJS())
  if (!parsed.success) {
    return { ok: false, problems: parsed.error.issues.flatMap((issue) => describeIssue(issue, locate)) }
  }
  return { ok: true, loaded: { file, policy: parsed.data, locate } }
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

/** Offset of the deepest node along `field` that exists; the key itself when `pointAtKey`. */
function nodeOffset(document: Document, field: FieldPath, pointAtKey: boolean): number {
  let node: unknown = document.contents
  let offset = (document.contents as Node | null)?.range?.[0] ?? 0
  for (const [index, segment] of field.entries()) {
    const isLast = index === field.length - 1
    if (isMap(node)) {
      const pair = node.items.find((item) => (item.key as { value?: unknown } | null)?.value === segment)
      if (!pair) break
      const keyNode = pair.key as Node
      const valueNode = pair.value as Node | null
      if (isLast && (pointAtKey || !valueNode?.range)) {
        offset = keyNode.range?.[0] ?? offset
        break
      }
      node = valueNode
    } else if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment]
    } else {
      break
    }
    const range = (node as Node | undefined)?.range
    if (!range) break
    offset = range[0]
  }
  return offset
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? text
}

export async function loadPolicyFile(file: string): Promise<LoadResult> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error)
    return {
      ok: false,
      problems: [{ file, line: 1, column: 1, field: '', message: `cannot read file (${reason})` }],
    }
  }
  return parsePolicy(file, text)
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
  const results = await Promise.all(files.map(loadPolicyFile))
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
