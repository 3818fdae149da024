import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { policyJsonSchema } from '../../src/policy/json-schema.js'

describe('policy.schema.json', () => {
  it('is the committed output of the zod schema (run npm run schema after changing it)', async () => {
    expect(await readFile('policy.schema.json', 'utf8')).toBe(policyJsonSchema())
  })
})
