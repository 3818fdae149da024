import { randomUUID } from 'node:crypto'
import { type IncomingMessage, type OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { Logger } from 'pino'
import { type ErrorCode, errorBody, errorStatus } from '../errors.js'
import { canonicalIp } from '../net/ip.js'
import type { App, PemPair } from '../policy/compile.js'
import type { CertificateStore } from '../tls/certificates.js'
import type { ConnectionTracker } from './connections.js'
import type { ForwardedFacts } from './headers.js'
import { forwardHttp, type UpstreamPools } from './proxy.js'
import { decideRoute, type HostRouter } from './routing.js'
import type { WebSocketRelay } from './websocket.js'

export interface EdgeContext {
  readonly log: Logger
  router(): HostRouter
  httpsPort(): number
  readonly pools: UpstreamPools
  readonly relay: WebSocketRelay
  readonly connections: ConnectionTracker
}

export interface TlsSettings {
  certificates: CertificateStore
  /** Served when the client's SNI names no app. */
  placeholder: PemPair
}

interface PendingUpgrade {
  socket: Duplex
  head: Buffer
}

const pendingUpgrades = new WeakMap<IncomingMessage, PendingUpgrade>()

declare module 'fastify' {
  interface FastifyRequest {
    gatewayApp: App | null
    clientIp: string
    /** Set when the gateway itself answered: which code and which policy rule decided. */
    rejection: { code: ErrorCode; rule: string } | null
  }
}

/**
 * The Fastify app behind one edge listener: plain HTTP (redirects, and apps with `tls.mode: off`) or
 * TLS (HTTP/2 with HTTP/1.1 fallback, certificate chosen by SNI). Both route with `decideRoute` and
 * proxy HTTP and WebSocket traffic the same way; WebSocket upgrades go through the same hooks as
 * requests, so every check made on a request is made on an upgrade before it happens.
 */
export function createEdge(context: EdgeContext, tls?: TlsSettings): FastifyInstance {
  const common = {
    loggerInstance: context.log,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    requestIdHeader: false as const,
    return503OnClosing: false,
    forceCloseConnections: false,
  }
  // Fastify types an HTTP/2 instance apart from an HTTP/1 one; at runtime both hand us compatible
  // request/response objects, and the hooks below only use what both have.
  const edge = (tls
    ? Fastify({
        ...common,
        http2: true,
        https: {
          allowHTTP1: true,
          minVersion: 'TLSv1.2',
          cert: tls.placeholder.cert,
          key: tls.placeholder.key,
          SNICallback: (servername, done) =>
            done(null, tls.certificates.contextFor(context.router().find(servername)?.id)),
        },
      })
    : Fastify(common)) as unknown as FastifyInstance

  const secure = tls !== undefined
  edge.decorateRequest('gatewayApp', null)
  edge.decorateRequest('clientIp', '')
  edge.decorateRequest('rejection', null)
  context.connections.watch(edge.server)
  edge.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy())
    context.connections.release(socket as never)
    pendingUpgrades.set(request, { socket, head })
    const response = new ServerResponse(request)
    response.assignSocket(socket as never)
    response.once('finish', () => socket.destroy())
    edge.routing(request, response)
  })

  // Bodies are streamed to the upstream untouched: no parsing, no buffering.
  edge.removeAllContentTypeParsers()
  edge.addContentTypeParser('*', (_request, _payload, done) => done(null))

  edge.addHook('onRequest', async (request, reply) => {
    request.clientIp = canonicalIp(request.raw.socket.remoteAddress)
    if (!pendingUpgrades.has(request.raw)) context.connections.requestStarted(request.raw, reply.raw)
    const socket = request.raw.socket as TLSSocket
    const decision = decideRoute(
      context.router(),
      {
        host: request.host,
        url: request.url,
        ...(secure
          ? { tls: { servername: socket.servername || undefined, protocol: socket.getProtocol() } }
          : {}),
      },
      context.httpsPort(),
    )
    if (decision.kind === 'redirect') return reply.code(308).header('location', decision.location).send()
    request.gatewayApp = decision.app ?? null
    if (decision.kind === 'reject') return reject(reply, decision.code, decision.rule, decision.message)
  })

  /** Headers the gateway adds to every answer, proxied or its own. */
  const gatewayHeaders = (request: FastifyRequest): OutgoingHttpHeaders => {
    const headers: OutgoingHttpHeaders = {}
    const hsts = request.gatewayApp?.hstsHeader
    if (secure && hsts) headers['strict-transport-security'] = hsts
    if (context.connections.isDraining && request.raw.httpVersionMajor === 1) headers.connection = 'close'
    return headers
  }

  edge.addHook('onSend', async (request, reply) => {
    reply.headers(gatewayHeaders(request))
  })

  edge.addHook('onResponse', async (request, reply) => {
    logAccess(request, reply.statusCode, reply.elapsedTime)
  })

  edge.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    const clientFault = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
    if (!clientFault)
      request.log.error({ err: error, reqId: request.id }, 'request failed inside the gateway')
    return clientFault
      ? reject(reply, 'PCL_BAD_REQUEST', 'request', error.message)
      : reject(reply, 'PCL_INTERNAL', 'gateway')
  })

  edge.route({
    method: edge.supportedMethods,
    url: '/*',
    handler: async (request, reply) => {
      const app = request.gatewayApp as App
      const upstream = context.pools.pick(app)
      const facts: ForwardedFacts = {
        clientIp: request.clientIp,
        proto: secure ? 'https' : 'http',
        host: request.host,
        requestId: request.id,
      }
      const upgrade = pendingUpgrades.get(request.raw)
      if (!upgrade) return forwardHttp(request, reply, app, upstream, facts, gatewayHeaders(request), reject)
      if (request.method !== 'GET' || request.headers.upgrade?.toLowerCase() !== 'websocket') {
        return reject(
          reply,
          'PCL_BAD_REQUEST',
          'request',
          'Only WebSocket upgrades (GET, Upgrade: websocket) are supported',
        )
      }
      reply.hijack()
      request.upstream = upstream.origin
      const started = performance.now()
      const outcome = await context.relay.relay(
        request.raw,
        upgrade.socket,
        upgrade.head,
        app,
        upstream,
        facts,
      )
      if (outcome.code) request.rejection = { code: outcome.code, rule: 'upstream' }
      logAccess(request, outcome.status, performance.now() - started)
    },
  })

  return edge
}

/** Answers with the JSON error body and remembers which rule decided, for the access log. */
export function reject(
  reply: FastifyReply,
  code: ErrorCode,
  rule = 'upstream',
  message?: string,
): FastifyReply {
  reply.request.rejection = { code, rule }
  return reply
    .code(errorStatus(code))
    .type('application/json; charset=utf-8')
    .send(errorBody(code, reply.request.id, message))
}

/** One line per request; fields are documented in the README and stable. */
function logAccess(request: FastifyRequest, status: number, durationMs: number): void {
  const queryStart = request.url.indexOf('?')
  request.log.info(
    {
      app: request.gatewayApp?.id,
      host: request.host,
      method: request.method,
      path: queryStart >= 0 ? request.url.slice(0, queryStart) : request.url,
      status,
      durationMs: Math.round(durationMs * 100) / 100,
      clientIp: request.clientIp,
      upstream: request.upstream,
      httpVersion: request.raw.httpVersion,
      websocket: pendingUpgrades.has(request.raw) || undefined,
      code: request.rejection?.code,
      rule: request.rejection?.rule,
    },
    'request',
  )
}
