import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { ClientIdentity } from '../guards/client-ip.js'

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

/**
 * Forwarding headers a client could forge. They are always dropped and rewritten from what the gateway
 * itself knows, so the upstream never trusts a chain it did not build.
 */
const forwarding = new Set([
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-real-ip',
  'x-request-id',
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
  proto: string
  host: string
  requestId: string
  /** Identity headers: the client's own of these names dropped, an auth service's added. */
  identityHeaders?: { drop: ReadonlySet<string>; add: Readonly<Record<string, string>> | undefined }
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
  identityHeaders?: ForwardedFacts['identityHeaders']
}): ForwardedFacts {
  const { identity, headers } = request
  const incomingHost = identity.peerTrusted ? firstOf(headers['x-forwarded-host']) : undefined
  return {
    chain: identity.chain,
    clientIp: identity.ip,
    proto: (identity.peerTrusted && forwardedProto(headers)) || (request.secure ? 'https' : 'http'),
    host: incomingHost && hostPattern.test(incomingHost) ? incomingHost : request.host,
    requestId: request.requestId,
    ...(request.identityHeaders && request.identityHeaders.drop.size > 0
      ? { identityHeaders: request.identityHeaders }
      : {}),
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

/** The headers sent upstream: the client's end-to-end headers plus a truthful forwarding chain. */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  facts: ForwardedFacts,
  options: { websocket: boolean },
): Record<string, string | string[]> {
  const listed = namedInConnection(incoming)
  const headers: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.charCodeAt(0) === 58 /* ':' pseudo-header */) continue
    if (hopByHop.has(name) || forwarding.has(name) || listed?.has(name)) continue
    if (options.websocket && websocketHandshake.has(name)) continue
    if (facts.identityHeaders?.drop.has(name)) continue
    headers[name] = value
  }
  if (facts.identityHeaders?.add) Object.assign(headers, facts.identityHeaders.add)
  headers.host = facts.host
  headers['x-forwarded-for'] = facts.chain.join(', ')
  headers['x-real-ip'] = facts.clientIp
  headers['x-forwarded-proto'] = facts.proto
  headers['x-forwarded-host'] = facts.host
  headers['x-request-id'] = facts.requestId
  return headers
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
