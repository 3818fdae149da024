import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'

/** Every module of src/ with the modules of src/ it imports (type-only imports included). */
function importGraph(): Map<string, string[]> {
  const root = path.resolve(import.meta.dirname, '../src')
  const graph = new Map<string, string[]>()
  const files = readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((file) =>
    file.endsWith('.ts'),
  )
  for (const file of files) {
    const source = readFileSync(path.join(root, file), 'utf8')
    const imports = [...source.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)].map((match) =>
      path.normalize(path.join(path.dirname(file), (match[1] as string).replace(/\.js$/, '.ts'))),
    )
    graph.set(path.normalize(file), imports)
  }
  return graph
}

describe('source layout', () => {
  const graph = importGraph()

  it('has no import cycles', () => {
    const cycles: string[] = []
    const done = new Set<string>()
    const visit = (file: string, trail: string[]) => {
      if (trail.includes(file)) {
        cycles.push([...trail.slice(trail.indexOf(file)), file].join(' -> '))
        return
      }
      if (done.has(file)) return
      for (const next of graph.get(file) ?? []) visit(next, [...trail, file])
      done.add(file)
    }
    for (const file of graph.keys()) visit(file, [])
    expect(cycles).toEqual([])
  })

  it('keeps the lower layers free of what is built on them', () => {
    const lower = (file: string) => /^(net|stores)\//.test(file) || file === 'policy/units.ts'
    const upward = [...graph]
      .filter(([file]) => lower(file))
      .flatMap(([file, imports]) =>
        imports.filter((target) => !lower(target)).map((target) => `${file} -> ${target}`),
      )
    expect(upward).toEqual([])
  })
})
