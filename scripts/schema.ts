import { writeFile } from 'node:fs/promises'
import { policyJsonSchema } from '../src/policy/json-schema.js'

/** Regenerates policy.schema.json from the zod schema. A test fails when the committed file is stale. */
await writeFile(new URL('../policy.schema.json', import.meta.url), policyJsonSchema())
