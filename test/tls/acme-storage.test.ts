import { mkdtemp, readdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectRedis, type RedisClient, whenReady } from '../../src/stores/redis.js'
import { type AcmeStorage, FileAcmeStorage, RedisAcmeStorage } from '../../src/tls/acme/storage.js'
import { selfSigned } from '../../src/tls/internal-ca.js'
import { type RedisServer, startRedis } from '../support/redis.js'

const directoryUrl = 'https://acme.example/directory'

async function stateDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'pcl-acme-storage-'))
}

/** What both storages promise; each runs it. */
function sharedBehaviour(name: string, make: () => Promise<AcmeStorage>) {
  describe(name, () => {
    it('keeps the account and certificates, and reports absence as undefined', async () => {
      const storage = await make()
      expect(await storage.readAccount(directoryUrl)).toBeUndefined()
      expect(await storage.readCertificate('shop')).toBeUndefined()
      await storage.writeAccount(directoryUrl, { key: 'KEY', url: 'https://acme.example/acct/1' })
      const pair = await selfSigned('shop', ['shop.test'], 86_400_000)
      await storage.writeCertificate('shop', pair)
      expect(await storage.readAccount(directoryUrl)).toMatchObject({
        key: 'KEY',
        url: 'https://acme.example/acct/1',
      })
      expect(await storage.readCertificate('shop')).toEqual(pair)
    })

    it('expires challenge answers and removes them on request', async () => {
      const storage = await make()
      await storage.putChallenge('http-01', 'token-a', 'answer-a', 60_000)
      await storage.putChallenge('http-01', 'token-b', 'answer-b', 1)
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(await storage.getChallenge('http-01', 'token-a')).toBe('answer-a')
      expect(await storage.getChallenge('http-01', 'token-b')).toBeUndefined()
      expect(await storage.getChallenge('tls-alpn-01', 'token-a')).toBeUndefined()
      await storage.removeChallenge('http-01', 'token-a')
      expect(await storage.getChallenge('http-01', 'token-a')).toBeUndefined()
    })

    it('gives a lock to one holder until it is released or expires', async () => {
      const storage = await make()
      const first = await storage.lock('shop', 60_000)
      expect(first).toBeDefined()
      expect(await storage.lock('shop', 60_000)).toBeUndefined()
      expect(await storage.lock('blog', 60_000)).toBeDefined()
      await first?.release()
      const second = await storage.lock('shop', 30)
      expect(second).toBeDefined()
      await new Promise((resolve) => setTimeout(resolve, 60))
      // Expired: a third holder may take it, and the stale holder's release must not free the third's lock.
      const third = await storage.lock('shop', 60_000)
      expect(third).toBeDefined()
      await second?.release()
      expect(await storage.lock('shop', 60_000)).toBeUndefined()
    })
  })
}

sharedBehaviour('FileAcmeStorage', async () => new FileAcmeStorage(await stateDir()))

describe('FileAcmeStorage on disk', () => {
  it('writes keys 0600 and leaves no temporary files', async () => {
    const directory = await stateDir()
    const storage = new FileAcmeStorage(directory)
    await storage.writeAccount(directoryUrl, { key: 'KEY', url: 'u' })
    await storage.writeCertificate('shop', await selfSigned('shop', ['shop.test'], 86_400_000))
    const certificates = path.join(directory, 'acme/certificates')
    expect(await readdir(certificates)).toEqual(['shop.crt', 'shop.key'])
    expect((await stat(path.join(certificates, 'shop.key'))).mode & 0o777).toBe(0o600)
    const [account] = await readdir(path.join(directory, 'acme/accounts'))
    expect((await stat(path.join(directory, 'acme/accounts', account ?? ''))).mode & 0o777).toBe(0o600)
  })
})

describe('RedisAcmeStorage', () => {
  let redis: RedisServer
  let client: RedisClient
  let prefix = 0

  beforeAll(async () => {
    redis = await startRedis()
    client = connectRedis(redis.url, 2000)
    await whenReady(client, 5000)
  })
  afterAll(async () => {
    client?.disconnect()
    await redis?.stop()
  })

  sharedBehaviour('shared behaviour', async () => {
    prefix++
    return new RedisAcmeStorage(client, new FileAcmeStorage(await stateDir()), `test${prefix}:`)
  })

  it('replicas with their own state dirs see one another’s certificates; a Redis outage falls back to the local copy', async () => {
    const a = new RedisAcmeStorage(client, new FileAcmeStorage(await stateDir()), 'shared:')
    const b = new RedisAcmeStorage(client, new FileAcmeStorage(await stateDir()), 'shared:')
    const pair = await selfSigned('team', ['team.test'], 86_400_000)
    await a.writeCertificate('team', pair)
    expect(await b.readCertificate('team')).toEqual(pair)
    await redis.stop()
    try {
      expect(await a.readCertificate('team')).toEqual(pair)
      expect(await b.readCertificate('team')).toBeUndefined()
    } finally {
      await redis.start()
    }
  })
})
