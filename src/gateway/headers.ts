import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ClientIdentity } from '../guards/client-ip.js'
import {
  type DroppedHeader,
  foldedHeaderName,
  isHostAndPort,
  normalisedHost,
  unusualName,
  type VouchedHeaders,
} from '../net/vouched-headers.js'

/** RFC 9110 §7.6.1: headers that describe one connection and must not be forwarded. */
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  // 100-continue is answered by the gateway's own listener; the upstream gets the body outright.
  'expect',
])

/** Headers that a WebSocket client library sets itself on the upstream handshake. */
const websocketHandshake = new Set([
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
])

function namedInConnection(headers: IncomingHttpHeaders): Set<string> | undefined {
  const connection = headers.connection
  if (!connection) return undefined
  return new Set(connection.split(',').map((name) => name.trim().toLowerCase()))
}

export interface ForwardedFacts {
  /** X-Forwarded-For: the client first, then each proxy up to and including our peer. */
  chain: readonly string[]
  clientIp: string
  /** Whether the peer is a proxy the app trusts: its forwarding headers were read, not forged. */
  peerTrusted: boolean
  /** The Host the request was routed by, as routing reads it (lower case, no trailing dot, a port only when not the scheme's). */
  host: string
  /** X-Forwarded-Host and -Proto: what the client used, which an auth service is told too. */
  forwarded: PublicView
  requestId: string
  vouched: VouchedHeaders
  /** The identity headers an auth service named for this request. */
  identity: Readonly<Record<string, string>> | undefined
}

/** The host and protocol the client used, as the app (X-Forwarded-Host, -Proto) and an auth service are told. */
export interface PublicView {
  host: string
  proto: 'http' | 'https'
}

/**
 * The host and protocol the client used. A trusted proxy's X-Forwarded-Proto is kept (it terminated
 * TLS), and its X-Forwarded-Host when that names a host of the same app (it saw the public name);
 * anyone else's are not, and no forwarded host can name another app than the one that judged it.
 */
export function publicView(request: {
  identity: ClientIdentity
  headers: IncomingHttpHeaders
  /** The Host (or :authority) the request was routed by. */
  host: string
  secure: boolean
  /** Whether a host name routes to the app this request is for. */
  routesHere(host: string): boolean
}): PublicView {
  const { identity, headers } = request
  const proto = (identity.peerTrusted && forwardedProto(headers)) || (request.secure ? 'https' : 'http')
  const claimed = identity.peerTrusted ? firstOf(headers['x-forwarded-host']) : undefined
  const host = claimed && isHostAndPort(claimed) && request.routesHere(claimed) ? claimed : request.host
  return { host: normalisedHost(host, proto), proto }
}

/** What the upstream is told about the request: the verified chain and client, the host and protocol. */
export function forwardedFacts(request: {
  identity: ClientIdentity
  /** The Host (or :authority) the request was routed by. */
  host: string
  secure: boolean
  forwarded: PublicView
  requestId: string
  vouched: VouchedHeaders
  identityHeaders: Readonly<Record<string, string>> | undefined
}): ForwardedFacts {
  const { identity } = request
  return {
    chain: identity.chain,
    clientIp: identity.ip,
    peerTrusted: identity.peerTrusted,
    host: normalisedHost(request.host, request.secure ? 'https' : 'http'),
    forwarded: request.forwarded,
    requestId: request.requestId,
    vouched: request.vouched,
    identity: request.identityHeaders,
  }
}

/** The protocol a proxy in front says the client used (`X-Forwarded-Proto`); trust it only from a trusted peer. */
export function forwardedProto(headers: IncomingHttpHeaders): 'http' | 'https' | undefined {
  const proto = firstOf(headers['x-forwarded-proto'])?.toLowerCase()
  return proto === 'http' || proto === 'https' ? proto : undefined
}

function firstOf(value: string | string[] | undefined): string | undefined {
  return (Array.isArray(value) ? value[0] : value)?.split(',')[0]?.trim()
}

/**
 * The headers sent upstream: the client's end-to-end headers plus what the gateway vouches for. The
 * client headers it removed for their name are kept on `dropped`, for the log, metrics and explain;
 * a trusted proxy's forwarding headers are read, not dropped, and not reported.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  facts: ForwardedFacts,
  options: { websocket: boolean; dropped?: { droppedHeaders: DroppedHeader[] | undefined } },
): Record<string, string | string[]> {
  const listed = namedInConnection(incoming)
  const { vouched } = facts
  const headers: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.charCodeAt(0) === 58 /* ':' pseudo-header */) continue
    if (hopByHop.has(name) || listed?.has(name)) continue
    if (options.websocket && websocketHandshake.has(name)) continue
    const kind = vouched.of(name)
    const unusual = unusualName(name, vouched.forwardsUnderscores)
    if (unusual) {
      drop(options.dropped, name, kind === 'identity' ? 'identity' : unusual)
      continue
    }
    if (kind === undefined) {
      headers[name] = value
      continue
    }
    if (kind === 'client-ip') headers[foldedHeaderName(name)] = facts.clientIp
    if (kind === 'identity') drop(options.dropped, name, 'identity')
    else if (!facts.peerTrusted && kind !== 'written') drop(options.dropped, name, 'forwarding')
  }
  if (facts.identity) Object.assign(headers, facts.identity)
  headers.host = facts.host
  headers['x-forwarded-for'] = facts.chain.join(', ')
  headers['x-real-ip'] = facts.clientIp
  headers['x-forwarded-proto'] = facts.forwarded.proto
  headers['x-forwarded-host'] = facts.forwarded.host
  headers['x-request-id'] = facts.requestId
  for (const name of vouched.alwaysClientIp) headers[name] = facts.clientIp
  return headers
}

function drop(
  sink: { droppedHeaders: DroppedHeader[] | undefined } | undefined,
  name: string,
  reason: DroppedHeader['reason'],
): void {
  if (!sink) return
  sink.droppedHeaders ??= []
  sink.droppedHeaders.push({ name, reason })
}

/** The upstream's response headers without hop-by-hop ones (HTTP/2 forbids them outright). */
export function downstreamResponseHeaders(incoming: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = namedInConnection(incoming)
  const headers: OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || hopByHop.has(name) || listed?.has(name)) continue
    headers[name] = value
  }
  return headers
}
