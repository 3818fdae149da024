import { realpath, stat } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import path from 'node:path'
import send from '@fastify/send'
import type { StaticEntry } from '../policy/compile.js'
import type { Policy } from '../policy/schema.js'
import { acceptedEncodings, type Encoding, isCompressibleType, worthCompressing } from './compression.js'

/** What of a request the lookup reads. Only GET and HEAD get here (`decide` answers others 405). */
export interface StaticRequest {
  readonly method: string
  /** The canonical target, path and query. */
  readonly target: string
  readonly headers: IncomingHttpHeaders
}

/** What a static path answers, found on disk: a file and how it is sent, a redirect, or nothing. */
export type StaticAnswer =
  | { kind: 'missing'; reason: string }
  | { kind: 'redirect'; location: string }
  | StaticFile

export interface StaticFile {
  kind: 'file'
  /** The directory's real path, and the file sent as a URL path inside it, for @fastify/send. */
  root: string
  sendPath: string
  /** The file sent (the one asked for, or its precompressed variant), as an absolute real path. */
  file: string
  /** Why this file: the path names it, it is the directory's index, or it is the fallback. */
  via: 'path' | 'index' | 'fallback'
  /** Set when the answer is encoded: a precompressed variant, or compressed on the fly. */
  encoding: { name: Encoding; precompressed: boolean } | undefined
  /** The headers the answer gets on top of @fastify/send's (ETag, Last-Modified, lengths, ranges). */
  headers: {
    'cache-control': string
    'content-type'?: string
    'content-encoding'?: Encoding
    vary?: 'Accept-Encoding'
  }
}

const variantSuffix: Record<Encoding, string> = { br: '.br', gzip: '.gz' }

/**
 * The file a static path answers with, as Caddy's `try_files {path} {path}/index.html <fallback>` with
 * `precompressed br gzip` and nginx's `try_files $uri $uri/ /index.html` with `gzip_static` find it:
 * the file; for a directory URL (ending in /) its first index file, and for a directory named without
 * its slash a redirect to the slash form; else the fallback, for a last segment with no extension.
 * Dotfiles and anything whose real path (symlinks resolved) leaves the directory are missing.
 * Serving and `explain` both ask this, so they cannot disagree.
 */
export async function locateStatic(
  entry: StaticEntry,
  /** The canonical path after the entry's prefix: `/app.js`, `/` for the prefix, `` for it without its slash. */
  file: string,
  compression: Policy['compression'],
  request: StaticRequest,
): Promise<StaticAnswer> {
  const decoded = decodedPath(file)
  if (decoded === undefined) return { kind: 'missing', reason: 'dotfiles are never served' }
  // Resolved per request: a deploy may swing a `current -> releases/42` symlink under the directory.
  const root = await realpath(entry.root).catch(() => undefined)
  if (root === undefined) return { kind: 'missing', reason: `the directory ${entry.root} does not exist` }
  if (decoded === '') return { kind: 'redirect', location: slashForm(request.target) }
  let found: Found | undefined
  if (decoded.endsWith('/')) {
    for (const name of entry.index) {
      found = await regularFile(root, path.join(root, decoded, name), 'index')
      if (found) break
    }
  } else {
    const real = await realInside(root, path.join(root, decoded))
    const stats = real === undefined ? undefined : await stat(real).catch(() => undefined)
    if (real !== undefined && stats?.isFile()) found = { path: real, size: stats.size, via: 'path' }
    if (stats?.isDirectory()) return { kind: 'redirect', location: slashForm(request.target) }
  }
  if (!found && entry.fallback !== undefined && !hasExtension(decoded))
    found = await regularFile(root, path.join(root, entry.fallback), 'fallback')
  if (!found)
    return { kind: 'missing', reason: `no file ${path.join(entry.root, decoded)} under ${entry.path}` }
  return representation(entry, compression, request, root, found)
}

interface Found {
  /** Its real path, inside the real directory. */
  path: string
  size: number
  via: StaticFile['via']
}

/**
 * How the found file is sent: its type and caching, and, for a compressible type, the precompressed
 * variant the client accepts best (brotli on a tie), or else compression on the fly when the policy
 * compresses it and no range is asked for (a range is of the file's own bytes).
 */
async function representation(
  entry: StaticEntry,
  compression: Policy['compression'],
  request: StaticRequest,
  root: string,
  found: Found,
): Promise<StaticFile> {
  const type = contentTypeOf(found.path)
  // HTML names are never content-hashed, and the fallback answers many URLs: both are revalidated.
  const html = found.via === 'fallback' || type?.startsWith('text/html') === true
  const headers: StaticFile['headers'] = {
    'cache-control': html ? entry.htmlCacheControl : entry.cacheControl,
  }
  if (type !== undefined) headers['content-type'] = type
  const plain = { kind: 'file', root, via: found.via, headers } as const
  const varies = isCompressibleType(type) && (entry.precompressed || compression.enabled)
  if (!varies)
    return { ...plain, file: found.path, sendPath: sendPathOf(root, found.path), encoding: undefined }
  // Whoever gets which encoding, a cache must key this URL's answers on Accept-Encoding.
  headers.vary = 'Accept-Encoding'
  const accepted = acceptedEncodings(request.headers['accept-encoding'])
  for (const name of entry.precompressed ? accepted : []) {
    const variant = await regularFile(root, found.path + variantSuffix[name], found.via)
    if (!variant) continue
    headers['content-encoding'] = name
    const encoding = { name, precompressed: true }
    return { ...plain, file: variant.path, sendPath: sendPathOf(root, variant.path), encoding }
  }
  const best = accepted[0]
  const onTheFly =
    best !== undefined &&
    request.headers.range === undefined &&
    worthCompressing(compression, {
      'content-type': type,
      'content-length': found.size,
      'cache-control': headers['cache-control'],
    })
  if (onTheFly) headers['content-encoding'] = best
  const encoding = onTheFly ? { name: best, precompressed: false } : undefined
  return { ...plain, file: found.path, sendPath: sendPathOf(root, found.path), encoding }
}

/** The path decoded, or undefined when a segment is a dotfile (or a dot segment) or it cannot be decoded. */
function decodedPath(file: string): string | undefined {
  let decoded: string
  try {
    decoded = decodeURIComponent(file)
  } catch {
    return undefined
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return undefined
  return decoded.split('/').some((segment) => segment.startsWith('.')) ? undefined : decoded
}

/** A regular file at `candidate` whose real path is inside the real directory. */
async function regularFile(root: string, candidate: string, via: Found['via']): Promise<Found | undefined> {
  const real = await realInside(root, candidate)
  if (real === undefined) return undefined
  const stats = await stat(real).catch(() => undefined)
  return stats?.isFile() ? { path: real, size: stats.size, via } : undefined
}

/** The real path of `candidate` (symlinks resolved), if it exists, is inside `root` and is no dotfile. */
async function realInside(root: string, candidate: string): Promise<string | undefined> {
  const real = await realpath(candidate).catch(() => undefined)
  if (real === undefined) return undefined
  const relative = path.relative(root, real)
  if (relative === '' || path.isAbsolute(relative)) return undefined
  // `..` (outside the directory) and dotfiles reached through a symlink alike.
  return relative.split(path.sep).some((segment) => segment.startsWith('.')) ? undefined : real
}

/** The file as the URL path @fastify/send decodes back to it. */
function sendPathOf(root: string, real: string): string {
  return `/${path.relative(root, real).split(path.sep).map(encodeURIComponent).join('/')}`
}

/** Whether the last segment names a file type (`app.3f2a.js`), so no fallback answers for it. */
function hasExtension(decoded: string): boolean {
  return path.extname(decoded.slice(decoded.lastIndexOf('/') + 1)) !== ''
}

/** `/build?x=1` → `/build/?x=1`. */
function slashForm(target: string): string {
  const query = target.indexOf('?')
  return query < 0 ? `${target}/` : `${target.slice(0, query)}/${target.slice(query)}`
}

/** The Content-Type @fastify/send would give the file, from its name. */
function contentTypeOf(file: string): string | undefined {
  const type = send.mime.getType(file)
  if (type === null) return undefined
  return send.isUtf8MimeType(type) ? `${type}; charset=utf-8` : type
}
