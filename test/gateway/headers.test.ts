import { describe, expect, it } from 'vitest'
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../../src/gateway/headers.js'

const facts = {
  chain: ['192.0.2.7', '10.0.0.2'],
  clientIp: '192.0.2.7',
  proto: 'https',
  host: 'shop.example.com',
  requestId: 'id-1',
}

describe('upstreamRequestHeaders', () => {
  it('keeps end-to-end headers and writes the forwarding chain itself', () => {
    const headers = upstreamRequestHeaders(
      {
        host: 'ignored.test',
        accept: 'text/html',
        cookie: 'a=1',
        connection: 'keep-alive, x-drop-me',
        'x-drop-me': '1',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        te: 'trailers',
        expect: '100-continue',
        'proxy-authorization': 'Basic eA==',
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-host': 'evil.test',
        'x-forwarded-proto': 'http',
        forwarded: 'for=6.6.6.6',
        'x-real-ip': '6.6.6.6',
        'x-request-id': 'forged',
      },
      facts,
      { websocket: false },
    )
    expect(headers).toEqual({
      host: 'shop.example.com',
      accept: 'text/html',
      cookie: 'a=1',
      'x-forwarded-for': '192.0.2.7, 10.0.0.2',
      'x-real-ip': '192.0.2.7',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'shop.example.com',
      'x-request-id': 'id-1',
    })
  })

  it('drops HTTP/2 pseudo-headers and, for WebSockets, the handshake headers the client library sets', () => {
    const headers = upstreamRequestHeaders(
      {
        ':path': '/',
        ':authority': 'x',
        'sec-websocket-key': 'k',
        'sec-websocket-protocol': 'chat',
        origin: 'https://a.test',
      },
      facts,
      { websocket: true },
    )
    expect(Object.keys(headers).sort()).toEqual([
      'host',
      'origin',
      'x-forwarded-for',
      'x-forwarded-host',
      'x-forwarded-proto',
      'x-real-ip',
      'x-request-id',
    ])
  })
})

describe('downstreamResponseHeaders', () => {
  it('drops hop-by-hop headers and those the Connection header names', () => {
    expect(
      downstreamResponseHeaders({
        connection: 'close, x-internal',
        'x-internal': 'secret',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        'set-cookie': ['a=1', 'b=2'],
        'content-type': 'text/plain',
      }),
    ).toEqual({ 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain' })
  })
})
