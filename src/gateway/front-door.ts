import type { EventEmitter } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import { type ClientHelloRead, readClientHello } from '../net/client-hello.js'
import { type CidrSet, canonicalIp } from '../net/ip.js'
import { parseProxyHeader } from '../net/proxy-protocol.js'

/** Source addresses that PROXY protocol headers gave connections, by raw socket. */
const proxiedSources = new WeakMap<object, string>()

/**
 * The peer of a connection: the PROXY protocol source when a trusted balancer sent one, else the
 * socket's own address. Accepts the raw socket or the TLS socket wrapped around it.
 */
export function peerAddress(socket: Socket): string {
  const parent = (socket as Socket & { _parent?: object })._parent
  return (
    proxiedSources.get(socket) ?? (parent && proxiedSources.get(parent)) ?? canonicalIp(socket.remoteAddress)
  )
}

export interface FrontDoorOptions {
  /** Peers that must send a PROXY protocol header; everyone else connects directly. */
  proxyProtocolFrom: CidrSet
  /** How long a balancer has to send the header. */
  headerTimeoutMs: number
  maxConnections: number
  log: Logger
}

/**
 * Where a connection goes: a server, or the server its TLS ClientHello picks (by SNI or ALPN), read
 * before TLS starts and handed over with the bytes intact.
 */
export type Door = { server: EventEmitter } | { byHello(hello: ClientHelloRead): EventEmitter }

/**
 * Accepts the TCP connections of an edge listener (plain HTTP or TLS) and hands them over, so a PROXY
 * protocol header can be read before HTTP or TLS starts. The header is accepted only from the
 * configured peers: from anyone else it would let a client choose its own address. `door` is asked
 * once per connection, when it is ready to be handed over.
 */
export function frontDoor(door: () => Door, options: FrontDoorOptions): Server {
  const handOver = (socket: Socket) => {
    const to = door()
    if ('server' in to) to.server.emit('connection', socket)
    else routeByHello(socket, to.byHello, options)
  }
  const front = createServer({ noDelay: true }, (socket) => {
    const peer = canonicalIp(socket.remoteAddress)
    if (!options.proxyProtocolFrom.has(peer)) {
      handOver(socket)
      return
    }
    readFirstBytes(socket, options.headerTimeoutMs, parseProxyHeader, (header, buffered) => {
      if (header.kind === 'invalid') {
        options.log.warn({ peer, reason: header.reason }, 'PROXY protocol header refused; connection closed')
        socket.destroy()
        return
      }
      if (header.source) proxiedSources.set(socket, header.source)
      const rest = buffered.subarray(header.length)
      if (rest.length > 0) socket.unshift(rest)
      handOver(socket)
      socket.resume()
    })
  })
  if (options.maxConnections > 0) front.maxConnections = options.maxConnections
  return front
}

/** Reads the ClientHello, then gives the connection to the server it picks, bytes intact. */
function routeByHello(
  socket: Socket,
  pick: (hello: ClientHelloRead) => EventEmitter,
  options: FrontDoorOptions,
): void {
  readFirstBytes(socket, options.headerTimeoutMs, readClientHello, (hello, buffered) => {
    socket.unshift(buffered)
    // No resume: the TLS server reads the unshifted bytes itself; a flowing socket would drop them.
    pick(hello).emit('connection', socket)
  })
}

/**
 * The doors of the HTTPS listener for one policy generation. With one TLS profile in use, connections
 * go straight to its server and nothing is read first; with several, the SNI name picks the server of
 * the app it routes to. While an app validates with TLS-ALPN-01, connections offering ALPN `acme-tls/1`
 * go to the ACME responder whatever their name.
 */
export function tlsDoors(options: {
  /** The server of the one TLS profile in use, when only one is. */
  sole: EventEmitter | undefined
  /** The server for connections made for this SNI name, when several are. */
  serverForName(servername: string | undefined): EventEmitter
  acmeResponder: EventEmitter
}): { plain: Door; acme: Door } {
  const { sole, serverForName, acmeResponder } = options
  const byName = (hello: ClientHelloRead) =>
    sole ?? serverForName(hello.kind === 'hello' ? hello.servername : undefined)
  return {
    plain: sole ? { server: sole } : { byHello: byName },
    acme: {
      byHello: (hello) =>
        hello.kind === 'hello' && hello.alpn.includes('acme-tls/1') ? acmeResponder : byName(hello),
    },
  }
}

/**
 * Buffers a connection's first bytes until `read` can tell what they are, then stops reading (the
 * socket is left paused) and hands over what was read. A peer that sends too little in time is cut.
 */
function readFirstBytes<T extends { kind: string }>(
  socket: Socket,
  timeoutMs: number,
  read: (data: Buffer) => T,
  done: (result: Exclude<T, { kind: 'incomplete' }>, buffered: Buffer) => void,
): void {
  let buffered: Buffer = Buffer.alloc(0)
  const timer = setTimeout(() => socket.destroy(), timeoutMs)
  const onData = (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    const result = read(buffered)
    if (result.kind === 'incomplete') return
    socket.off('data', onData)
    socket.pause()
    clearTimeout(timer)
    done(result as Exclude<T, { kind: 'incomplete' }>, buffered)
  }
  socket.on('data', onData)
  socket.once('error', () => clearTimeout(timer))
}
