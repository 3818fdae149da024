import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ClientIdentity } from '../guards/client-ip.js'
import {
  type DroppedHeader,
  foldedHeaderName,
  normalisedHost,
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
  proto: string
  /** As routing reads it: lower case, no trailing dot, the port only when it is not the scheme's. */
  host: string
  requestId: string
  vouched: VouchedHeaders
  /** The identity headers an auth service named for this request. */
  identity: Readonly<Record<string, string>> | undefined
}

const hostPattern = /^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$/

/**
 * What the upstream is told about the request: the verified chain and client, and the protocol and
 * host it was made with. A trusted proxy's X-Forwarded-Proto and -Host are kept (it terminated TLS or
 * saw the public name); anyone else's are not. The listeners and `explain` both use this.
 */
export function forwardedFacts(request: {
  identity: ClientIdentity
  headers: IncomingHttpHeaders
  /** The Host (or :authority) the request arrived with. */
  host: string
  secure: boolean
  requestId: string
  vouched: VouchedHeaders
  identityHeaders: Readonly<Record<string, string>> | undefined
}): ForwardedFacts {
  const { identity, headers } = request
  const incomingHost = identity.peerTrusted ? firstOf(headers['x-forwarded-host']) : undefined
  const proto = (identity.peerTrusted && forwardedProto(headers)) || (request.secure ? 'https' : 'http')
  return {
    chain: identity.chain,
    clientIp: identity.ip,
    peerTrusted: identity.peerTrusted,
    proto,
    host: normalisedHost(incomingHost && hostPattern.test(incomingHost) ? incomingHost : request.host, proto),
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
    const underscored = name.includes('_')
    const kind = vouched.of(name)
    if (underscored && !vouched.forwardsUnderscores) {
      drop(options.dropped, name, kind === 'identity' ? 'identity' : 'underscore')
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
  headers['x-forwarded-proto'] = facts.proto
  headers['x-forwarded-host'] = facts.host
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
