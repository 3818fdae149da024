import type { OutgoingHttpHeaders } from 'node:http'
import { type Http2ServerRequest, constants as http2Constants } from 'node:http2'
import { Readable, type Transform } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { ErrorCode } from '../errors.js'
import type { Exchange } from '../pipeline/exchange.js'
import type { BodyLimit } from '../pipeline/guard.js'
import type { App } from '../policy/compile.js'
import type { UpstreamPools } from '../upstreams/pools.js'
import type { Upstream } from '../upstreams/target.js'
import { createEncoder, decideCompression } from './compression.js'
import { downstreamResponseHeaders, type ForwardedFacts, upstreamRequestHeaders } from './headers.js'
import { refuse } from './respond.js'

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

/** The policy setting behind an upstream failure, named in the log line. */
function ruleOf(error: unknown, code: ErrorCode): string {
  switch ((error as { code?: string }).code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return 'upstream.timeouts.headers'
    case 'UND_ERR_BODY_TIMEOUT':
      return 'upstream.timeouts.idle'
  }
  if (code === 'PCL_UPSTREAM_CONNECT_TIMEOUT') return 'upstream.timeouts.connect'
  return code === 'PCL_UPSTREAM_UNREACHABLE' ? 'upstream.targets' : 'upstream'
}

function hasBody(request: FastifyRequest): boolean {
  if (request.raw.httpVersionMajor === 2)
    return !(request.raw as unknown as Http2ServerRequest).stream.endAfterHeaders
  const { headers } = request.raw
  return headers['transfer-encoding'] !== undefined || (headers['content-length'] ?? '0') !== '0'
}

export interface ForwardPlan {
  facts: ForwardedFacts
  /** The headers sent to the client, from the app's (already stripped of hop-by-hop ones). */
  responseHeaders(fromApp: OutgoingHttpHeaders): OutgoingHttpHeaders
  /**
   * The app's targets: another one after a connect failure (retries), requests counted while they run
   * (least-connections) and their outcome recorded (passive health: connect errors and 5xx).
   */
  pools: UpstreamPools
}

/** Methods whose repetition has no further effect (RFC 9110 §9.2.2), retried only when nothing was sent. */
const idempotent = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

/** Failures where the request cannot have reached the app: the connection never opened. */
function neverConnected(error: Error): boolean {
  const code = (error as { code?: string }).code ?? (error.cause as { code?: string } | undefined)?.code
  return code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'EHOSTUNREACH'
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
  exchange: Exchange,
  first: Upstream,
  plan: ForwardPlan,
): FastifyReply {
  const app = exchange.app as App
  const { headers: headersTimeout, idle, upload } = app.upstream.timeouts
  const response = reply.raw
  let controller: Dispatcher.DispatchController | undefined
  let ended = false
  let uploading: NodeJS.Timeout | undefined
  /** A timeout ends the exchange: with a JSON answer if nothing was sent yet, else by cutting it. */
  const expire = (code: ErrorCode, rule: string, message: string) => {
    ended = true
    clearTimeout(deadline)
    clearTimeout(uploading)
    controller?.abort(new DeadlineExceeded())
    if (response.headersSent) {
      exchange.refuse(code, rule)
      abandon(response, new DeadlineExceeded(message))
      return
    }
    // The rest of an unread body would be taken for the next request.
    if (request.raw.httpVersionMajor === 1 && !bodyRead) reply.header('connection', 'close')
    refuse(reply, code, rule, message)
  }
  // `idle` bounds silence, not the exchange: every chunk of the request body or of the answer that
  // moves starts it over, so streams (SSE, long downloads, uploads) live as long as bytes move.
  const deadline = setTimeout(
    () => expire('PCL_UPSTREAM_TIMEOUT', 'upstream.timeouts.idle', `Nothing moved for ${idle} ms`),
    idle,
  )
  const moved = () => deadline.refresh()
  let bodyRead = false
  // A client that leaves (an HTTP/2 stream reset, a closed connection) takes its upstream request with
  // it, whether it leaves before the request went out, while it is being sent, or during the answer.
  let clientGone = false
  const leave = () => {
    clearTimeout(deadline)
    clearTimeout(uploading)
    if (ended) return
    clientGone = true
    if (!response.headersSent) reply.code(499)
    controller?.abort(new ClientGone())
  }
  if (hasLeft(request)) {
    leave()
    ended = true
    return reply.send()
  }
  // One client cannot hold more than its share of the pool's connections and queue.
  const clientPlace = plan.pools.admitClient(app, plan.facts.clientIp)
  if (!clientPlace) {
    ended = true
    clearTimeout(deadline)
    return refuse(
      reply,
      'PCL_UPSTREAM_BUSY',
      'upstream.maxPerClient',
      'This client has too many requests in flight',
    )
  }
  response.once('close', clientPlace)
  // Ahead of Fastify's own listeners, which log the request: its line must say 499. An HTTP/2 stream
  // reset makes the response emit 'finish' before 'close'.
  response.prependOnceListener('finish', leave)
  response.prependOnceListener('close', leave)
  const body = requestBody(request, response, exchange, {
    moved,
    read: () => {
      bodyRead = true
      clearTimeout(uploading)
    },
  })
  if (body === null) bodyRead = true
  else if (upload !== undefined)
    uploading = setTimeout(
      () =>
        expire(
          'PCL_REQUEST_TIMEOUT',
          'upstream.timeouts.upload',
          `The request body was not received within ${upload} ms`,
        ),
      upload,
    )
  const retriable = body === null && idempotent.has(request.method)
  let failed: Set<Upstream> | undefined

  const attempt = (upstream: Upstream) => {
    exchange.upstream = upstream.origin
    if (plan.pools.isSaturated(app, upstream)) {
      ended = true
      clearTimeout(deadline)
      refuse(reply, 'PCL_UPSTREAM_BUSY', 'upstream.maxQueue')
      return
    }
    plan.pools.begin(upstream)
    let finished = false
    const finish = (failure: boolean) => {
      if (finished) return
      finished = true
      plan.pools.end(app, upstream, failure)
    }
    const sentAt = performance.now()
    let serverError = false
    let encoder: Transform | undefined
    upstream.pool.dispatch(
      {
        path: exchange.target,
        method: request.method as Dispatcher.HttpMethod,
        headers: upstreamRequestHeaders(request.headers, plan.facts, { websocket: false, dropped: exchange }),
        body,
        headersTimeout,
        bodyTimeout: idle,
      },
      {
        onRequestStart(started) {
          controller = started
          if (clientGone) started.abort(new ClientGone())
        },
        onResponseStart(_controller, statusCode, headers) {
          serverError = statusCode >= 500
          exchange.upstreamMs = Math.round((performance.now() - sentAt) * 100) / 100
          if (ended) return
          reply.hijack()
          const answer = plan.responseHeaders(downstreamResponseHeaders(headers))
          const compression = decideCompression(app.compression, request, statusCode, answer)
          if (compression) {
            encoder = createEncoder(compression.encoding, app.compression)
            encoder.on('error', () => response.destroy())
            encoder.on('data', (chunk: Buffer) => {
              exchange.responseBytes = (exchange.responseBytes ?? 0) + chunk.length
            })
            encoder.pipe(response as unknown as NodeJS.WritableStream)
          }
          if (compression) exchange.responseHeaders = compression.headers
          response.writeHead(statusCode, compression?.headers ?? answer)
        },
        onResponseData(paused, chunk) {
          if (!encoder) exchange.responseBytes = (exchange.responseBytes ?? 0) + chunk.length
          moved()
          const sink = encoder ?? response
          if (!sink.write(chunk)) {
            paused.pause()
            sink.once('drain', () => {
              moved()
              paused.resume()
            })
          }
        },
        onResponseEnd() {
          finish(serverError)
          ended = true
          if (encoder) encoder.end()
          else response.end()
        },
        onResponseError(_controller, error) {
          // Passive health counts what says the target is down (it could not be connected to), not a
          // keep-alive connection it closed as a request went out, nor the client's doing.
          finish(neverConnected(error))
          if (ended) return
          if (error instanceof ClientGone || error.cause instanceof ClientGone) {
            ended = true
            return
          }
          if (response.headersSent) {
            ended = true
            const code = upstreamErrorCode(error)
            exchange.refuse(code, ruleOf(error, code))
            request.log.warn({ err: error, upstream: upstream.origin }, 'upstream response cut short')
            abandon(response, error)
            return
          }
          const cause = error instanceof BodyError ? error : (error.cause as unknown)
          if (cause instanceof MalformedBody) {
            ended = true
            refuseMalformed(request, reply, exchange, cause)
            return
          }
          if (cause instanceof BodyTooLarge) {
            ended = true
            refuse(
              reply,
              'PCL_BODY_TOO_LARGE',
              cause.rule,
              `The request body is larger than ${cause.max} bytes`,
            )
            return
          }
          failed ??= new Set()
          failed.add(upstream)
          const next =
            retriable && neverConnected(error) && failed.size <= app.upstream.retries
              ? plan.pools.pick(app, { ip: plan.facts.clientIp, headers: request.headers }, failed)?.upstream
              : undefined
          request.log.warn(
            { err: error, upstream: upstream.origin, retryOn: next?.origin },
            next
              ? 'upstream request failed before sending; retrying on another target'
              : 'upstream request failed',
          )
          if (next) return attempt(next)
          ended = true
          const code = upstreamErrorCode(error)
          refuse(reply, code, ruleOf(error, code))
        },
      },
    )
  }
  attempt(first)
  return reply
}

/**
 * An HTTP/1 client waiting for 100 Continue whose body was never asked for may still send it, or may
 * not: the connection cannot be reused safely after the answer, so it is closed.
 */
export function awaitsContinue(request: FastifyRequest, exchange: Exchange): boolean {
  return request.headers.expect?.toLowerCase() === '100-continue' && !exchange.bodyInvited
}

/**
 * Ends an answer already under way by closing its connection. Fastify writes the access line on the
 * response's 'finish' or 'error', never on a bare close, so the error is passed to it first.
 */
function abandon(response: FastifyReply['raw'], error: Error): void {
  if (response.listenerCount('error') > 0) response.emit('error', error)
  response.destroy()
}

function requestBody(
  request: FastifyRequest,
  response: FastifyReply['raw'],
  exchange: Exchange,
  progress: { moved(): void; read(): void },
): Readable | null {
  if (!hasBody(request)) return null
  // Every guard admitted the request, its declared length included: now the client may send the body.
  if (awaitsContinue(request, exchange)) {
    exchange.bodyInvited = true
    response.writeContinue()
  }
  const limit = exchange.bodyLimit
  const declared = request.headers['content-length']
  // HTTP/1: Node's parser holds a body to its declared length and fails it when the client leaves.
  const held = request.raw.httpVersionMajor === 1 && declared !== undefined
  return Readable.from(
    checkedBody(request.raw, {
      declared: held || declared === undefined ? undefined : Number(declared),
      limit: held ? undefined : limit,
      ...progress,
    }),
    { objectMode: false },
  )
}

/**
 * Streams the body on, failing the upstream request as soon as it passes the limit (413) or its
 * declared length, or when it ends short of that length or because the client reset its stream: an
 * HTTP/2 stream reset mid-body ends the request stream as if the body were complete, and RFC 9113
 * §8.1.1 calls a body whose length differs from its content-length malformed. So the upstream never
 * receives a complete request that the client did not send.
 */
async function* checkedBody(
  source: FastifyRequest['raw'],
  rules: { declared: number | undefined; limit: BodyLimit | undefined; moved(): void; read(): void },
): AsyncGenerator<Buffer> {
  let seen = 0
  for await (const chunk of source as AsyncIterable<Buffer>) {
    rules.moved()
    seen += chunk.length
    if (rules.declared !== undefined && seen > rules.declared)
      throw new MalformedBody('the request body is longer than its content-length')
    if (rules.limit && seen > rules.limit.max) throw new BodyTooLarge(rules.limit.max, rules.limit.rule)
    yield chunk
  }
  // HTTP/1 fails the body itself when the connection goes; HTTP/2 ends it as if complete.
  if (source.httpVersionMajor === 2 && hasLeft({ raw: source })) throw new ClientGone()
  if (rules.declared !== undefined && seen !== rules.declared)
    throw new MalformedBody('the request body is shorter than its content-length')
  rules.read()
}

/** Whether the client has already closed its stream or connection. */
function hasLeft(request: { raw: FastifyRequest['raw'] }): boolean {
  const raw = request.raw as FastifyRequest['raw'] & Partial<Pick<Http2ServerRequest, 'stream'>>
  if (raw.stream) return raw.stream.closed || raw.stream.destroyed || raw.stream.aborted
  return raw.socket?.destroyed ?? true
}

/** A malformed HTTP/2 request has its stream reset (PROTOCOL_ERROR); HTTP/1 gets a 400 and a closed connection. */
function refuseMalformed(
  request: FastifyRequest,
  reply: FastifyReply,
  exchange: Exchange,
  error: MalformedBody,
) {
  const stream = (request.raw as unknown as Partial<Http2ServerRequest>).stream
  if (!stream) {
    reply.header('connection', 'close')
    refuse(reply, 'PCL_BAD_REQUEST', 'request', `Malformed request: ${error.message}`)
    return
  }
  exchange.refuse('PCL_BAD_REQUEST', 'request')
  reply.code(400)
  stream.close(http2Constants.NGHTTP2_PROTOCOL_ERROR)
}

class BodyError extends Error {}

class BodyTooLarge extends BodyError {
  constructor(
    readonly max: number,
    readonly rule: string,
  ) {
    super(`request body over ${max} bytes`)
  }
}

class MalformedBody extends BodyError {}

class ClientGone extends BodyError {}
class DeadlineExceeded extends Error {}
