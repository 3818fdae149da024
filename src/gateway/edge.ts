import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { createSecureServer } from 'node:http2'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { Logger } from 'pino'
import { type ErrorCode, errorBody, errorStatus, rawHttpError } from '../errors.js'
import type { RateLimitStores } from '../guards/rate-limit.js'
import { canonicalIp } from '../net/ip.js'
import type { RecentActivity } from '../observe/dashboard.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { App, PemPair } from '../policy/compile.js'
import type { Settings } from '../settings.js'
import type { CertificateStore } from '../tls/certificates.js'
import { enforceDeadlines } from './connection-deadlines.js'
import type { ConnectionTracker } from './connections.js'
import { peerAddress } from './front-door.js'
import { forwardedFacts, forwardedProto } from './headers.js'
import { answerHeaders, applyMode, runGuards, type Verdict, withAsyncGuards } from './pipeline.js'
import { awaitsContinue, forwardHttp } from './proxy.js'
import { decideRoute, type HostRouter, hostnameOf, redirectBehindTerminator } from './routing.js'
import { serveStatic, staticFor } from './static-files.js'
import type { UpstreamPools } from './upstreams.js'
import type { Reservation, WebSocketRelay } from './websocket.js'

export interface EdgeContext {
  readonly log: Logger
  /** Listener-wide limits: they act before any app is known. */
  readonly listener: Pick<Settings, 'headersTimeout' | 'keepAliveTimeout' | 'logHeaders' | 'logRedact'>
  readonly rateLimits: RateLimitStores
  readonly metrics: GatewayMetrics
  router(): HostRouter
  httpsPort(): number
  readonly pools: UpstreamPools
  readonly relay: WebSocketRelay
  readonly connections: ConnectionTracker
  /** The HTTP-01 answer for a token, if an ACME order (on any replica) is waiting for it. */
  acmeHttpChallenge(token: string): Promise<string | undefined>
  /** The last minutes of traffic, for the dashboard. */
  readonly activity: RecentActivity
}

export interface TlsSettings {
  certificates: CertificateStore
  /** Served when the client's SNI names no app. */
  placeholder: PemPair
}

interface PendingUpgrade {
  socket: Duplex
  head: Buffer
  /** Taken when the guards admit the upgrade. */
  reservation?: Reservation
}

const pendingUpgrades = new WeakMap<IncomingMessage, PendingUpgrade>()

/** The policy generation's router a request arrived under (a symbol property: cheaper than a WeakMap). */
const routerOfRequest = Symbol('router')

/** RFC 8555 §8.3: the CA fetches `http://<host>/.well-known/acme-challenge/<token>` on port 80. */
const acmeChallengePath = '/.well-known/acme-challenge/'

declare module 'fastify' {
  interface FastifyRequest {
    gatewayApp: App | null
    clientIp: string
    /** What the guards decided, once an app matched. */
    verdict: Verdict | null
    /** Headers the guards add to the answer, whatever it is (CORS grant, Vary). */
    addedHeaders: OutgoingHttpHeaders | undefined
    /** Set when the gateway itself answered: which code and which policy rule decided. */
    rejection: { code: ErrorCode; rule: string } | null
    /** In report-only mode: the refusal that was not enforced. */
    wouldBlock: { code: ErrorCode; rule: string } | null
  }
}

/** What HTTP/1 and HTTP/2 requests both have. */
type RawRequest = Pick<IncomingMessage, 'headers' | 'socket'>

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The Fastify app behind one edge listener: plain HTTP (redirects, and apps with `tls.mode: off`) or
 * TLS (HTTP/2 with HTTP/1.1 fallback, certificate chosen by SNI). Both route with `decideRoute`, run
 * the app's guards with `runGuards` and proxy HTTP and WebSocket traffic the same way. WebSocket
 * upgrades go through the same hook as requests, so every guard decides an upgrade before it happens.
 */
export function createEdge(context: EdgeContext, tls?: TlsSettings): FastifyInstance {
  const secure = tls !== undefined
  /** Requests a trusted TLS-terminating balancer says arrived over HTTPS (tls.mode: off apps). */
  const overHttps = new WeakSet<object>()
  const clientSecure = (request: FastifyRequest) => secure || overHttps.has(request.raw)
  // A request reads the policy generation once, when it arrives: a reload in between cannot split it.
  const routerFor = (raw: object): HostRouter => {
    const held = raw as { [routerOfRequest]?: HostRouter }
    held[routerOfRequest] ??= context.router()
    return held[routerOfRequest]
  }
  const common = {
    loggerInstance: context.log,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: (raw: RawRequest) => trustedRequestId(routerFor(raw), raw) ?? randomUUID(),
    requestIdHeader: false as const,
    return503OnClosing: false,
    forceCloseConnections: false,
    clientErrorHandler: answerClientError(context.log),
    // Fastify's router refuses some targets (bad UTF-8) before any hook runs; answer those like ours.
    frameworkErrors: ((error: Error, _request: FastifyRequest, reply: FastifyReply) =>
      reject(reply, 'PCL_BAD_REQUEST', 'path', `Invalid request: ${error.message}`)) as never,
  }
  // Both servers hand `Expect: 100-continue` requests to the same handler ('checkContinue'): Node would
  // otherwise answer 100 before any guard ran, inviting a body that is then refused (RFC 9110 §10.1.1).
  // The proxy sends the 100 once every guard admitted the request and its body is about to go upstream.
  // Fastify types an HTTP/2 instance apart from an HTTP/1 one; at runtime both hand us compatible
  // request/response objects, and the hooks below only use what both have.
  const edge = (tls
    ? Fastify({
        ...common,
        http2: true,
        serverFactory: (handler) => {
          const server = createSecureServer(
            {
              allowHTTP1: true,
              // As nginx: one client cannot open thousands of streams (each an upstream request) at once.
              settings: { maxConcurrentStreams: 128 },
              minVersion: 'TLSv1.2',
              cert: tls.placeholder.cert,
              key: tls.placeholder.key,
              SNICallback: (servername, done) =>
                done(null, tls.certificates.contextFor(context.router().find(servername)?.id)),
            },
            handler,
          )
          server.on('checkContinue', handler)
          // HTTP/2 CONNECT (a tunnel) is not proxied: a JSON refusal rather than Node's bare 405.
          server.on('connect', (_request, response) => {
            response.writeHead(errorStatus('PCL_BAD_REQUEST'), {
              'content-type': 'application/json; charset=utf-8',
            })
            response.end(
              JSON.stringify(errorBody('PCL_BAD_REQUEST', randomUUID(), 'CONNECT is not supported')),
            )
          })
          return server
        },
      })
    : Fastify({
        ...common,
        serverFactory: (handler) => {
          const server = createServer(handler)
          server.on('checkContinue', handler)
          return server
        },
      })) as unknown as FastifyInstance

  enforceDeadlines(edge.server, secure, context.listener, answerClientError(context.log))

  edge.decorateRequest('gatewayApp', null)
  edge.decorateRequest('clientIp', '')
  edge.decorateRequest('verdict', null)
  edge.decorateRequest('addedHeaders', undefined)
  edge.decorateRequest('rejection', null)
  edge.decorateRequest('wouldBlock', null)
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
    const peer = peerOf(request.raw)
    request.clientIp = peer
    const upgrade = pendingUpgrades.has(request.raw)
    if (!upgrade) context.connections.requestStarted(request.raw, reply.raw)
    if (!secure && request.url.startsWith(acmeChallengePath)) {
      const answer = await context
        .acmeHttpChallenge(request.url.slice(acmeChallengePath.length))
        .catch(() => undefined)
      if (answer !== undefined) return reply.code(200).type('text/plain').send(answer)
    }
    // RFC 9113 §8.3.1: a Host that names another server than :authority makes the request malformed.
    const authority = request.headers[':authority']
    if (
      authority &&
      request.headers.host &&
      hostnameOf(String(authority)) !== hostnameOf(request.headers.host)
    )
      return reject(
        reply,
        'PCL_BAD_REQUEST',
        'request',
        'The Host header and :authority name different hosts',
      )
    const socket = request.raw.socket as TLSSocket
    const route = decideRoute(
      routerFor(request.raw),
      {
        host: request.host,
        url: request.url,
        ...(secure
          ? { tls: { servername: socket.servername || undefined, protocol: socket.getProtocol() } }
          : {}),
      },
      context.httpsPort(),
    )
    if (route.kind === 'redirect') return reply.code(308).header('location', route.location).send()
    if (route.kind === 'reject') {
      request.gatewayApp = route.app ?? null
      return reject(reply, route.code, route.rule, route.message)
    }
    const app = route.app
    request.gatewayApp = app
    if (app.healthPath !== undefined && request.url === app.healthPath) {
      const healthy = context.pools.healthyCount(app.id)
      return reply
        .code(healthy > 0 ? 200 : 503)
        .header('cache-control', 'no-store')
        .send({ status: healthy > 0 ? 'healthy' : 'unhealthy', app: app.id, healthyTargets: healthy })
    }
    if (!secure && app.tls.mode === 'off') {
      // Behind a TLS-terminating balancer that the app trusts, its forwarded protocol is the client's
      // (the health path above answers the balancer's own probes whatever they say).
      const viaProto = app.guards.clientIp.isTrusted(peer) ? forwardedProto(request.headers) : undefined
      const location = redirectBehindTerminator(app, {
        host: request.host,
        url: request.url,
        forwardedProto: viaProto,
      })
      if (location) return reply.code(308).header('location', location).send()
      if (viaProto === 'https') overHttps.add(request.raw)
    }
    const input = {
      method: request.method,
      url: request.url,
      headers: request.headers,
      rawHeaders: request.raw.rawHeaders,
      peer,
      upgrade,
      liveWebSockets: (ip: string) => context.relay.live(app.id, ip),
    }
    const verdict = await withAsyncGuards(app, runGuards(app, input), input, context.rateLimits)
    request.verdict = verdict
    request.clientIp = verdict.identity.ip
    const { decision, wouldBlock } = applyMode(app, verdict.decision)
    request.wouldBlock = wouldBlock ?? null
    if (decision.kind === 'allow') {
      request.addedHeaders = decision.responseHeaders
      const pending = pendingUpgrades.get(request.raw)
      if (pending) {
        const room = app.guards.websocket.checkCapacity(context.relay.live(app.id, verdict.identity.ip))
        if (room.kind === 'deny' && app.mode === 'enforce')
          return reject(reply, room.code, room.rule, room.message)
        pending.reservation = context.relay.reserve(app.id, verdict.identity.ip)
      }
    } else if (decision.kind === 'answer') {
      request.addedHeaders = decision.headers
      request.rejection = null
      return reply.code(decision.status).send()
    } else {
      request.addedHeaders = decision.headers
      return reject(reply, decision.code, decision.rule, decision.message)
    }
  })

  /** Headers of an answer: the app's (none for the gateway's own), edited by the policy, plus the edge's. */
  const finalHeaders = (request: FastifyRequest, fromApp: OutgoingHttpHeaders): OutgoingHttpHeaders => {
    const app = request.gatewayApp
    const headers = app ? answerHeaders(app, fromApp, request.addedHeaders, clientSecure(request)) : fromApp
    // The id the upstream got and the log line carries, so a user's report can be matched to both.
    headers['x-request-id'] = request.id
    if (request.raw.httpVersionMajor === 1 && (context.connections.isDraining || awaitsContinue(request)))
      headers.connection = 'close'
    return headers
  }

  edge.addHook('onSend', async (request, reply) => {
    reply.headers(finalHeaders(request, {}))
  })

  edge.addHook('onResponse', async (request, reply) => {
    logAccess(request, reply, reply.statusCode, reply.elapsedTime, context)
  })

  // Fastify routes every method it knows to the proxy below; others (lower case, made up) end here.
  edge.setNotFoundHandler((request, reply) =>
    reject(reply, 'PCL_BAD_REQUEST', 'request', `The method ${request.method} is not supported`),
  )

  edge.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    const clientFault = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
    if (!clientFault) request.log.error({ err: error }, 'request failed inside the gateway')
    return clientFault
      ? reject(reply, 'PCL_BAD_REQUEST', 'request', error.message)
      : reject(reply, 'PCL_INTERNAL', 'gateway')
  })

  edge.route({
    method: edge.supportedMethods,
    url: '/*',
    handler: async (request, reply) => {
      const app = request.gatewayApp as App
      const verdict = request.verdict as Verdict
      const upgrade = pendingUpgrades.get(request.raw)
      const files = upgrade ? undefined : staticFor(app, verdict.target ?? request.url)
      if (files) return serveStatic(request, reply, files, (own) => finalHeaders(request, own), reject)
      const picked = context.pools.pick(app, { ip: verdict.identity.ip, headers: request.headers })
      if (!picked) {
        upgrade?.reservation?.release()
        return reject(
          reply,
          'PCL_NO_HEALTHY_UPSTREAM',
          'upstream.targets',
          `No healthy target for app ${app.id}`,
        )
      }
      const upstream = picked.upstream
      if (picked.setCookie) {
        const cookie = clientSecure(request) ? `${picked.setCookie}; Secure` : picked.setCookie
        request.addedHeaders = { ...request.addedHeaders, 'set-cookie': [cookie] }
      }
      const facts = forwardedFacts({
        identity: verdict.identity,
        headers: request.headers,
        host: request.host,
        secure,
        requestId: request.id,
      })
      const target = verdict.target ?? request.url
      if (!upgrade) {
        return forwardHttp(request, reply, app, upstream, {
          target,
          facts,
          bodyLimit: verdict.bodyLimit,
          responseHeaders: (fromApp) => finalHeaders(request, fromApp),
          reject,
          pools: context.pools,
        })
      }
      if (!isWebSocketHandshake(request)) {
        upgrade.reservation?.release()
        return reject(
          reply,
          'PCL_BAD_REQUEST',
          'request',
          'Only WebSocket upgrades (GET, Upgrade: websocket, a valid Sec-WebSocket-Key, version 13) are supported',
        )
      }
      reply.hijack()
      request.upstream = upstream.origin
      const started = performance.now()
      const reservation = upgrade.reservation ?? context.relay.reserve(app.id, verdict.identity.ip)
      // An open WebSocket counts on its target for least-connections until the client side closes.
      let unreachable = false
      context.pools.begin(upstream)
      upgrade.socket.once('close', () => context.pools.end(app, upstream, unreachable))
      const outcome = await context.relay.relay(
        {
          request: request.raw,
          socket: upgrade.socket,
          head: upgrade.head,
          target,
          reservation,
          responseHeaders: (fromApp) => finalHeaders(request, fromApp),
        },
        app,
        upstream,
        facts,
      )
      unreachable =
        outcome.code === 'PCL_UPSTREAM_UNREACHABLE' || outcome.code === 'PCL_UPSTREAM_CONNECT_TIMEOUT'
      if (outcome.code) request.rejection = { code: outcome.code, rule: 'upstream' }
      logAccess(request, reply, outcome.status, performance.now() - started, context)
    },
  })

  return edge
}

/** RFC 6455 §4.2.1: checked before the upstream is asked, so a handshake the relay would refuse costs it nothing. */
function isWebSocketHandshake(request: FastifyRequest): boolean {
  const { headers } = request
  return (
    request.method === 'GET' &&
    headers.upgrade?.toLowerCase() === 'websocket' &&
    /^[+/0-9A-Za-z]{22}==$/.test(String(headers['sec-websocket-key'] ?? '')) &&
    headers['sec-websocket-version'] === '13'
  )
}

/** Requests Node's parser refuses (timeouts, oversize or malformed heads) get a JSON answer too. */
function answerClientError(log: Logger) {
  return (error: NodeJS.ErrnoException, socket: Duplex & { remoteAddress?: string }) => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return
    const code: ErrorCode =
      error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 'PCL_REQUEST_TIMEOUT'
        : error.code === 'HPE_HEADER_OVERFLOW'
          ? 'PCL_HEADERS_TOO_LARGE'
          : 'PCL_BAD_REQUEST'
    const requestId = randomUUID()
    log.info(
      {
        reqId: requestId,
        status: errorStatus(code),
        code,
        rule: 'listener',
        reason: error.code,
        clientIp: canonicalIp(socket.remoteAddress),
      },
      'request',
    )
    if (socket.writable) socket.end(rawHttpError(code, requestId))
    else socket.destroy()
  }
}

/** A well-formed X-Request-Id is kept when it comes from a proxy the app trusts, so traces join up. */
function trustedRequestId(router: HostRouter, raw: RawRequest): string | undefined {
  const id = raw.headers['x-request-id']
  if (typeof id !== 'string' || !requestIdPattern.test(id)) return undefined
  const host = raw.headers.host ?? (raw.headers[':authority'] as string | undefined)
  const app = router.find(host)
  return app?.guards.clientIp.isTrusted(peerOf(raw)) ? id : undefined
}

/** The connection's peer; for HTTP/2, through the session's socket (the request's is a proxy object). */
function peerOf(raw: RawRequest): string {
  const session = (raw as { stream?: { session?: { socket?: Socket } } }).stream?.session
  return peerAddress(session?.socket ?? raw.socket)
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
function logAccess(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  durationMs: number,
  context: Pick<EdgeContext, 'metrics' | 'listener' | 'activity'>,
): void {
  const refusal = request.rejection ?? request.wouldBlock
  const path = request.url.split('?', 1)[0] ?? '/'
  context.activity.record(
    request.gatewayApp?.id,
    refusal
      ? {
          status,
          code: refusal.code,
          rule: refusal.rule,
          enforced: request.rejection !== null,
          method: request.method,
          path: path.length > 200 ? `${path.slice(0, 200)}…` : path,
          clientIp: request.clientIp,
        }
      : undefined,
  )
  context.metrics.observeRequest(
    request.gatewayApp?.id,
    status,
    durationMs / 1000,
    request.rejection ?? undefined,
    request.wouldBlock ?? undefined,
    request.upstreamMs === undefined ? undefined : request.upstreamMs / 1000,
  )
  const queryStart = request.url.indexOf('?')
  const declaredLength = request.raw.method === 'HEAD' ? undefined : Number(reply.getHeader('content-length'))
  request.log.info(
    {
      app: request.gatewayApp?.id,
      host: request.host,
      method: request.method,
      path: queryStart >= 0 ? request.url.slice(0, queryStart) : request.url,
      status,
      bytes: request.responseBytes ?? (Number.isFinite(declaredLength) ? declaredLength : undefined),
      durationMs: Math.round(durationMs * 100) / 100,
      clientIp: request.clientIp,
      clientIpVia: request.verdict?.identity.via,
      upstream: request.upstream,
      upstreamMs: request.upstreamMs,
      httpVersion: request.raw.httpVersion,
      tlsVersion: (request.raw.socket as TLSSocket).getProtocol?.() ?? undefined,
      headers: loggedHeaders(request.headers, context.listener),
      websocket: pendingUpgrades.has(request.raw) || undefined,
      code: request.rejection?.code,
      rule: request.rejection?.rule,
      wouldBlock: request.wouldBlock ?? undefined,
    },
    'request',
  )
}

/** The request headers `--log-headers` names, with the `--log-redact` ones masked; undefined when none. */
function loggedHeaders(
  headers: FastifyRequest['headers'],
  settings: Pick<Settings, 'logHeaders' | 'logRedact'>,
): Record<string, string> | undefined {
  if (settings.logHeaders.length === 0) return undefined
  const logged: Record<string, string> = {}
  for (const name of settings.logHeaders) {
    const value = headers[name]
    if (value === undefined) continue
    logged[name] = settings.logRedact.includes(name) ? '[redacted]' : String(value)
  }
  return logged
}
