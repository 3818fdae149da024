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
  return `${isThisMachine(host) ? 'loopback' : host}:${port}`
}

function isThisMachine(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host.startsWith('127.') ||
    host === '0.0.0.0' ||
    host === '[::1]' ||
    host === '[::]' ||
    /^\[::ffff:(?:7f[0-9a-f]{2}:[0-9a-f]{1,4}|0:0)\]$/.test(host)
  )
}
