import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import send from '@fastify/send'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Exchange } from '../pipeline/exchange.js'
import type { App, StaticEntry } from '../policy/compile.js'
import { createEncoder, type Encoding } from './compression.js'
import { refuse } from './respond.js'
import { locateStatic, type StaticFile } from './static-lookup.js'

/**
 * The static entry serving this path, and the path inside it, if any. The prefix without its slash
 * (`/build` for `/build/`) belongs to the entry too, with the path `` (it is redirected to the prefix).
 */
export function staticFor(app: App, target: string): { entry: StaticEntry; file: string } | undefined {
  if (app.static.length === 0) return undefined
  const query = target.indexOf('?')
  const path = query < 0 ? target : target.slice(0, query)
  for (const entry of app.static) {
    if (path.startsWith(entry.path)) return { entry, file: `/${path.slice(entry.path.length)}` }
    if (path.length === entry.path.length - 1 && entry.path.startsWith(path)) return { entry, file: '' }
  }
  return undefined
}

/**
 * Serves what `locateStatic` found with @fastify/send (the engine of @fastify/static): ETag and
 * Last-Modified with 304s, byte ranges, and no way out of the directory. Missing files, dotfiles and
 * escapes are all the same JSON 404; a directory named without its slash is redirected (308).
 */
export async function serveStatic(
  request: FastifyRequest,
  reply: FastifyReply,
  exchange: Exchange,
  match: { entry: StaticEntry; file: string },
  headers: (own: OutgoingHttpHeaders) => OutgoingHttpHeaders,
): Promise<FastifyReply> {
  const compression = (exchange.app as App).compression
  const found = await locateStatic(match.entry, match.file, compression, {
    method: request.method,
    target: exchange.target,
    headers: request.headers,
  })
  if (found.kind === 'missing') return refuse(reply, 'PCL_NOT_FOUND', 'static', 'No such file')
  if (found.kind === 'redirect') return reply.code(308).header('location', found.location).send()
  const encoding = found.encoding
  const onTheFly = encoding !== undefined && !encoding.precompressed
  // @fastify/send reads only the method and headers of the request it is given.
  const asked = {
    method: request.method,
    headers: encoding ? validatorsFor(request.headers, encoding.name) : request.headers,
  } as unknown as Readable
  const result = await send(asked, found.sendPath, {
    root: found.root,
    dotfiles: 'deny',
    index: false,
    cacheControl: false,
    contentType: false,
    // A range is of the file's own bytes (or the variant's): none while compressing on the fly.
    acceptRanges: !onTheFly,
  })
  if (result.type !== 'file') {
    result.stream.destroy()
    if (result.statusCode === 412) return refuse(reply, 'PCL_PRECONDITION_FAILED', 'static')
    if (result.statusCode === 416) {
      reply.header('content-range', result.headers['Content-Range'])
      return refuse(reply, 'PCL_RANGE_NOT_SATISFIABLE', 'static')
    }
    // Missing after all (deleted meanwhile), a dotfile or an escape: all look the same from outside.
    return refuse(reply, 'PCL_NOT_FOUND', 'static', 'No such file')
  }
  reply.hijack()
  const response = reply.raw
  response.writeHead(result.statusCode, headers(answerHeaders(result.statusCode, result.headers, found)))
  const count = (chunk: Buffer) => {
    exchange.responseBytes = (exchange.responseBytes ?? 0) + chunk.length
  }
  const body = result.stream
  body.on('error', () => response.destroy())
  response.on('close', () => body.destroy())
  if (onTheFly && result.statusCode === 200 && request.method !== 'HEAD') {
    const encoder = createEncoder(encoding.name, compression)
    encoder.on('error', () => response.destroy())
    encoder.on('data', count)
    body.pipe(encoder).pipe(response as unknown as NodeJS.WritableStream)
  } else {
    body.on('data', count)
    body.pipe(response as unknown as NodeJS.WritableStream)
  }
  return reply
}

/** @fastify/send's headers (lower-cased, so the policy's edits see them) with the lookup's own. */
function answerHeaders(status: number, sent: Record<string, string>, found: StaticFile): OutgoingHttpHeaders {
  const own: OutgoingHttpHeaders = {}
  for (const name in sent) own[name.toLowerCase()] = sent[name]
  Object.assign(own, found.headers)
  const { encoding } = found
  if (status === 304) {
    delete own['content-type']
    delete own['content-encoding']
  } else if (encoding && !encoding.precompressed) delete own['content-length']
  if (encoding && typeof own.etag === 'string') own.etag = taggedEtag(own.etag, encoding.name)
  return own
}

/** Each encoding of a file has its own validator: `W/"5a-18f"` → `W/"5a-18f-br"`. */
function taggedEtag(etag: string, encoding: Encoding): string {
  return `${etag.slice(0, -1)}-${encoding}"`
}

/**
 * The client's validators as @fastify/send compares them with the file's own ETag, for an encoded
 * answer: a tag of this encoding loses its suffix, any other tag can never match.
 */
function validatorsFor(headers: IncomingHttpHeaders, encoding: Encoding): IncomingHttpHeaders {
  const suffix = `-${encoding}"`
  const untag = (list: string) =>
    list
      .split(',')
      .map((tag) => tag.trim())
      .map((tag) =>
        tag === '*'
          ? tag
          : tag.endsWith(suffix)
            ? `${tag.slice(0, -suffix.length)}"`
            : '"pcl-other-encoding"',
      )
      .join(', ')
  const translated: IncomingHttpHeaders = { ...headers }
  for (const name of ['if-none-match', 'if-match'] as const) {
    const value = headers[name]
    if (value !== undefined) translated[name] = untag(String(value))
  }
  const ifRange = headers['if-range']
  if (typeof ifRange === 'string' && ifRange.includes('"')) translated['if-range'] = untag(ifRange)
  return translated
}
