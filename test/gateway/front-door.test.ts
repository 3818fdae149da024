import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { type Door, tlsDoors } from '../../src/gateway/front-door.js'
import type { ClientHelloRead } from '../../src/net/client-hello.js'

const hello = (servername: string | undefined, alpn: string[] = ['h2']): ClientHelloRead => ({
  kind: 'hello',
  servername,
  alpn,
})

/** The server a door hands a connection to, for a given ClientHello. */
const through = (door: Door, read: ClientHelloRead) => ('server' in door ? door.server : door.byHello(read))

describe('the HTTPS doors', () => {
  const acmeResponder = new EventEmitter()
  const servers = { modern: new EventEmitter(), intermediate: new EventEmitter() }
  const serverForName = (name: string | undefined) =>
    name === 'strict.test' ? servers.modern : servers.intermediate

  it('with one profile in use: straight to its server, no ClientHello read', () => {
    const doors = tlsDoors({ sole: servers.modern, serverForName, acmeResponder })
    expect(doors.plain).toEqual({ server: servers.modern })
    // While a TLS-ALPN-01 validation runs, only acme-tls/1 goes elsewhere.
    expect(through(doors.acme, hello('strict.test', ['acme-tls/1']))).toBe(acmeResponder)
    expect(through(doors.acme, hello('alpha.test'))).toBe(servers.modern)
  })

  it('with several: the SNI name picks the server, and no name or an unreadable hello the default', () => {
    const doors = tlsDoors({ sole: undefined, serverForName, acmeResponder })
    expect('server' in doors.plain).toBe(false)
    expect(through(doors.plain, hello('strict.test'))).toBe(servers.modern)
    expect(through(doors.plain, hello('alpha.test'))).toBe(servers.intermediate)
    expect(through(doors.plain, hello(undefined))).toBe(servers.intermediate)
    expect(through(doors.plain, { kind: 'unreadable' })).toBe(servers.intermediate)
    expect(through(doors.acme, hello('strict.test', ['acme-tls/1']))).toBe(acmeResponder)
    expect(through(doors.acme, hello('strict.test'))).toBe(servers.modern)
  })
})
