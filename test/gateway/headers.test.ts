import { describe, expect, it } from 'vitest'
import {
  downstreamResponseHeaders,
  type ForwardedFacts,
  upstreamRequestHeaders,
} from '../../src/gateway/headers.js'
import { type DroppedHeader, normalisedHost, VouchedHeaders } from '../../src/net/vouched-headers.js'

const vouched = new VouchedHeaders({
  clientIpHeader: 'x-forwarded-for',
  identityHeaders: ['x-auth-request-user', 'x-auth-request-groups'],
  underscores: 'drop',
})

const facts: ForwardedFacts = {
  chain: ['192.0.2.7', '10.0.0.2'],
  clientIp: '192.0.2.7',
  peerTrusted: false,
  host: 'shop.example.com',
  forwarded: { host: 'shop.example.com', proto: 'https' },
  requestId: 'id-1',
  vouched,
  identity: undefined,
}

/** The headers the upstream gets for one client header, and what was reported dropped. */
function forward(name: string, value: string, options: Partial<ForwardedFacts> = {}) {
  const sink: { droppedHeaders: DroppedHeader[] | undefined } = { droppedHeaders: undefined }
  const headers = upstreamRequestHeaders(
    { [name]: value },
    { ...facts, ...options },
    { websocket: false, dropped: sink },
  )
  return { headers, dropped: sink.droppedHeaders ?? [] }
}

/** The spellings a WSGI or CGI server folds to one name (Node has lowered the case): `_` for any `-`. */
function spellings(name: string): string[] {
  const all = name.replaceAll('-', '_')
  const first = name.replace('-', '_')
  const last = name.replace(/-([^-]*)$/, '_$1')
  return [...new Set([name, all, first, last])]
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

describe('headers the gateway vouches for', () => {
  const forged = [
    'x-auth-request-user',
    'x-auth-request-groups',
    'x-forwarded-for',
    'x-forwarded-host',
    'x-forwarded-proto',
    'x-forwarded-port',
    'x-forwarded-prefix',
    'forwarded',
    'x-real-ip',
    'x-client-ip',
    'true-client-ip',
    'cf-connecting-ip',
    'x-original-url',
    'x-request-id',
  ]
  it.each(forged.flatMap((name) => spellings(name).map((spelling) => [name, spelling])))(
    '%s spelled %s never reaches the app with the client’s value',
    (name, spelling) => {
      for (const underscores of ['drop', 'forward'] as const) {
        const rules = new VouchedHeaders({
          clientIpHeader: 'x-forwarded-for',
          identityHeaders: ['x-auth-request-user', 'x-auth-request-groups'],
          underscores,
        })
        const { headers } = forward(spelling, 'admin', { vouched: rules })
        for (const [sent, value] of Object.entries(headers)) {
          expect(
            sent.replaceAll('_', '-') === name && value === 'admin',
            `${spelling} with underscores: ${underscores}`,
          ).toBe(false)
        }
      }
    },
  )

  it('reports identity and untrusted forwarding headers it dropped, and every underscored name', () => {
    expect(forward('x_auth_request_user', 'admin').dropped).toEqual([
      { name: 'x_auth_request_user', reason: 'identity' },
    ])
    expect(forward('x-auth-request-user', 'admin').dropped).toEqual([
      { name: 'x-auth-request-user', reason: 'identity' },
    ])
    expect(forward('x-forwarded-prefix', '/evil').dropped).toEqual([
      { name: 'x-forwarded-prefix', reason: 'forwarding' },
    ])
    expect(forward('x_custom_thing', '1')).toEqual({
      headers: expect.not.objectContaining({ x_custom_thing: '1' }),
      dropped: [{ name: 'x_custom_thing', reason: 'underscore' }],
    })
    // A trusted proxy's forwarding headers were read (the chain), not forged: nothing to report.
    expect(forward('x-forwarded-prefix', '/app', { peerTrusted: true }).dropped).toEqual([])
  })

  it.each(['x.auth.request.user', 'x~forwarded~for', 'x+real+ip', 'x.custom'])(
    'drops %s, whose punctuation PHP and CGI servers fold, whatever the underscore setting',
    (name) => {
      const forwarding = new VouchedHeaders({
        clientIpHeader: 'x-forwarded-for',
        identityHeaders: ['x-auth-request-user'],
        underscores: 'forward',
      })
      const { headers } = forward(name, 'forged', { vouched: forwarding })
      expect(headers).not.toHaveProperty(name)
      expect(Object.values(headers)).not.toContain('forged')
    },
  )

  it('forwards underscored names the app does not reserve when the policy says so', () => {
    const rules = new VouchedHeaders({
      clientIpHeader: 'x-forwarded-for',
      identityHeaders: [],
      underscores: 'forward',
    })
    expect(forward('x_custom_thing', '1', { vouched: rules }).headers.x_custom_thing).toBe('1')
  })

  it('gives client-IP headers the verified address, and the clientIp.header always', () => {
    expect(forward('X_Client_IP'.toLowerCase(), '6.6.6.6').headers['x-client-ip']).toBeUndefined()
    const rules = new VouchedHeaders({
      clientIpHeader: 'x-forwarded-for',
      identityHeaders: [],
      underscores: 'forward',
    })
    expect(forward('x_client_ip', '6.6.6.6', { vouched: rules }).headers).toMatchObject({
      'x-client-ip': '192.0.2.7',
    })
    expect(forward('true-client-ip', '6.6.6.6').headers['true-client-ip']).toBe('192.0.2.7')
    const cdn = new VouchedHeaders({
      clientIpHeader: 'CF-Connecting-IP',
      identityHeaders: [],
      underscores: 'drop',
    })
    expect(
      upstreamRequestHeaders({}, { ...facts, vouched: cdn }, { websocket: false })['cf-connecting-ip'],
    ).toBe('192.0.2.7')
  })

  it.each([
    ['Shop.Example.COM', 'https', 'shop.example.com'],
    ['shop.example.com.', 'https', 'shop.example.com'],
    ['shop.example.com.:443', 'https', 'shop.example.com'],
    ['shop.example.com:8443', 'https', 'shop.example.com:8443'],
    ['shop.example.com:80', 'http', 'shop.example.com'],
    ['shop.example.com:443', 'http', 'shop.example.com:443'],
    ['[::1]:443', 'https', '[::1]'],
    ['shop.example.com:0443', 'https', 'shop.example.com'],
    ['shop.example.com:08443', 'https', 'shop.example.com:8443'],
  ])('normalises the host %s over %s to %s', (host, proto, expected) => {
    expect(normalisedHost(host, proto)).toBe(expected)
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
