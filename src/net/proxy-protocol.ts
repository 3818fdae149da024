import { isIP } from 'node:net'
import { canonicalIp } from './ip.js'

/**
 * PROXY protocol v1 (text) and v2 (binary) headers, as L4 load balancers (HAProxy, AWS NLB, ...) send
 * them before the client's bytes. `source` is the client's address; a v2 LOCAL command (health checks)
 * or v1 UNKNOWN carries none.
 */
export type ProxyHeader =
  | { kind: 'complete'; length: number; source: string | undefined }
  | { kind: 'incomplete' }
  | { kind: 'invalid'; reason: string }

const v2Signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const v1Prefix = Buffer.from('PROXY ')
/** v1 headers are at most 107 bytes; v2 at most 16 + 65535. */
const v1MaxLength = 107

export function parseProxyHeader(buffer: Buffer): ProxyHeader {
  if (startsWithPart(buffer, v2Signature))
    return buffer.length < 16 ? { kind: 'incomplete' } : parseV2(buffer)
  if (startsWithPart(buffer, v1Prefix)) return parseV1(buffer)
  return { kind: 'invalid', reason: 'no PROXY protocol header' }
}

/** True while `buffer` could still become `prefix` (it is a prefix of it, or starts with it). */
function startsWithPart(buffer: Buffer, prefix: Buffer): boolean {
  const length = Math.min(buffer.length, prefix.length)
  return buffer.subarray(0, length).equals(prefix.subarray(0, length))
}

function parseV1(buffer: Buffer): ProxyHeader {
  const end = buffer.indexOf('\r\n')
  if (end < 0)
    return buffer.length >= v1MaxLength
      ? { kind: 'invalid', reason: 'v1 header too long' }
      : { kind: 'incomplete' }
  const parts = buffer.subarray(0, end).toString('latin1').split(' ')
  if (parts[1] === 'UNKNOWN') return { kind: 'complete', length: end + 2, source: undefined }
  const family = parts[1] === 'TCP4' ? 4 : parts[1] === 'TCP6' ? 6 : 0
  if (parts.length !== 6 || family === 0) return { kind: 'invalid', reason: 'malformed v1 header' }
  // Both addresses must be of the family the header names: a TCP4 line cannot carry an IPv6 client.
  const [, , source = '', destination = '', sourcePort = '', destinationPort = ''] = parts
  if (isIP(source) !== family || isIP(destination) !== family)
    return { kind: 'invalid', reason: `v1 addresses are not TCP${family} addresses` }
  if (!isPort(sourcePort) || !isPort(destinationPort)) return { kind: 'invalid', reason: 'bad v1 port' }
  return { kind: 'complete', length: end + 2, source: canonicalIp(source) }
}

function isPort(text: string): boolean {
  return /^(?:0|[1-9]\d{0,4})$/.test(text) && Number(text) <= 65_535
}

/** v2 address families (high nibble) over TCP (low nibble 1), with the size of their address block. */
const v2AddressBlock: ReadonlyMap<number, number> = new Map([
  [0x11, 12], // TCP over IPv4: two addresses, two ports
  [0x21, 36], // TCP over IPv6
  [0x31, 216], // UNIX stream sockets: two paths
])

function parseV2(buffer: Buffer): ProxyHeader {
  const versionCommand = buffer[12] ?? 0
  const family = buffer[13] ?? 0
  const length = 16 + buffer.readUInt16BE(14)
  if (versionCommand >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported v2 version' }
  if (buffer.length < length) return { kind: 'incomplete' }
  const command = versionCommand & 0x0f
  if (command === 0x0) return { kind: 'complete', length, source: undefined } // LOCAL: the balancer itself
  if (command !== 0x1) return { kind: 'invalid', reason: 'unsupported v2 command' }
  // UNSPEC: the balancer passes no address, so the connection's own peer stands.
  if (family === 0x00) return { kind: 'complete', length, source: undefined }
  const block = v2AddressBlock.get(family)
  if (block === undefined) return { kind: 'invalid', reason: 'unsupported v2 address family' }
  if (length < 16 + block) return { kind: 'invalid', reason: 'v2 address block too short for its family' }
  if (family === 0x11) return { kind: 'complete', length, source: [...buffer.subarray(16, 20)].join('.') }
  if (family === 0x21) {
    const groups: string[] = []
    for (let offset = 16; offset < 32; offset += 2) groups.push(buffer.readUInt16BE(offset).toString(16))
    return { kind: 'complete', length, source: canonicalIp(groups.join(':')) }
  }
  return { kind: 'complete', length, source: undefined } // UNIX sockets: no IP address to report
}
