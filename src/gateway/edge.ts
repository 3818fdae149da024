import { createHash, randomUUID } from 'node:crypto'
import {
  createServer,
  type Server as HttpServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http'
import { createSecureServer, type Http2SecureServer, type Http2Session, type Http2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { Logger } from 'pino'
import { type ErrorCode, errorBody, errorStatus, rawHttpError } from '../errors.js'
import { canonicalIp } from '../net/ip.js'
import { defaultTlsProfile, type TlsProfile } from '../net/tls-profiles.js'
import type { RecentActivity } from '../observe/dashboard.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import { decide } from '../pipeline/decide.js'
import { Exchange } from '../pipeline/exchange.js'
import type { GuardServices, RateLimitStores } from '../pipeline/guard.js'
import type { App, PemPair } from '../policy/compile.js'
import type { Settings } from '../settings.js'
import type { CertificateStore } from '../tls/certificates.js'
import type { UpstreamPools } from '../upstreams/pools.js'
import { accessLineWriter, logAccess } from './access-log.js'
import { enforceDeadlines } from './connection-deadlines.js'
import type { ConnectionTracker } from './connections.js'
import { peerAddress } from './front-door.js'
import {
  afterTheReadSettles,
  boundUploadWindows,
  limitStreamResets,
  maxConcurrentStreams,
  startingStreamWindow,
} from './h2-sessions.js'
import { awaitsContinue, forwardHttp } from './proxy.js'
import { refuse } from './respond.js'
import type { HostRouter, TlsFacts } from './routing.js'
import { serveStatic } from './static-files.js'
import type { Reservation, WebSocketRelay } from './websocket.js'

export interface EdgeContext {
  readonly log: Logger
  /** Listener-wide limits: they act before any app is known. */
  readonly listener: Pick<
    Settings,
    | 'headersTimeout'
    | 'keepAliveTimeout'
    | 'h2StreamWindow'
    | 'h2ConnectionWindow'
    | 'logHeaders'
    | 'logResponseHeaders'
    | 'logRedact'
  >
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

/** An edge listener: its Fastify app and the Node servers the front door hands connections to. */
export interface Edge {
  readonly fastify: FastifyInstance
  /**
   * The server for connections made with this TLS profile (TLS only; plain HTTP has one server): made
   * the first time a profile is asked for, with the same handler and wiring as every other.
   */
  serverFor(profile?: TlsProfile): HttpServer | Http2SecureServer
  /** Session-ticket keys for every TLS server, present and future: a ticket opens on any of them. */
  setTicketKeys(key: Buffer): void
}

type RequestHandler = (request: IncomingMessage, response: ServerResponse) => void

interface PendingUpgrade {
  socket: Duplex
  head: Buffer
  /** Taken when the guards admit the upgrade. */
  reservation?: Reservation
}

/**
 * What the listener knows of a raw request before Fastify wraps it (symbol properties: cheaper than
 * WeakMaps): the policy generation's router it arrived under, read once for the request id, the
 * routing and the guards; and for an upgrade, its socket.
 */
const routerOfRequest = Symbol('router')
const upgradeOfRequest = Symbol('upgrade')
interface HeldByRaw {
  [routerOfRequest]?: HostRouter
  [upgradeOfRequest]?: PendingUpgrade
}

/** RFC 8555 §8.3: the CA fetches `http://<host>/.well-known/acme-challenge/<token>` on port 80. */
const acmeChallengePath = '/.well-known/acme-challenge/'

/** What HTTP/1 and HTTP/2 requests both have. */
type RawRequest = Pick<IncomingMessage, 'headers' | 'socket'>

/** The key of the profile of the server that accepted a TLS connection, set when its handshake ends. */
const profileOfSocket = Symbol('tlsProfile')
type ProfiledSocket = TLSSocket & { [profileOfSocket]?: string }

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The Fastify app behind one edge listener: plain HTTP (redirects, and apps with `tls.mode: off`) or
 * TLS (HTTP/2 with HTTP/1.1 fallback, certificate chosen by SNI). Each request gets an exchange,
 * `decide()` says what happens to it, and this turns the outcome into a response: the same for HTTP
 * and WebSocket traffic. Upgrades go through the same hook as requests, so every guard decides an
 * upgrade before it happens.
 */
export function createEdge(context: EdgeContext, tls?: TlsSettings): Edge {
  const secure = tls !== undefined
  // A request reads the policy generation once, when it arrives: a reload in between cannot split it.
  const routerFor = (raw: object): HostRouter => {
    const held = raw as HeldByRaw
    held[routerOfRequest] ??= context.router()
    return held[routerOfRequest]
  }
  const writeAccessLine = accessLineWriter(context.log)
  const services: GuardServices = {
    rateLimits: context.rateLimits,
    liveWebSockets: (scope, ip) => context.relay.live(scope, ip),
  }
  // The exchange is made when Fastify's first hook runs, or (for a target its router refused) when
  // the refusal is answered: every request that gets an answer has one.
  const exchangeOf = (request: FastifyRequest): Exchange => {
    request.exchange ??= new Exchange(
      {
        id: request.id,
        method: request.method,
        url: request.url,
        host: request.host,
        headers: request.headers,
        rawHeaders: request.raw.rawHeaders,
        peer: peerOf(request.raw),
        upgrade: (request.raw as HeldByRaw)[upgradeOfRequest] !== undefined,
        ...(secure ? { tls: tlsOf(request.raw) } : {}),
      },
      routerFor(request.raw),
      services,
    )
    return request.exchange
  }
  const answerClientErrors = answerClientError(context.log)
  const common = {
    loggerInstance: context.log,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: (raw: RawRequest) => trustedRequestId(routerFor(raw), raw) ?? randomUUID(),
    requestIdHeader: false as const,
    return503OnClosing: false,
    forceCloseConnections: false,
    clientErrorHandler: answerClientErrors,
    // Fastify's router refuses some targets (bad UTF-8) before any hook runs; answer those like ours.
    frameworkErrors: ((error: Error, request: FastifyRequest, reply: FastifyReply) => {
      exchangeOf(request)
      return refuse(reply, 'PCL_BAD_REQUEST', 'path', `Invalid request: ${error.message}`)
    }) as never,
  }
  // Fastify's request handler, handed to the first server; every later one (a TLS profile's) gets it too.
  let handler: RequestHandler | undefined
  const makeServer = (profile: TlsProfile): HttpServer | Http2SecureServer =>
    tls ? secureServer(tls, profile, context, handler as RequestHandler) : createServer(handler)
  const serverFactory = (given: RequestHandler) => {
    handler = tls ? afterTheReadSettles(given) : given
    return makeServer(defaultTlsProfile)
  }
  // Fastify types an HTTP/2 instance apart from an HTTP/1 one; at runtime both hand us compatible
  // request/response objects, and the hooks below only use what both have.
  const edge = (tls
    ? Fastify({ ...common, http2: true, serverFactory: serverFactory as never })
    : Fastify({ ...common, serverFactory: serverFactory as never })) as unknown as FastifyInstance

  /** Everything a server needs besides its options, the same for each: one place, applied to each. */
  const wire = (server: HttpServer | Http2SecureServer, profile: TlsProfile) => {
    // `Expect: 100-continue` requests go to the same handler: Node would otherwise answer 100 before any
    // guard ran, inviting a body that is then refused (RFC 9110 §10.1.1). The proxy sends the 100 once
    // every guard admitted the request and its body is about to go upstream.
    server.on('checkContinue', handler as RequestHandler)
    // CONNECT (a tunnel) is not proxied: a JSON refusal rather than Node's bare 405 or a closed socket.
    server.on('connect', refuseConnect)
    if (secure) {
      server.on('secureConnection', (socket: ProfiledSocket) => {
        socket[profileOfSocket] = profile.key
      })
      // Node keeps a session's own receive window at 64 KiB whatever the stream windows are: every
      // upload would then move one window per round trip. Unread data is bounded by the stream windows.
      server.on('session', (session: Http2Session) => {
        session.setLocalWindowSize(context.listener.h2ConnectionWindow)
        const refused = new WeakSet<Http2Stream>()
        boundUploadWindows(
          session,
          { streamWindow: context.listener.h2StreamWindow, budget: context.listener.h2ConnectionWindow },
          refused,
        )
        limitStreamResets(
          session,
          (resets) => {
            context.metrics.rapidResetSessionClosed()
            context.log.warn(
              { clientIp: session.socket ? peerAddress(session.socket as Socket) : undefined, resets },
              'HTTP/2 session closed for resetting too many streams (GOAWAY ENHANCE_YOUR_CALM)',
            )
          },
          refused,
        )
      })
    }
    enforceDeadlines(server, secure, context.listener, answerClientErrors)
    context.connections.watch(server)
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy())
      context.connections.release(socket as never)
      ;(request as HeldByRaw)[upgradeOfRequest] = { socket, head }
      const response = new ServerResponse(request)
      response.assignSocket(socket as never)
      response.once('finish', () => socket.destroy())
      edge.routing(request, response)
    })
  }
  const first = edge.server as unknown as HttpServer | Http2SecureServer
  wire(first, defaultTlsProfile)
  const servers: Pick<Edge, 'serverFor' | 'setTicketKeys'> = secure
    ? profileServers(first as Http2SecureServer, (profile) => {
        const server = makeServer(profile) as Http2SecureServer
        wire(server, profile)
        // Fastify answers client errors on the server it was given; the others get the same answer.
        server.on('clientError', answerClientErrors)
        context.log.info({ profile: profile.name }, 'HTTPS server made for a TLS profile')
        return server
      })
    : { serverFor: () => first, setTicketKeys: () => {} }

  edge.decorateRequest('exchange', null)

  // Bodies are streamed to the upstream untouched: no parsing, no buffering.
  edge.removeAllContentTypeParsers()
  edge.addContentTypeParser('*', (_request, _payload, done) => done(null))

  edge.addHook('onRequest', async (request, reply) => {
    const exchange = exchangeOf(request)
    if (!exchange.upgrade) context.connections.requestStarted(request.raw, reply.raw)
    if (!secure && request.url.startsWith(acmeChallengePath)) {
      const answer = await context
        .acmeHttpChallenge(request.url.slice(acmeChallengePath.length))
        .catch(() => undefined)
      if (answer !== undefined) return reply.code(200).type('text/plain').send(answer)
    }
    const outcome = await decide(exchange, context.httpsPort())
    exchange.outcome = outcome
    switch (outcome.kind) {
      case 'redirect':
        return reply.code(308).header('location', outcome.location).send()
      case 'health': {
        const app = exchange.app as App
        const healthy = context.pools.healthyCount(app.poolId)
        return reply
          .code(healthy > 0 ? 200 : 503)
          .header('cache-control', 'no-store')
          .send({ status: healthy > 0 ? 'healthy' : 'unhealthy', app: app.id, healthyTargets: healthy })
      }
      case 'refuse':
        return refuse(reply, outcome.code, outcome.rule, outcome.message)
      case 'answer':
        return reply.code(outcome.status).send(outcome.body)
    }
    const pending = (request.raw as HeldByRaw)[upgradeOfRequest]
    if (pending) {
      // Asked again right before the place is taken: guards that wait let other upgrades pass meanwhile.
      const app = exchange.app as App
      const caps = app.mode === 'enforce' ? app.websocket.caps : undefined
      const place = await context.relay.reserve(app.websocketScope, exchange.identity.ip, caps)
      if (!place.reservation) {
        const full = app.websocket.checkCapacity(place.live)
        if (full.kind === 'deny') return refuse(reply, full.code, full.rule, full.message)
      }
      pending.reservation = place.reservation
    }
  })

  /** Headers of an answer: the app's (none for the gateway's own), edited by the policy, plus the edge's. */
  const finalHeaders = (request: FastifyRequest, fromApp: OutgoingHttpHeaders): OutgoingHttpHeaders => {
    const exchange = exchangeOf(request)
    const headers = exchange.app
      ? exchange.app.responseEdits.apply(fromApp, exchange.addedHeaders, exchange.secure)
      : fromApp
    // The id the upstream got and the log line carries, so a user's report can be matched to both.
    headers['x-request-id'] = request.id
    if (
      request.raw.httpVersionMajor === 1 &&
      (context.connections.isDraining || awaitsContinue(request, exchange))
    )
      headers.connection = 'close'
    exchange.responseHeaders = headers
    if (context.log.isLevelEnabled('debug')) logHeaderEdits(request, fromApp, headers)
    return headers
  }

  edge.addHook('onSend', async (request, reply) => {
    reply.headers(finalHeaders(request, exchangeOf(request).relayedHeaders ?? {}))
  })

  edge.addHook('onResponse', async (request, reply) => {
    logAccess(request, reply, reply.statusCode, reply.elapsedTime, context, writeAccessLine)
  })

  // Fastify routes every method it knows to the proxy below; others (lower case, made up) end here.
  edge.setNotFoundHandler((request, reply) =>
    refuse(reply, 'PCL_BAD_REQUEST', 'request', `The method ${request.method} is not supported`),
  )

  edge.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    exchangeOf(request)
    const clientFault = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
    if (!clientFault) request.log.error({ err: error }, 'request failed inside the gateway')
    return clientFault
      ? refuse(reply, 'PCL_BAD_REQUEST', 'request', error.message)
      : refuse(reply, 'PCL_INTERNAL', 'gateway')
  })

  edge.route({
    method: edge.supportedMethods,
    url: '/*',
    handler: async (request, reply) => {
      const exchange = exchangeOf(request)
      const app = exchange.app as App
      const outcome = exchange.outcome
      if (outcome?.kind === 'static')
        return serveStatic(request, reply, exchange, outcome, (own) => finalHeaders(request, own))
      if (outcome?.kind !== 'proxy') return refuse(reply, 'PCL_INTERNAL', 'gateway')
      const upgrade = (request.raw as HeldByRaw)[upgradeOfRequest]
      const picked = context.pools.pick(app, { ip: exchange.identity.ip, headers: request.headers })
      if (!picked) {
        upgrade?.reservation?.release()
        return refuse(
          reply,
          'PCL_NO_HEALTHY_UPSTREAM',
          'upstream.targets',
          `No healthy target for app ${app.id}`,
        )
      }
      const upstream = picked.upstream
      if (picked.setCookie) {
        const cookie = exchange.secure ? `${picked.setCookie}; Secure` : picked.setCookie
        const added = exchange.addedHeaders?.['set-cookie'] ?? []
        exchange.addedHeaders = { ...exchange.addedHeaders, 'set-cookie': [added, cookie].flat() as string[] }
      }
      const { facts } = outcome
      if (!upgrade) {
        return forwardHttp(request, reply, exchange, upstream, {
          facts,
          responseHeaders: (fromApp) => finalHeaders(request, fromApp),
          pools: context.pools,
        })
      }
      if (!isWebSocketHandshake(request)) {
        upgrade.reservation?.release()
        return refuse(
          reply,
          'PCL_BAD_REQUEST',
          'request',
          'Only WebSocket upgrades (GET, Upgrade: websocket, a valid Sec-WebSocket-Key, version 13) are supported',
        )
      }
      reply.hijack()
      exchange.upstream = upstream.origin
      const started = performance.now()
      const reservation =
        upgrade.reservation ??
        ((await context.relay.reserve(app.websocketScope, exchange.identity.ip, undefined))
          .reservation as Reservation)
      const relayed = await context.relay.relay(
        {
          request: request.raw,
          socket: upgrade.socket,
          head: upgrade.head,
          target: exchange.target,
          reservation,
          responseHeaders: (fromApp) => finalHeaders(request, fromApp),
          dropped: exchange,
        },
        app,
        upstream,
        facts,
      )
      if (relayed.code) exchange.refuse(relayed.code, 'upstream')
      logAccess(request, reply, relayed.status, performance.now() - started, context, writeAccessLine)
    },
  })

  return { fastify: edge, ...servers }
}

/**
 * The HTTPS listener's servers, one per TLS profile: the first one Fastify was given (the default
 * profile's), and the others made the first time their profile is asked for. All share one
 * session-ticket key, present and future.
 */
function profileServers(
  first: Http2SecureServer,
  make: (profile: TlsProfile) => Http2SecureServer,
): Pick<Edge, 'serverFor' | 'setTicketKeys'> {
  const servers = new Map([[defaultTlsProfile.key, first]])
  let ticketKey: Buffer | undefined
  return {
    serverFor: (profile = defaultTlsProfile) => {
      let server = servers.get(profile.key)
      if (!server) {
        server = make(profile)
        if (ticketKey) server.setTicketKeys(ticketKey)
        servers.set(profile.key, server)
      }
      return server
    },
    setTicketKeys: (key) => {
      ticketKey = key
      for (const server of servers.values()) server.setTicketKeys(key)
    },
  }
}

/** One HTTPS server: HTTP/2 with HTTP/1.1 fallback, certificates by SNI, the profile's TLS settings. */
function secureServer(
  tls: TlsSettings,
  profile: TlsProfile,
  context: EdgeContext,
  handler: RequestHandler,
): Http2SecureServer {
  return createSecureServer(
    {
      allowHTTP1: true,
      // As nginx: one client cannot open thousands of streams (each an upstream request) at once.
      // Windows sized for uploads over links with latency; the session's own window is set per session.
      settings: {
        maxConcurrentStreams,
        initialWindowSize: startingStreamWindow({
          streamWindow: context.listener.h2StreamWindow,
          budget: context.listener.h2ConnectionWindow,
        }),
      },
      // The SNI context cannot change these (OpenSSL keeps the listener's): they are the server's own.
      minVersion: profile.minVersion,
      ciphers: profile.ciphers,
      ecdhCurve: profile.groups,
      // Node derives it from the command line by default; a session resumes only where it
      // matches, and replicas (or a restart) with other flags must accept each other's tickets.
      // Each profile has its own: a session never resumes on a server with other TLS settings.
      sessionIdContext:
        profile.key === defaultTlsProfile.key
          ? 'portcullis'
          : createHash('sha256').update(profile.key).digest('hex').slice(0, 32),
      cert: tls.placeholder.cert,
      key: tls.placeholder.key,
      SNICallback: (servername, done) =>
        done(null, tls.certificates.contextFor(context.router().find(servername)?.id)),
    },
    // Fastify's handler serves HTTP/2 compatibility requests as well as HTTP/1 ones.
    handler as never,
  )
}

/**
 * CONNECT (a tunnel) is not proxied. HTTP/2 hands the listener a response; the HTTP/1.1 fallback hands
 * it the raw socket (request, socket, head), which gets the same answer written by hand.
 */
function refuseConnect(_request: unknown, answer: ServerResponse | Duplex): void {
  if (!('writeHead' in answer)) {
    answer.on('error', () => answer.destroy())
    answer.end(rawHttpError('PCL_BAD_REQUEST', randomUUID()))
    return
  }
  answer.writeHead(errorStatus('PCL_BAD_REQUEST'), { 'content-type': 'application/json; charset=utf-8' })
  answer.end(JSON.stringify(errorBody('PCL_BAD_REQUEST', randomUUID(), 'CONNECT is not supported')))
}

/** At debug level: each header of an answer the gateway added, rewrote or removed, and how. */
function logHeaderEdits(request: FastifyRequest, fromApp: OutgoingHttpHeaders, sent: OutgoingHttpHeaders) {
  const edits: Record<string, string> = {}
  for (const name of new Set([...Object.keys(fromApp), ...Object.keys(sent)])) {
    const before = fromApp[name]
    const after = sent[name]
    if (String(before) === String(after)) continue
    edits[name] =
      before === undefined
        ? `added: ${String(after)}`
        : after === undefined
          ? 'removed'
          : `${String(before)} → ${String(after)}`
  }
  request.log.debug({ responseHeaderEdits: edits }, 'response headers edited')
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
  return app?.clientIp.isTrusted(peerOf(raw)) ? id : undefined
}

/** The connection's socket; for HTTP/2, the session's (the request's is a proxy object). */
function socketOf(raw: RawRequest): Socket {
  const session = (raw as { stream?: { session?: { socket?: Socket } } }).stream?.session
  return session?.socket ?? raw.socket
}

/** The connection's peer. */
function peerOf(raw: RawRequest): string {
  return peerAddress(socketOf(raw))
}

/** The TLS facts routing needs: the SNI name, the protocol version and the profile of the connection. */
function tlsOf(raw: RawRequest): TlsFacts {
  const socket = socketOf(raw) as ProfiledSocket
  return {
    servername: socket.servername || undefined,
    protocol: socket.getProtocol(),
    profile: socket[profileOfSocket],
  }
}
