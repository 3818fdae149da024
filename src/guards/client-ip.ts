import type { IncomingHttpHeaders } from 'node:http'
import { addressFromHeaderEntry, CidrSet, parseCidr } from '../net/ip.js'
import { isChainHeader, type Policy } from '../policy/schema.js'

/** Longer chains are cut to their last entries: nobody legitimately chains this many proxies. */
const maxChainEntries = 32

export interface ClientIdentity {
  /** The client's canonical address. */
  ip: string
  /** How it was derived: `peer`, or the header of a trusted proxy it came from (`x-forwarded-for`, ...). */
  via: string
  /** The chain sent upstream as X-Forwarded-For: the client, the trusted hops after it, the peer. */
  chain: string[]
  /** Whether the peer is a trusted proxy, whose X-Forwarded-Proto/Host and X-Request-Id are kept. */
  peerTrusted: boolean
}

/**
 * Who the client is, derived once per request from the socket peer and, only when the peer is a
 * trusted proxy, from the chain it forwarded: walking from the right, trusted addresses are skipped
 * and the first untrusted one is the client. Malformed entries are never trusted; they end the walk.
 */
export class ClientIpResolver {
  private readonly trusted: CidrSet
  private readonly hops: number | undefined
  private readonly header: Policy['clientIp']['header']

  /** `trustedProxies` is the policy's list with the networks of its trustedProxiesFile. */
  constructor(section: Policy['clientIp']) {
    this.trusted = new CidrSet(section.trustedProxies.flatMap((text) => parseCidr(text) ?? []))
    this.hops = section.hops
    this.header = section.header
  }

  isTrusted(ip: string): boolean {
    return this.trusted.has(ip)
  }

  resolve(peer: string, headers: IncomingHttpHeaders): ClientIdentity {
    if (!this.trusted.has(peer)) return { ip: peer, via: 'peer', chain: [peer], peerTrusted: false }
    if (!isChainHeader(this.header)) return this.fromSingleAddress(peer, headers[this.header])
    const entries =
      this.header === 'forwarded'
        ? forwardedFor(headers.forwarded)
        : xForwardedFor(headers['x-forwarded-for'])
    const chain = [...entries, peer]
    // Walk left from the peer (index chain.length - 1) while the current hop may speak for the next one.
    let index = chain.length - 1
    let hopsLeft = this.hops
    while (index > 0) {
      const current = chain[index] as string
      const mayForward = hopsLeft !== undefined ? hopsLeft > 0 : this.trusted.has(current)
      const previous = chain[index - 1] as string
      if (!mayForward || previous === '') break
      index -= 1
      if (hopsLeft !== undefined) hopsLeft -= 1
    }
    const ip = chain[index] as string
    return {
      ip,
      via: index === chain.length - 1 ? 'peer' : this.header,
      chain: chain.slice(index),
      peerTrusted: true,
    }
  }

  private fromSingleAddress(peer: string, value: string | string[] | undefined): ClientIdentity {
    const client = singleAddress(value)
    if (!client) return { ip: peer, via: 'peer', chain: [peer], peerTrusted: true }
    return { ip: client, via: this.header, chain: [client, peer], peerTrusted: true }
  }
}

/** A trusted proxy that names the client in a header of one address (Cloudflare's CF-Connecting-IP). */
function singleAddress(value: string | string[] | undefined): string {
  const text = Array.isArray(value) ? value[0] : value
  return text === undefined ? '' : addressFromHeaderEntry(text)
}

function xForwardedFor(value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const text = Array.isArray(value) ? value.join(',') : value
  return text.split(',').slice(-maxChainEntries).map(addressFromHeaderEntry)
}

/** RFC 7239: `for=` of each element; `for=unknown` and obfuscated ids become '' (not an address). */
function forwardedFor(value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const text = Array.isArray(value) ? value.join(',') : value
  return text
    .split(',')
    .slice(-maxChainEntries)
    .map((element) => {
      const pair = element
        .split(';')
        .map((part) => part.trim())
        .find((part) => part.toLowerCase().startsWith('for='))
      return pair ? addressFromHeaderEntry(pair.slice(4)) : ''
    })
}
