import type { OutgoingHttpHeaders } from 'node:http'
import type { Http2ServerRequest } from 'node:http2'
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { type Dispatcher, Pool } from 'undici'
import type { ErrorCode } from '../errors.js'
import type { App } from '../policy/compile.js'
import { downstreamResponseHeaders, type ForwardedFacts, upstreamRequestHeaders } from './headers.js'

/** One target of one app: the keep-alive pool the gateway forwards through. */
export interface Upstream {
  readonly origin: string
  readonly pool: Pool
}

/**
 * Keep-alive connection pools, one per (app, target). Reloading keeps the pools whose settings did not
 * change, so a reload does not cost every upstream connection; pools that are gone close gracefully,
 * letting their in-flight requests finish.
 */
export class UpstreamPools {
  private pools = new Map<string, Pool>()
  private targets = new Map<string, Upstream[]>()
  private readonly turn = new Map<string, number>()

  update(apps: readonly App[]): void {
    const pools = new Map<string, Pool>()
    const targets = new Map<string, Upstream[]>()
    for (const app of apps) {
      const { connect } = app.upstream.timeouts
      targets.set(
        app.id,
        app.upstream.targets.map((origin) => {
          const key = `${app.id} ${origin} ${connect}`
          const pool =
            pools.get(key) ??
            this.pools.get(key) ??
            new Pool(origin, { connect: { timeout: connect }, keepAliveTimeout: 4000, pipelining: 1 })
          pools.set(key, pool)
          return { origin, pool }
        }),
      )
    }
    for (const [key, pool] of this.pools) if (!pools.has(key)) void pool.close()
    this.pools = pools
    this.targets = targets
  }

  /** The next target of the app, in turn. */
  pick(app: App): Upstream {
    const targets = this.targets.get(app.id)
    if (!targets || targets.length === 0) throw new Error(`no upstream pool for app ${app.id}`)
    const next = this.turn.get(app.id) ?? 0
    this.turn.set(app.id, (next + 1) % targets.length)
    return targets[next % targets.length] as Upstream
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((pool) => pool.close()))
    this.pools.clear()
    this.targets.clear()
  }
}

/** What went wrong talking to the upstream, as the code the client sees. */
export function upstreamErrorCode(error: unknown): ErrorCode {
  switch ((error as { code?: string }).code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'PCL_UPSTREAM_CONNECT_TIMEOUT'
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'PCL_UPSTREAM_TIMEOUT'
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'PCL_UPSTREAM_UNREACHABLE'
    default:
      return 'PCL_UPSTREAM_BAD_RESPONSE'
  }
}

/** The policy setting behind each upstream failure, named in the log line. */
const ruleFor: Partial<Record<ErrorCode, string>> = {
  PCL_UPSTREAM_CONNECT_TIMEOUT: 'upstream.timeouts.connect',
  PCL_UPSTREAM_TIMEOUT: 'upstream.timeouts.read',
  PCL_UPSTREAM_UNREACHABLE: 'upstream.targets',
}

function hasBody(request: FastifyRequest): boolean {
  if (request.raw.httpVersionMajor === 2)
    return !(request.raw as unknown as Http2ServerRequest).stream.endAfterHeaders
  const { headers } = request.raw
  return headers['transfer-encoding'] !== undefined || (headers['content-length'] ?? '0') !== '0'
}

export type Reject = (reply: FastifyReply, code: ErrorCode, rule?: string, message?: string) => FastifyReply

export interface ForwardPlan {
  /** The canonical path and the query, as the upstream receives them. */
  target: string
  facts: ForwardedFacts
  /** Enforced while the body streams when its length is not declared (chunked, HTTP/2). */
  bodyLimit: { max: number; rule: string } | undefined
  /** The headers sent to the client, from the app's (already stripped of hop-by-hop ones). */
  responseHeaders(fromApp: OutgoingHttpHeaders): OutgoingHttpHeaders
  reject: Reject
}

/**
 * Forwards one HTTP request and streams the answer straight to the client with backpressure: upstream
 * chunks are written as they come and the upstream is paused while the client is slow to read.
 * `read` bounds the wait for headers and every pause in the body; `write` bounds the whole exchange,
 * like Go's WriteTimeout. Either ends the request with a JSON 504 if nothing was sent yet, or cuts the
 * response if it had started.
 */
export function forwardHttp(
  request: FastifyRequest,
  reply: FastifyReply,
  app: App,
  upstream: Upstream,
  plan: ForwardPlan,
): FastifyReply {
  const { read, write } = app.upstream.timeouts
  const { reject } = plan
  const response = reply.raw
  let controller: Dispatcher.DispatchController | undefined
  let ended = false
  const deadline = setTimeout(() => {
    if (!response.headersSent) {
      ended = true
      reject(
        reply,
        'PCL_UPSTREAM_TIMEOUT',
        'upstream.timeouts.write',
        `No complete answer within ${write} ms`,
      )
    }
    controller?.abort(new DeadlineExceeded())
    if (response.headersSent) response.destroy()
  }, write)
  response.once('close', () => {
    clearTimeout(deadline)
    if (!ended) controller?.abort(new ClientGone())
  })
  request.upstream = upstream.origin

  upstream.pool.dispatch(
    {
      path: plan.target,
      method: request.method as Dispatcher.HttpMethod,
      headers: upstreamRequestHeaders(request.headers, plan.facts, { websocket: false }),
      body: requestBody(request, plan.bodyLimit),
      headersTimeout: read,
      bodyTimeout: read,
    },
    {
      onRequestStart(started) {
        controller = started
      },
      onResponseStart(_controller, statusCode, headers) {
        if (ended) return
        reply.hijack()
        response.writeHead(statusCode, plan.responseHeaders(downstreamResponseHeaders(headers)))
      },
      onResponseData(paused, chunk) {
        if (!response.write(chunk)) {
          paused.pause()
          response.once('drain', () => paused.resume())
        }
      },
      onResponseEnd() {
        ended = true
        response.end()
      },
      onResponseError(_controller, error) {
        if (ended) return
        ended = true
        if (error instanceof ClientGone) return
        if (response.headersSent) {
          request.log.warn({ err: error, upstream: upstream.origin }, 'upstream response cut short')
          response.destroy()
          return
        }
        const tooLarge = error instanceof BodyTooLarge ? error : (error.cause as unknown)
        if (tooLarge instanceof BodyTooLarge) {
          reject(
            reply,
            'PCL_BODY_TOO_LARGE',
            tooLarge.rule,
            `The request body is larger than ${tooLarge.max} bytes`,
          )
          return
        }
        request.log.warn({ err: error, upstream: upstream.origin }, 'upstream request failed')
        const code = upstreamErrorCode(error)
        reject(reply, code, ruleFor[code] ?? 'upstream')
      },
    },
  )
  return reply
}

function requestBody(request: FastifyRequest, limit: ForwardPlan['bodyLimit']): Readable | null {
  if (!hasBody(request)) return null
  // A declared length was checked against the limit already, and the parser holds the body to it.
  if (request.headers['content-length'] !== undefined || !limit) return request.raw
  return Readable.from(countedBody(request.raw, limit), { objectMode: false })
}

/** Streams the body on, failing the upstream request (413) as soon as it passes the limit. */
async function* countedBody(
  source: AsyncIterable<Buffer>,
  limit: { max: number; rule: string },
): AsyncGenerator<Buffer> {
  let seen = 0
  for await (const chunk of source) {
    seen += chunk.length
    if (seen > limit.max) throw new BodyTooLarge(limit.max, limit.rule)
    yield chunk
  }
}

class BodyTooLarge extends Error {
  constructor(
    readonly max: number,
    readonly rule: string,
  ) {
    super(`request body over ${max} bytes`)
  }
}

class ClientGone extends Error {}
class DeadlineExceeded extends Error {}

declare module 'fastify' {
  interface FastifyRequest {
    /** The upstream origin the request went to, for the access log. */
    upstream?: string
  }
}
