export type ClientHelloRead =
  | { kind: 'incomplete' }
  /** Not a TLS ClientHello we can read: the TLS server gets the bytes and answers them itself. */
  | { kind: 'unreadable' }
  | { kind: 'hello'; servername: string | undefined; alpn: string[] }

const handshakeRecord = 22
const clientHello = 1
const serverNameExtension = 0
const alpnExtension = 16
/** A ClientHello fits one TLS record (at most 16 KiB of payload); we read only that first record. */
const recordHeaderLength = 5

/**
 * Reads the server name and ALPN protocols from the first TLS record of a connection, before any TLS
 * server sees it. The HTTPS listener uses it to send ACME TLS-ALPN-01 validations (ALPN `acme-tls/1`)
 * to the challenge responder, which Node cannot do from a SecureContext: the certificate must depend on
 * the offered protocol, and SNICallback does not see it.
 */
export function readClientHello(data: Buffer): ClientHelloRead {
  if (data.length < recordHeaderLength) return { kind: 'incomplete' }
  if (data[0] !== handshakeRecord || data[1] !== 3) return { kind: 'unreadable' }
  const recordLength = data.readUInt16BE(3)
  if (data.length < recordHeaderLength + recordLength) return { kind: 'incomplete' }
  const record = data.subarray(recordHeaderLength, recordHeaderLength + recordLength)
  try {
    return parseHello(record)
  } catch {
    return { kind: 'unreadable' }
  }
}

function parseHello(record: Buffer): ClientHelloRead {
  const reader = new Reader(record)
  if (reader.u8() !== clientHello) return { kind: 'unreadable' }
  const body = new Reader(reader.bytes(reader.u24()))
  body.skip(2 + 32) // legacy version, random
  body.skip(body.u8()) // session id
  body.skip(body.u16()) // cipher suites
  body.skip(body.u8()) // compression methods
  let servername: string | undefined
  const alpn: string[] = []
  if (body.remaining === 0) return { kind: 'hello', servername, alpn }
  const extensions = new Reader(body.bytes(body.u16()))
  while (extensions.remaining > 0) {
    const type = extensions.u16()
    const data = new Reader(extensions.bytes(extensions.u16()))
    if (type === serverNameExtension) {
      const names = new Reader(data.bytes(data.u16()))
      while (names.remaining > 0) {
        const nameType = names.u8()
        const name = names.bytes(names.u16()).toString('ascii')
        if (nameType === 0) servername = name
      }
    } else if (type === alpnExtension) {
      const protocols = new Reader(data.bytes(data.u16()))
      while (protocols.remaining > 0) alpn.push(protocols.bytes(protocols.u8()).toString('latin1'))
    }
  }
  return { kind: 'hello', servername, alpn }
}

/** Bounds-checked big-endian reads; running past the end throws, which the caller reports as unreadable. */
class Reader {
  private offset = 0
  constructor(private readonly data: Buffer) {}

  get remaining(): number {
    return this.data.length - this.offset
  }

  u8(): number {
    return this.take(1).readUInt8(0)
  }

  u16(): number {
    return this.take(2).readUInt16BE(0)
  }

  u24(): number {
    return this.take(3).readUIntBE(0, 3)
  }

  bytes(length: number): Buffer {
    return this.take(length)
  }

  skip(length: number): void {
    this.take(length)
  }

  private take(length: number): Buffer {
    if (length > this.remaining) throw new RangeError('truncated ClientHello')
    const slice = this.data.subarray(this.offset, this.offset + length)
    this.offset += length
    return slice
  }
}
