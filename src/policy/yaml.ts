import { Worker } from 'node:worker_threads'
import { type Document, isMap, isSeq, LineCounter, type Node, parseDocument } from 'yaml'

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

export interface YamlSource {
  file: string
  text: string
}

/**
 * Where each field of a file is: by formatted field path (`cors.origins[1]`), its key's line and
 * column, then its value's (0, 0 when it has none). Plain data, so it crosses from the parsing worker.
 */
export type PositionIndex = Record<string, [number, number, number, number]>

export type ParsedYaml =
  | { ok: true; file: string; data: unknown; positions: PositionIndex }
  | { ok: false; problems: PolicyProblem[] }

function formatFieldPath(field: FieldPath): string {
  let text = ''
  for (const segment of field) {
    text += typeof segment === 'number' ? `[${segment}]` : text ? `.${segment}` : segment
  }
  return text
}

/** Parses one file's YAML into plain data and the position of every field; never throws. */
export function parseYaml(file: string, text: string): ParsedYaml {
  const lineCounter = new LineCounter()
  const document = parseDocument(text, { lineCounter, prettyErrors: false })
  const problem = (offset: number, message: string): ParsedYaml => {
    const { line, col } = lineCounter.linePos(offset)
    return { ok: false, problems: [{ file, line, column: col, field: '', message }] }
  }
  if (document.errors.length > 0) {
    return {
      ok: false,
      problems: document.errors.map((error) => {
        const { line, col } = lineCounter.linePos(error.pos[0])
        return { file, line, column: col, field: '', message: `invalid YAML: ${firstLine(error.message)}` }
      }),
    }
  }
  let data: unknown
  try {
    data = document.toJS()
  } catch (error) {
    // The yaml library refuses documents whose aliases would expand without bound (a "billion laughs").
    const reason = error instanceof Error ? firstLine(error.message) : String(error)
    return problem(0, `invalid YAML: ${reason} (aliases may be used at most 100 times)`)
  }
  return { ok: true, file, data, positions: indexPositions(document, lineCounter) }
}

function indexPositions(document: Document, lineCounter: LineCounter): PositionIndex {
  const index: PositionIndex = {}
  const at = (offset: number): [number, number] => {
    const { line, col } = lineCounter.linePos(offset)
    return [line, col]
  }
  const root = at((document.contents as Node | null)?.range?.[0] ?? 0)
  index[''] = [...root, ...root]
  const walk = (node: unknown, path: (string | number)[]) => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = (pair.key as { value?: unknown } | null)?.value
        if (typeof key !== 'string' && typeof key !== 'number') continue
        const field = [...path, key]
        const value = pair.value as Node | null
        const keyAt = at((pair.key as Node).range?.[0] ?? 0)
        index[formatFieldPath(field)] = value?.range ? [...keyAt, ...at(value.range[0])] : [...keyAt, 0, 0]
        if (value) walk(value, field)
      }
    } else if (isSeq(node)) {
      for (const [position, item] of node.items.entries()) {
        const range = (item as Node | null)?.range
        if (!range) continue
        const field = [...path, position]
        const itemAt = at(range[0])
        index[formatFieldPath(field)] = [...itemAt, ...itemAt]
        walk(item, field)
      }
    }
  }
  walk(document.contents, [])
  return index
}

/** The position of a field, or of its closest parent in the file; the key itself when `pointAtKey`. */
export function locateIn(
  file: string,
  positions: PositionIndex,
  field: FieldPath,
  message: string,
  pointAtKey = false,
): PolicyProblem {
  for (let length = field.length; length >= 0; length--) {
    const entry = positions[formatFieldPath(field.slice(0, length))]
    if (!entry) continue
    const [keyLine, keyColumn, valueLine, valueColumn] = entry
    const onKey = length === field.length && (pointAtKey || valueLine === 0)
    return {
      file,
      line: onKey ? keyLine : valueLine || keyLine,
      column: onKey ? keyColumn : valueColumn || keyColumn,
      field: formatFieldPath(field),
      message,
    }
  }
  return { file, line: 1, column: 1, field: formatFieldPath(field), message }
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? text
}

/** From the compiled build the worker is plain JavaScript; from the TypeScript sources (tests), tsx loads it. */
function yamlWorker(): Worker {
  const resourceLimits = { maxOldGenerationSizeMb: 512 }
  if (!import.meta.url.endsWith('.ts'))
    return new Worker(new URL('./yaml-worker.js', import.meta.url), { resourceLimits })
  const source = new URL('./yaml-worker.ts', import.meta.url).href
  const bootstrap = `import('tsx/esm/api').then((tsx) => tsx.register()).then(() => import(${JSON.stringify(source)}))`
  return new Worker(bootstrap, { eval: true, resourceLimits })
}

/** How long parsing a set of policy files may take before it is refused. */
const parseTimeoutMs = 30_000

/**
 * Parses files in a worker thread, so a large or hostile file costs the worker, never the event loop
 * that serves traffic; a parse that runs past the timeout is stopped and each file reported.
 */
export function parseYamlOffThread(sources: readonly YamlSource[]): Promise<ParsedYaml[]> {
  if (sources.length === 0) return Promise.resolve([])
  const worker = yamlWorker()
  const refuseAll = (message: string): ParsedYaml[] =>
    sources.map((source) => ({
      ok: false,
      problems: [{ file: source.file, line: 1, column: 1, field: '', message }],
    }))
  return new Promise<ParsedYaml[]>((resolve) => {
    const timer = setTimeout(() => {
      resolve(refuseAll(`parsing took longer than ${parseTimeoutMs / 1000} s; the file is refused`))
      void worker.terminate()
    }, parseTimeoutMs)
    worker.once('message', (results: ParsedYaml[]) => {
      clearTimeout(timer)
      resolve(results)
      void worker.terminate()
    })
    worker.once('error', (error) => {
      clearTimeout(timer)
      resolve(refuseAll(`cannot be parsed (${firstLine(error.message)})`))
    })
    worker.postMessage(sources)
  })
}
