import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { generatedPages, withGenerated } from '../scripts/docs-gen.js'

const root = path.resolve(import.meta.dirname, '..')
const pages = [
  'README.md',
  ...readdirSync(path.join(root, 'docs'))
    .filter((file) => file.endsWith('.md'))
    .map((file) => `docs/${file}`),
]

/** A page's text outside fenced code blocks, where links and headings are what they look like. */
function prose(text: string): string {
  return text.replace(/^```[^\n]*\n[\s\S]*?^```$/gm, '')
}

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as dashes, repeats numbered. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>()
  const result = new Set<string>()
  for (const [, heading] of prose(text).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = (heading as string)
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-')
    const count = seen.get(slug) ?? 0
    seen.set(slug, count + 1)
    result.add(count === 0 ? slug : `${slug}-${count}`)
  }
  return result
}

describe('docs', () => {
  it.each(Object.keys(generatedPages))('%s holds what npm run docs generates (run npm run docs)', (page) => {
    const committed = readFileSync(path.join(root, page), 'utf8')
    const generate = generatedPages[page] as () => string
    expect(committed === withGenerated(committed, generate()), `${page} is stale: run npm run docs`).toBe(
      true,
    )
  })

  it('links only to files and headings that exist', () => {
    const broken: string[] = []
    for (const page of pages) {
      const text = readFileSync(path.join(root, page), 'utf8')
      for (const [, target] of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z][a-z+.-]*:/i.test(target as string)) continue
        const [file = '', anchor] = (target as string).split('#')
        const resolved =
          file === '' ? path.join(root, page) : path.resolve(path.dirname(path.join(root, page)), file)
        if (!existsSync(resolved)) broken.push(`${page}: ${target} (no such file)`)
        else if (anchor !== undefined) {
          const heading = statSync(resolved).isFile() && anchors(readFileSync(resolved, 'utf8')).has(anchor)
          if (!heading) broken.push(`${page}: ${target} (no such heading)`)
        }
      }
    }
    expect(broken).toEqual([])
  })

  it('lists every package .ci/run installs in docs/development.md and the README', () => {
    const ci = readFileSync(path.join(root, '.ci/run'), 'utf8').replace(/\\\n/g, ' ')
    const installed = [...ci.matchAll(/apt-get install ([^\n>&|]+)/g)].flatMap(([, args]) =>
      (args as string).split(/\s+/).filter((word) => /^[a-z0-9][a-z0-9.+-]+$/.test(word)),
    )
    expect(installed).toContain('redis-server')
    const development = readFileSync(path.join(root, 'docs/development.md'), 'utf8')
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
    const unlisted = installed.filter(
      (name) =>
        !development.includes(`\`${name}\``) ||
        !new RegExp(`[\\s\`]${name.replace(/[.+]/g, '\\$&')}[\\s\`]`).test(readme),
    )
    expect(unlisted, 'add them, with what they are for, to docs/development.md and the README').toEqual([])
  })

  it('has a README that links every page of docs/ and stays short', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
    expect(readme.split('\n').length).toBeLessThan(200)
    const unlinked = pages.filter((page) => page !== 'README.md' && !readme.includes(`](${page})`))
    expect(unlinked).toEqual([])
  })
})
