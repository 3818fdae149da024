/** CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with, one table entry per byte. */
const table = new Uint16Array(256)
for (let byte = 0; byte < 256; byte++) {
  let crc = byte << 8
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1
  table[byte] = crc & 0xffff
}

/**
 * The Redis Cluster hash slot of a key (0–16383): of its hash tag, the part between the first `{` and
 * the next `}` when that part is not empty, else of the whole key; over the key's UTF-8 bytes.
 */
export function hashSlot(key: string): number {
  const open = key.indexOf('{')
  const close = open < 0 ? -1 : key.indexOf('}', open + 1)
  const hashed = close > open + 1 ? key.slice(open + 1, close) : key
  let crc = 0
  for (let index = 0; index < hashed.length; index++) {
    const code = hashed.charCodeAt(index)
    if (code >= 0x80) return slotOfBytes(Buffer.from(hashed, 'utf8'))
    crc = ((crc << 8) & 0xffff) ^ (table[((crc >> 8) ^ code) & 0xff] as number)
  }
  return crc & 0x3fff
}

function slotOfBytes(bytes: Buffer): number {
  let crc = 0
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ (table[((crc >> 8) ^ byte) & 0xff] as number)
  return crc & 0x3fff
}
