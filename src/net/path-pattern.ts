import { canonicalPath } from './canonical-path.js'

/** `/studio/**`, `/sql`, `/workspaces/*\/db/migrate`: `*` is one segment, a final `/**` any depth. */
export function isPathPattern(pattern: string): boolean {
  if (!pattern.startsWith('/') || /[?#\s]/.test(pattern)) return false
  const withoutGlobs = pattern.replace(/\*/g, 'x')
  const canonical = canonicalPath(withoutGlobs)
  if (!canonical.ok || canonical.path !== withoutGlobs) return false
  const segments = pattern.split('/').slice(1)
  return segments.every(
    (segment, index) =>
      !segment.includes('*') || segment === '*' || (segment === '**' && index === segments.length - 1),
  )
}

/**
 * Compiles a pattern once, at load, to a RegExp over matchable paths. A pattern matches with or
 * without a trailing slash (`/admin` also covers `/admin/`), and `/x/**` also covers `/x` itself.
 */
export function compilePathPattern(pattern: string, caseInsensitive: boolean): RegExp {
  if (pattern === '/') return /^\/$/
  const segments = pattern.split('/').slice(1)
  let source = ''
  for (const [index, segment] of segments.entries()) {
    const last = index === segments.length - 1
    if (segment === '**' && last) source += '(?:/.*)?'
    else if (segment === '*') source += '/[^/]+'
    else source += `/${segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`
  }
  if (!source.endsWith('(?:/.*)?')) source += '/?'
  return new RegExp(`^${source}$`, caseInsensitive ? 'i' : '')
}

/** Whether a path is in `paths` and not in `except`: the scope of a login, compiled once. */
export function compilePathScope(
  paths: readonly string[],
  except: readonly string[],
): (path: string) => boolean {
  const included = paths.map((pattern) => compilePathPattern(pattern, true))
  const excluded = except.map((pattern) => compilePathPattern(pattern, true))
  return (path) =>
    included.some((pattern) => pattern.test(path)) && !excluded.some((pattern) => pattern.test(path))
}
