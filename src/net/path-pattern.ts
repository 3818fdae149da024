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

/**
 * Whether some path matches both patterns (regardless of case): segment by segment, `*` meets any one
 * segment and a final `/**` any rest, including none.
 */
export function patternsOverlap(first: string, second: string): boolean {
  // Patterns match with or without a trailing slash.
  const segments = (pattern: string) => pattern.toLowerCase().split('/').filter(Boolean)
  const meet = (a: readonly string[], b: readonly string[]): boolean => {
    const [x, y] = [a[0], b[0]]
    if (x === '**' || y === '**') return true
    if (x === undefined || y === undefined) return x === y
    return (x === '*' || y === '*' || x === y) && meet(a.slice(1), b.slice(1))
  }
  return meet(segments(first), segments(second))
}

/**
 * A route's `stripPrefix` (matched regardless of case, on whole segments) and `addPrefix` applied to a
 * canonical path, or to a route's path pattern: what the upstream receives.
 */
export function rewrittenPath(
  path: string,
  rewrite: { readonly stripPrefix?: string | undefined; readonly addPrefix?: string | undefined },
): string {
  const strip = rewrite.stripPrefix
  let rewritten = path
  if (
    strip &&
    path.slice(0, strip.length).toLowerCase() === strip.toLowerCase() &&
    (path.length === strip.length || path[strip.length] === '/')
  )
    rewritten = path.slice(strip.length) || '/'
  return rewrite.addPrefix ? rewrite.addPrefix + rewritten : rewritten
}

/**
 * The paths a route's requests can reach the upstream with, as a pattern: its path pattern with the
 * prefix stripped and added. A strip that reaches past the pattern's literal part (`/api/**` stripping
 * `/api/v2`, `/t/*\/**` stripping `/t/a`) can leave any path: `/**`, so no rewrite is missed.
 */
export function rewrittenPattern(
  pattern: string,
  rewrite: { readonly stripPrefix?: string | undefined; readonly addPrefix?: string | undefined },
): string {
  let result = pattern
  const strip = rewrite.stripPrefix
  if (strip) {
    const literal = rewrittenPath(pattern, { stripPrefix: strip })
    if (literal !== pattern) result = literal
    else if (patternsOverlap(`${strip}/**`, pattern)) result = '/**'
  }
  return rewrite.addPrefix ? `${rewrite.addPrefix}${result === '/' ? '' : result}` || '/' : result
}
