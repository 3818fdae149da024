import { readFileSync } from 'node:fs'
import path from 'node:path'
import type { FieldPath } from './yaml.js'

/** `${NAME}` (an environment variable) or `${file:path}` (a mounted secret); `$${` is a literal `${`. */
const reference = /\$(\$?)\{([^}]*)\}/g
const variableName = /^[A-Za-z_][A-Za-z0-9_]*$/

export type Resolved =
  | { ok: true; data: unknown }
  | { ok: false; problems: { field: FieldPath; message: string }[] }

/**
 * Replaces the references in every string of a parsed policy file: `${NAME}` by the environment
 * variable, `${file:path}` by the file's content (relative to the policy file, one trailing newline
 * dropped), for secrets that must not be written into the file (basic-auth hashes, an EAB key).
 * Resolved at every load, so a reload picks up a rotated secret. A missing variable or unreadable
 * file is a problem at the field that names it; messages name the reference, never a value.
 */
export function resolveReferences(data: unknown, policyFile: string, env: NodeJS.ProcessEnv): Resolved {
  const problems: { field: FieldPath; message: string }[] = []
  const resolveText = (text: string, field: FieldPath): string =>
    text.replace(reference, (whole, escaped: string, inner: string) => {
      if (escaped) return whole.slice(1)
      if (inner.startsWith('file:')) {
        const name = inner.slice('file:'.length)
        try {
          return readFileSync(path.resolve(path.dirname(policyFile), name), 'utf8').replace(/\r?\n$/, '')
        } catch (error) {
          const reason = (error as NodeJS.ErrnoException).code ?? String(error)
          problems.push({ field, message: `cannot read the secret file of \${file:${name}} (${reason})` })
          return ''
        }
      }
      if (!variableName.test(inner)) {
        problems.push({
          field,
          message: `\${${inner}} is neither \${NAME} nor \${file:path} (write $\${ for a literal \${)`,
        })
        return ''
      }
      const value = env[inner]
      if (value === undefined) problems.push({ field, message: `\${${inner}} is not set in the environment` })
      return value ?? ''
    })
  const walk = (node: unknown, field: (string | number)[]): unknown => {
    if (typeof node === 'string') return node.includes('${') ? resolveText(node, field) : node
    if (Array.isArray(node)) return node.map((item, index) => walk(item, [...field, index]))
    if (node !== null && typeof node === 'object')
      return Object.fromEntries(
        Object.entries(node).map(([key, value]) => [key, walk(value, [...field, key])]),
      )
    return node
  }
  const resolved = walk(data, [])
  return problems.length > 0 ? { ok: false, problems } : { ok: true, data: resolved }
}
