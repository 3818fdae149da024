import { CidrSet, canonicalIp, parseCidr } from './ip.js'

const loopbackNetworks = new CidrSet(['127.0.0.0/8', '::1/128'].flatMap((text) => parseCidr(text) ?? []))

/** Whether a URL's hostname is this machine's loopback: `localhost`, 127/8 or `::1`, in any spelling. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, '')
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  const ip = canonicalIp(host.replace(/^\[|\]$/g, ''))
  return ip !== '' && loopbackNetworks.has(ip)
}

/**
 * The server an upstream target reaches, as far as its spelling tells: host and port, the default port
 * filled in, IPv4 and IPv6 literals in the URL parser's canonical form (`127.1`, `0x7f000001` and
 * `127.0.0.1` are one), and every spelling of this machine (`localhost`, 127/8, `::1`, `0.0.0.0`, `::`)
 * one name. Two targets with different answers may still be one server (a DNS name and its address):
 * what depends on it must not rely on a difference alone.
 */
export function serverOf(target: string): string {
  let url: URL
  try {
    url = new URL(target.replace(/^(?:dns|srv)\+/i, ''))
  } catch {
    return target.toLowerCase()
  }
  const host = url.hostname.toLowerCase().replace(/\.$/, '')
  const port = url.port || (url.protocol === 'https:' ? '443' : '80')
  const thisMachine = isLoopbackHost(host) || host === '0.0.0.0' || host === '[::]'
  return `${thisMachine ? 'loopback' : host}:${port}`
}
