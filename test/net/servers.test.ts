import { describe, expect, it } from 'vitest'
import { isLoopbackHost, serverOf } from '../../src/net/servers.js'

describe('the server a target reaches', () => {
  it.each([
    'http://127.0.0.1:8082',
    'http://127.0.0.1:8082/',
    'HTTP://LOCALHOST:8082',
    'http://127.1:8082',
    'http://0x7f000001:8082',
    'http://[::ffff:127.0.0.1]:8082',
    'http://[::1]:8082',
    'http://0.0.0.0:8082',
    'dns+http://localhost:8082',
  ])('%s is this machine on port 8082', (target) => {
    expect(serverOf(target)).toBe('loopback:8082')
  })

  it('fills in the default port and keeps other hosts apart', () => {
    expect(serverOf('http://api.internal')).toBe(serverOf('http://API.internal:80/'))
    expect(serverOf('https://api.internal')).toBe('api.internal:443')
    expect(serverOf('http://api.internal:8080')).not.toBe(serverOf('http://admin.internal:8080'))
    expect(serverOf('http://127.0.0.1:8082')).not.toBe(serverOf('http://127.0.0.1:8083'))
  })
})

describe('loopback host names', () => {
  it.each(['localhost', 'LOCALHOST.', 'api.localhost', '127.0.0.1', '127.9.9.9', '[::1]', '[::ffff:7f00:1]'])(
    '%s is this machine',
    (host) => {
      expect(isLoopbackHost(host)).toBe(true)
    },
  )
  it.each(['10.0.0.1', '[::ffff:a00:1]', 'example.com', 'localhost.example.com', '[2001:db8::1]'])(
    '%s is not',
    (host) => {
      expect(isLoopbackHost(host)).toBe(false)
    },
  )
})
