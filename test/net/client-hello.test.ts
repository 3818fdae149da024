import { createServer } from 'node:net'
import { connect } from 'node:tls'
import { describe, expect, it } from 'vitest'
import { readClientHello } from '../../src/net/client-hello.js'

/** The first bytes a real TLS client (Node's OpenSSL) sends, captured on a plain TCP server. */
function capturedHello(options: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = createServer((socket) => {
      let data = Buffer.alloc(0)
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk])
        if (readClientHello(data).kind === 'incomplete') return
        resolve(data)
        socket.destroy()
        server.close()
      })
    })
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options }).on('error', () => {})
    })
  })
}

describe('readClientHello', () => {
  it('reads the server name and the ALPN protocols a TLS-ALPN-01 validator offers', async () => {
    const hello = await capturedHello({ servername: 'api.test', ALPNProtocols: ['acme-tls/1'] })
    expect(readClientHello(hello)).toEqual({ kind: 'hello', servername: 'api.test', alpn: ['acme-tls/1'] })
  })

  it('reads a browser-like offer, and one without SNI or ALPN', async () => {
    const browser = await capturedHello({ servername: 'shop.test', ALPNProtocols: ['h2', 'http/1.1'] })
    expect(readClientHello(browser)).toEqual({
      kind: 'hello',
      servername: 'shop.test',
      alpn: ['h2', 'http/1.1'],
    })
    expect(readClientHello(await capturedHello({}))).toEqual({
      kind: 'hello',
      servername: undefined,
      alpn: [],
    })
  })

  it('waits for the whole record, byte by byte', async () => {
    const hello = await capturedHello({ servername: 'api.test', ALPNProtocols: ['acme-tls/1'] })
    for (let length = 0; length < hello.length; length++) {
      expect(readClientHello(hello.subarray(0, length)).kind).toBe('incomplete')
    }
  })

  it('leaves anything else to the TLS server: plain HTTP, truncated or lying lengths', async () => {
    expect(readClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n')).kind).toBe('unreadable')
    const hello = await capturedHello({ servername: 'api.test' })
    const lying = Buffer.from(hello)
    lying.writeUIntBE(0xffffff, 6, 3) // handshake length past the record
    expect(readClientHello(lying).kind).toBe('unreadable')
  })
})
