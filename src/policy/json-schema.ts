import { z } from 'zod'
import { policySchema } from './schema.js'

/** policy.schema.json: what editors use to complete and check policy files. Derived, never hand-written. */
export function policyJsonSchema(): string {
  const schema = z.toJSONSchema(policySchema, { io: 'input', target: 'draft-7' })
  return `${JSON.stringify({ title: 'Portcullis policy', ...schema }, null, 2)}\n`
}
