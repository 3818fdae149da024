import { isIPv6 } from 'node:net'

/**
 * One spelling per address, so logs and keys never see the same client twice: IPv4-mapped IPv6
 * (`::ffff:10.0.0.1`) becomes IPv4 and zone ids are dropped.
 */
export function canonicalIp(address: string | undefined): string {
  if (!address) return ''
  if (!address.includes(':')) return address
  let ip = address.toLowerCase()
  const zone = ip.indexOf('%')
  if (zone >= 0) ip = ip.slice(0, zone)
  if (ip.startsWith('::ffff:') && ip.includes('.')) return ip.slice(7)
  return isIPv6(ip) ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip
}
