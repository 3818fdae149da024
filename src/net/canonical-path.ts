/**
 * The one spelling of a request target that guards match and the upstream receives, so no encoding,
 * dot, slash, case or delimiter trick can make a guard and the app's router disagree on which resource
 * is meant. A target whose meaning differs between common routers (Express, Fastify, Starlette,
 * Tomcat, Go's ServeMux) is refused instead of being given one meaning here and another there.
 *
 * - percent-encoded unreserved characters are decoded (`/%73tudio` → `/studio`), other escapes get
 *   upper-case hex;
 * - `//` is collapsed and dot segments are removed (`/api/../studio` → `/studio`);
 * - refused (400): a `#` anywhere (origin-form has no fragment, yet Express and Fastify cut the path
 *   there), a literal `;` in the path (Tomcat-style servers drop `;parameters` before resolving dot
 *   segments, other routers keep them as part of the segment), characters browsers always
 *   percent-encode (space, `"`, `<`, `>`, `` ` ``, `{`, `}`), a `\` or an encoded `/` or `\`, NUL or
 *   other control characters, malformed escapes, escapes that are not UTF-8, and paths that climb
 *   above the root.
 */
export type CanonicalPath = { ok: true; path: string } | { ok: false; reason: string }

/** The canonical path and the target the upstream receives: that path and the query as sent. */
export type CanonicalTarget = { ok: true; path: string; target: string } | { ok: false; reason: string }

const unreserved = /[A-Za-z0-9\-._~]/
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Characters refused when they stand literally in a path, with the reason the client is told. */
const refusedInPath: ReadonlyMap<string, string> = new Map([
  ['#', 'the request target contains "#": a fragment is never sent to a server'],
  [';', 'the path contains ";": app servers disagree on whether it starts a parameter'],
  ['\\', 'the path contains a backslash'],
  [' ', 'the path contains a character that must be percent-encoded'],
  ['"', 'the path contains a character that must be percent-encoded'],
  ['<', 'the path contains a character that must be percent-encoded'],
  ['>', 'the path contains a character that must be percent-encoded'],
  ['`', 'the path contains a character that must be percent-encoded'],
  ['{', 'the path contains a character that must be percent-encoded'],
  ['}', 'the path contains a character that must be percent-encoded'],
])
const refusedInPathPattern = /[#;\\ "<>`{}]/

/** A query passes as sent (bytes above 0x7e percent-encoded), but without a fragment, spaces or control characters. */
const refusedInQuery = /[^\x21\x22\x24-\x7e\x80-\uffff]/

/** Splits an origin-form target (`/path?query`) and canonicalises its path; see the module comment. */
export function canonicalTarget(rawTarget: string): CanonicalTarget {
  const queryStart = rawTarget.indexOf('?')
  const rawPath = queryStart >= 0 ? rawTarget.slice(0, queryStart) : rawTarget
  const query = queryStart >= 0 ? rawTarget.slice(queryStart) : ''
  const canonical = canonicalPath(rawPath)
  if (!canonical.ok) return canonical
  if (refusedInQuery.test(query)) {
    return {
      ok: false,
      reason: query.includes('#')
        ? (refusedInPath.get('#') as string)
        : 'the query contains a space or a control character',
    }
  }
  // Raw bytes above 0x7e (HTTP/2 passes them) are percent-encoded as in the path: an HTTP/1.1
  // upstream would refuse the request line, and an auth service would be told another URI.
  const sent = /[^\x21-\x7e]/.test(query) ? (encodeNonAscii(query) as string) : query
  return { ok: true, path: canonical.path, target: canonical.path + sent }
}

export function canonicalPath(rawPath: string): CanonicalPath {
  if (!rawPath.startsWith('/')) return { ok: false, reason: 'the path must start with /' }
  // Bytes outside ASCII arrive raw over HTTP/2: encode them so there is one spelling.
  const ascii = /[^\x20-\x7e]/.test(rawPath) ? encodeNonAscii(rawPath) : rawPath
  if (ascii === undefined) return { ok: false, reason: 'the path contains control characters' }
  const refused = refusedInPathPattern.exec(ascii)
  if (refused) return { ok: false, reason: refusedInPath.get(refused[0]) as string }

  let decoded = ''
  const escapedBytes: number[] = []
  for (let i = 0; i < ascii.length; i++) {
    const char = ascii[i] as string
    if (char !== '%') {
      decoded += char
      continue
    }
    const hex = ascii.slice(i + 1, i + 3)
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { ok: false, reason: 'the path has a malformed percent-escape' }
    const code = Number.parseInt(hex, 16)
    if (code === 0x2f || code === 0x5c)
      return { ok: false, reason: 'the path contains an encoded slash or backslash' }
    if (code < 0x20 || code === 0x7f)
      return { ok: false, reason: 'the path contains an encoded control character' }
    const character = String.fromCharCode(code)
    if (code < 0x80 && unreserved.test(character)) decoded += character
    else {
      decoded += `%${hex.toUpperCase()}`
      escapedBytes.push(code)
    }
    i += 2
  }
  if (escapedBytes.some((byte) => byte >= 0x80) && !isUtf8(decoded)) {
    return { ok: false, reason: 'the path has percent-escapes that are not UTF-8' }
  }

  const output: string[] = []
  const segments = decoded.split('/')
  for (const [index, segment] of segments.entries()) {
    if (index === 0) continue
    const last = index === segments.length - 1
    if (segment === '' && !last) continue // `//` collapses
    if (segment === '.') {
      if (last) output.push('')
      continue
    }
    if (segment === '..') {
      if (output.length === 0) return { ok: false, reason: 'the path climbs above the root' }
      output.pop()
      if (last) output.push('')
      continue
    }
    output.push(segment)
  }
  return { ok: true, path: `/${output.join('/')}` }
}

/**
 * Listeners hand the target over as latin1 (HTTP/1 refuses raw bytes above 0x7f; HTTP/2 passes them),
 * so each character up to 0xff is one byte of the target: it is percent-encoded as that byte, and the
 * escapes are then held to UTF-8 like any other.
 */
function encodeNonAscii(path: string): string | undefined {
  let out = ''
  for (const char of path) {
    const code = char.codePointAt(0) ?? 0
    if (code < 0x20 || code === 0x7f) return undefined
    if (code <= 0x7e) out += char
    else if (code <= 0xff) out += `%${code.toString(16).toUpperCase()}`
    else out += encodeURIComponent(char)
  }
  return out
}

function isUtf8(path: string): boolean {
  const bytes: number[] = []
  for (let i = 0; i < path.length; i++) {
    if (path[i] === '%') {
      bytes.push(Number.parseInt(path.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      bytes.push(path.charCodeAt(i))
    }
  }
  try {
    utf8.decode(Uint8Array.from(bytes))
    return true
  } catch {
    return false
  }
}
