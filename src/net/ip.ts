import { BlockList, isIP, isIPv6 } from 'node:net'

/**
 * One spelling per address, so every comparison, key and log line sees the same client once:
 * IPv4-mapped IPv6 (`::ffff:10.0.0.1`) becomes IPv4, IPv6 is lowercased and zero-compressed, and zone
 * ids are dropped. Returns '' for anything that is not an IP address.
 */
export function canonicalIp(address: string | undefined): string {
  if (!address) return ''
  if (!address.includes(':')) return isIP(address) === 4 ? address : ''
  let ip = address.toLowerCase()
  const zone = ip.indexOf('%')
  if (zone >= 0) ip = ip.slice(0, zone)
  if (!isIPv6(ip)) return ''
  const compressed = new URL(`http://[${ip}]`).hostname.slice(1, -1)
  // The URL parser writes every IPv4-mapped spelling (`::ffff:10.0.0.1`, `0:0:0:0:0:ffff:a00:1`) as
  // `::ffff:a00:1`: that is the IPv4 client, and it must be spelt and matched as one.
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed)
  if (!mapped) return compressed
  const high = Number.parseInt(mapped[1] as string, 16)
  const low = Number.parseInt(mapped[2] as string, 16)
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`
}

/**
 * An address as found in X-Forwarded-For or Forwarded: possibly with a port (`1.2.3.4:5678`), in
 * brackets (`[2001:db8::1]:443`) or quoted. Returns the canonical address, or '' when it is not one.
 */
export function addressFromHeaderEntry(entry: string): string {
  let text = entry.trim()
  if (text.startsWith('"') && text.endsWith('"') && text.length >= 2) text = text.slice(1, -1)
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    if (end < 0) return ''
    const rest = text.slice(end + 1)
    if (rest && !/^:\d{1,5}$/.test(rest)) return ''
    return isIPv6(text.slice(1, end)) ? canonicalIp(text.slice(1, end)) : ''
  }
  const colons = text.split(':').length - 1
  if (colons === 1) {
    const [host, port] = text.split(':')
    if (!/^\d{1,5}$/.test(port ?? '')) return ''
    text = host ?? ''
  }
  return canonicalIp(text)
}

const cidrPattern = /^(.+?)(?:\/(\d{1,3}))?$/

export interface Cidr {
  address: string
  prefix: number
  family: 'ipv4' | 'ipv6'
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a single address (its own /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const match = cidrPattern.exec(text.trim())
  if (!match) return undefined
  const raw = match[1] ?? ''
  const address = canonicalIp(raw)
  if (!address) return undefined
  const family = isIP(address) === 4 ? 'ipv4' : 'ipv6'
  const max = family === 'ipv4' ? 32 : 128
  let prefix = match[2] === undefined ? max : Number(match[2])
  // `::ffff:10.0.0.0/104` names IPv4 space: keep it IPv4 so mapped and plain addresses both match.
  if (family === 'ipv4' && raw.includes(':') && match[2] !== undefined) prefix -= 96
  if (prefix < 0 || prefix > max) return undefined
  return { address, prefix, family }
}

/** A set of networks, matched natively by Node's BlockList. */
export class CidrSet {
  private readonly list = new BlockList()
  readonly size: number

  constructor(cidrs: readonly Cidr[]) {
    for (const cidr of cidrs) this.list.addSubnet(cidr.address, cidr.prefix, cidr.family)
    this.size = cidrs.length
  }

  /** `ip` must be canonical (see canonicalIp). */
  has(ip: string): boolean {
    if (this.size === 0 || !ip) return false
    return this.list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4')
  }
}

/**
 * The network of an address at a prefix length, for grouping: `2001:db8:1:2:3:4:5:6` at 64 →
 * `2001:db8:1:2::/64`. IPv4 addresses are returned as they are.
 */
export function ipv6Network(ip: string, prefix: number): string {
  if (!ip.includes(':')) return ip
  const groups = expandIPv6(ip)
  if (!groups) return ip
  const kept = groups.map((group, index) => {
    const bitsBefore = index * 16
    if (bitsBefore >= prefix) return 0
    const keep = Math.min(16, prefix - bitsBefore)
    return group & (0xffff << (16 - keep)) & 0xffff
  })
  return `${canonicalIp(kept.map((group) => group.toString(16)).join(':'))}/${prefix}`
}

function expandIPv6(ip: string): number[] | undefined {
  let text = ip
  const lastColon = text.lastIndexOf(':')
  const tail = text.slice(lastColon + 1)
  if (tail.includes('.')) {
    const octets = tail.split('.').map(Number)
    text = `${text.slice(0, lastColon + 1)}${(((octets[0] ?? 0) << 8) | (octets[1] ?? 0)).toString(16)}:${(((octets[2] ?? 0) << 8) | (octets[3] ?? 0)).toString(16)}`
  }
  const [head = '', rest] = text.split('::')
  const left = head ? head.split(':') : []
  const right = rest ? rest.split(':') : []
  const missing = 8 - left.length - right.length
  if (rest === undefined ? left.length !== 8 : missing < 0) return undefined
  return [...left, ...Array<string>(rest === undefined ? 0 : missing).fill('0'), ...right].map((group) =>
    Number.parseInt(group, 16),
  )
}
