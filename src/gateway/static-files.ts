import send from '@fastify/send'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Exchange } from '../pipeline/exchange.js'
import type { App } from '../policy/compile.js'
import { refuse } from './respond.js'

/** The static directory serving this path, and the path inside it, if any. */
export function staticFor(
  app: App,
  target: string,
): { root: string; file: string; cacheControl: string } | undefined {
  if (app.static.length === 0) return undefined
  const query = target.indexOf('?')
  const path = query < 0 ? target : target.slice(0, query)
  for (const entry of app.static) {
    if (path.startsWith(entry.path))
      return { root: entry.root, file: `/${path.slice(entry.path.length)}`, cacheControl: entry.cacheControl }
  }
  return undefined
}

/**
 * Serves a file with @fastify/send (the engine of @fastify/static): ETag and Last-Modified with 304s,
 * byte ranges, and no way out of the directory (`..` and dotfiles are refused). Missing files,
 * directories and refused paths are all the same JSON 404.
 */
export async function serveStatic(
  request: FastifyRequest,
  reply: FastifyReply,
  exchange: Exchange,
  match: { root: string; file: string; cacheControl: string },
  headers: (own: Record<string, string>) => Record<string, string | string[] | number | undefined>,
): Promise<FastifyReply> {
  const result = await send(request.raw, match.file, {
    root: match.root,
    dotfiles: 'deny',
    index: false,
    cacheControl: false,
  })
  if (result.type !== 'file') {
    // Missing, a directory, a dotfile or an escape attempt: all look the same from outside.
    result.stream.destroy()
    return refuse(reply, 'PCL_NOT_FOUND', 'static', 'No such file')
  }
  reply.hijack()
  reply.raw.writeHead(result.statusCode, headers({ ...result.headers, 'cache-control': match.cacheControl }))
  result.stream.on('data', (chunk: Buffer) => {
    exchange.responseBytes = (exchange.responseBytes ?? 0) + chunk.length
  })
  result.stream.pipe(reply.raw as unknown as NodeJS.WritableStream)
  return reply
}
