import { readFile, writeFile } from 'node:fs/promises'
import { generatedPages, withGenerated } from './docs-gen.js'

/** Regenerates the generated parts of docs/ (policy reference, error table). A test fails when they are stale. */
for (const [page, generate] of Object.entries(generatedPages)) {
  const file = new URL(`../${page}`, import.meta.url)
  await writeFile(file, withGenerated(await readFile(file, 'utf8'), generate()))
}
