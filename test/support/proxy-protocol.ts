const signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

/** A PROXY protocol v2 header for a TCP client at `source` (command 0x21 PROXY, 0x20 LOCAL). */
export function proxyV2(source: string, command = 0x21): Buffer {
  const isV6 = source.includes(':')
  const addresses = isV6 ? Buffer.alloc(36) : Buffer.alloc(12)
  if (isV6) {
    for (const [index, group] of source.split(':').entries()) {
      addresses.writeUInt16BE(Number.parseInt(group || '0', 16), index * 2)
    }
  } else {
    for (const [index, part] of source.split('.').entries()) addresses.writeUInt8(Number(part), index)
  }
  const head = Buffer.from([...signature, command, isV6 ? 0x21 : 0x11, 0, 0])
  head.writeUInt16BE(addresses.length, 14)
  return Buffer.concat([head, addresses])
}
