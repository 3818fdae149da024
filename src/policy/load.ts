import { readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import type { z } from 'zod'
import { resolveReferences } from './references.js'
import { type Policy, policySchema, routeSettings } from './schema.js'
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
  /** Per route, in `policy.routes` order: its effective policy and the settings it set itself. */
  routes: readonly LoadedRoute[]
  /** Position of a field (or of its closest existing parent) in the source file. */
  locate(field: FieldPath, message: string): PolicyProblem
}

export interface LoadedRoute {
  /**
   * The app's policy with the route's settings merged in. Its access and rate-limit rules are the
   * route's own: the app's apply to the route's requests too.
   */
  policy: Policy
  /** The settings the route's own text sets (the parsed route has every default filled in). */
  sets: readonly (typeof routeSettings)[number][]
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
  const references = resolveReferences(parsed.data, file, process.env)
  if (!references.ok)
    return { ok: false, problems: references.problems.map(({ field, message }) => locate(field, message)) }
  const data = references.data
  const result = policySchema.safeParse(data)
  if (!result.success) {
    return { ok: false, problems: result.error.issues.flatMap((issue) => describeIssue(issue, locate)) }
  }
  const routes: LoadedRoute[] = []
  const problems: PolicyProblem[] = []
  for (const index of result.data.routes.keys()) {
    const merged = policyOfRoute(data as Record<string, unknown>, index)
    const effective = policySchema.safeParse(merged.document)
    if (effective.success) routes.push({ policy: effective.data, sets: merged.sets })
    else
      for (const issue of effective.error.issues)
        problems.push(
          ...describeIssue(issue, (field, message, pointAtKey) =>
            locate(merged.origin(field), message, pointAtKey),
          ),
        )
  }
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, loaded: { file, policy: result.data, routes, locate } }
}

type Document = Record<string, unknown>

/**
 * A route's effective policy as a document to validate: the app's, with each setting the route
 * sets merged over it (mappings key by key, the route's value winning; lists replaced), and as
 * access and rate-limit rules only the route's own. `origin` points a field of the result back to
 * where it was written: in the route when the route set it, else on the route itself.
 */
function policyOfRoute(
  app: Document,
  index: number,
): { document: Document; sets: LoadedRoute['sets']; origin(field: FieldPath): FieldPath } {
  const route = ((app.routes as unknown[])[index] ?? {}) as Document
  const document: Document = {
    ...app,
    access: route.access ?? [],
    rateLimits: route.rateLimits ?? [],
    routes: [],
  }
  for (const setting of routeSettings) {
    if (setting !== 'access' && setting !== 'rateLimits' && route[setting] !== undefined)
      document[setting] = mergeSetting(app[setting], route[setting])
  }
  const set = (field: FieldPath) => {
    let node: unknown = route
    for (const key of field) {
      if (node === null || typeof node !== 'object') return false
      node = (node as Record<string | number, unknown>)[key]
    }
    return node !== undefined
  }
  return {
    document,
    sets: routeSettings.filter((setting) => route[setting] !== undefined),
    origin: (field) => {
      // The deepest part of the field that the route wrote itself.
      for (let length = field.length; length > 0; length--) {
        if (set(field.slice(0, length))) return ['routes', index, ...field]
      }
      return ['routes', index]
    },
  }
}

function mergeSetting(app: unknown, route: unknown): unknown {
  if (!isMapping(app) || !isMapping(route)) return route
  const merged: Document = { ...app }
  for (const [key, value] of Object.entries(route)) merged[key] = mergeSetting(app[key], value)
  return merged
}

function isMapping(value: unknown): value is Document {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
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

/** A policy file's text as read, or why it could not be read. */
export type PolicyText = YamlSource | { file: string; problem: PolicyProblem }

/** Reads a file for parsing, or says why it cannot be (unreadable, too large). */
async function readPolicyText(file: string): Promise<PolicyText> {
  const refuse = (message: string): PolicyText => ({
    file,
    problem: { file, line: 1, column: 1, field: '', message },
  })
  try {
    const { size } = await stat(file)
    if (size > maxPolicyBytes) return refuse(`is ${size} bytes; a policy file may be at most 1 MiB`)
    return { file, text: await readFile(file, 'utf8') }
  } catch (error) {
    return refuse(`cannot read file (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
  }
}

/** Reads policy files as they are now. */
export function readPolicyTexts(files: readonly string[]): Promise<PolicyText[]> {
  return Promise.all(files.map(readPolicyText))
}

/** Parses (off the main thread) and validates policy texts, each with its own result. */
async function validateTexts(read: readonly PolicyText[]): Promise<LoadResult[]> {
  const sources = read.filter((entry): entry is YamlSource => 'text' in entry)
  const parsed = await parseYamlOffThread(sources)
  let next = 0
  return read.map((entry) =>
    'text' in entry ? validatePolicy(parsed[next++] as ParsedYaml) : { ok: false, problems: [entry.problem] },
  )
}

async function loadPolicyFiles(files: readonly string[]): Promise<LoadResult[]> {
  return validateTexts(await readPolicyTexts(files))
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
  return loadPolicyTexts(await readPolicyTexts(files))
}

/** `loadPolicySet` on texts read before: what a primary validated is what its workers compile. */
export async function loadPolicyTexts(read: readonly PolicyText[]): Promise<PolicySet> {
  const results = await validateTexts(read)
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
