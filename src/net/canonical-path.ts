/**
 * The one spelling of a request path that guards match and the upstream receives, so no encoding, dot,
 * slash or case trick can make a guard and the app disagree on which resource is meant.
 *
 * - percent-encoded unreserved characters are decoded (`/%73tudio` → `/studio`), other escapes get
 *   upper-case hex;
 * - `//` is collapsed and dot segments are removed (`/api/../studio` → `/studio`);
 * - refused (400): an encoded `/` or `\`, a literal `\`, NUL or other control characters, malformed
 *   escapes, escapes that are not UTF-8, and paths that climb above the root.
 */
export type CanonicalPath = { ok: true; path: string } | { ok: false; reason: string }

const unreserved = /[A-Za-z0-9\-._~]/
const utf8 = new TextDecoder('utf-8', { fatal: true })

export function canonicalPath(rawPath: string): CanonicalPath {
  if (!rawPath.startsWith('/')) return { ok: false, reason: 'the path must start with /' }
  // Characters outside ASCII arrive raw from some clients: encode them so there is one spelling.
  const ascii = /[^\x20-\x7e]/.test(rawPath) ? encodeNonAscii(rawPath) : rawPath
  if (ascii === undefined) return { ok: false, reason: 'the path contains control characters' }
  if (ascii.includes('\\')) return { ok: false, reason: 'the path contains a backslash' }

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

/** The path as rules match it: `;parameters` dropped from every segment, since some app servers ignore them. */
export function matchablePath(canonical: string): string {
  return canonical.includes(';') ? canonical.replace(/;[^/]*/g, '') : canonical
}

function encodeNonAscii(path: string): string | undefined {
  let out = ''
  for (const char of path) {
    const code = char.codePointAt(0) ?? 0
    if (code < 0x20 || code === 0x7f) return undefined
    out += code > 0x7e ? encodeURIComponent(char) : char
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
