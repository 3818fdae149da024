import { describe, expect, it } from 'vitest'
import { envName, flagName, resolveSettings } from '../src/settings.js'

describe('gateway settings', () => {
  it('names flags and environment variables after the setting', () => {
    expect(flagName('httpsPort')).toBe('https-port')
    expect(envName('httpsPort')).toBe('PORTCULLIS_HTTPS_PORT')
    expect(envName('gracePeriod')).toBe('PORTCULLIS_GRACE_PERIOD')
  })

  it('has production defaults', () => {
    const resolved = resolveSettings({}, {})
    expect(resolved).toEqual({
      ok: true,
      settings: {
        policies: './policies',
        listen: '0.0.0.0',
        httpPort: 80,
        httpsPort: 443,
        adminPort: 9090,
        adminListen: '127.0.0.1',
        probeListen: '0.0.0.0',
        redisTimeout: 250,
        replicas: 1,
        stateDir: './certs',
        acmeRetry: 60_000,
        acmePoll: 1000,
        env: 'production',
        gracePeriod: 30_000,
        headersTimeout: 15_000,
        keepAliveTimeout: 75_000,
        h2StreamWindow: 16 * 1024 ** 2,
        h2ConnectionWindow: 16 * 1024 ** 2,
        maxConnections: 0,
        proxyProtocolFrom: [],
        dnsServers: [],
        logLevel: 'info',
        logHeaders: [],
        logResponseHeaders: [],
        logRedact: ['authorization', 'proxy-authorization', 'cookie', 'x-api-key'],
        workers: 1,
        ticketKeyRotation: 43_200_000,
        watch: true,
      },
    })
  })

  it('takes a number of workers or auto', () => {
    expect(resolveSettings({ workers: 'auto' }, {})).toMatchObject({ settings: { workers: 'auto' } })
    expect(resolveSettings({}, { PORTCULLIS_WORKERS: '4' })).toMatchObject({ settings: { workers: 4 } })
    expect(resolveSettings({ workers: '0' }, {})).toMatchObject({ ok: false })
  })

  it('takes PORTCULLIS_* variables, and a flag wins over its variable', () => {
    const resolved = resolveSettings(
      { httpsPort: '8443' },
      {
        PORTCULLIS_HTTPS_PORT: '9443',
        PORTCULLIS_HTTP_PORT: '8080',
        PORTCULLIS_GRACE_PERIOD: '5s',
        PORTCULLIS_ENV: 'development',
      },
    )
    expect(resolved.ok && resolved.settings).toMatchObject({
      httpsPort: 8443,
      httpPort: 8080,
      gracePeriod: 5000,
      env: 'development',
    })
  })

  it('takes off for the HTTP port: no plain-HTTP listener', () => {
    expect(resolveSettings({ httpPort: 'off' }, {})).toMatchObject({
      ok: true,
      settings: { httpPort: 'off' },
    })
  })

  it('names the flag and the variable of a bad value', () => {
    expect(resolveSettings({ httpPort: 'eighty', env: 'prod' }, {})).toEqual({
      ok: false,
      problems: [
        '--http-port (PORTCULLIS_HTTP_PORT): must be a port number (0 to 65535) or off',
        '--env (PORTCULLIS_ENV): Invalid option: expected one of "production"|"development"',
      ],
    })
  })
})
