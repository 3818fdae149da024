import { createHash, randomBytes, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { PemPair } from '../../policy/compile.js'
import type { RedisClient } from '../../stores/redis.js'
import { writeFileAtomic } from '../files.js'

/** An ACME account: its key, and its URL at the CA once registered. */
export interface AccountRecord {
  key: string
  url: string
}

/** What a replica answers for a challenge: the HTTP-01 key authorization, or the TLS-ALPN-01 certificate. */
export type ChallengeKind = 'http-01' | 'tls-alpn-01'

export interface Lock {
  release(): Promise<void>
}

/**
 * Where ACME state lives. Files serve one replica; Redis lets replicas share certificates and challenge
 * answers and take a per-name lock, so only one of them orders while the others pick the result up.
 */
export interface AcmeStorage {
  readAccount(directoryUrl: string): Promise<AccountRecord | undefined>
  writeAccount(directoryUrl: string, account: AccountRecord): Promise<void>
  readCertificate(appId: string): Promise<PemPair | undefined>
  writeCertificate(appId: string, pair: PemPair): Promise<void>
  putChallenge(kind: ChallengeKind, name: string, answer: string, ttlMs: number): Promise<void>
  getChallenge(kind: ChallengeKind, name: string): Promise<string | undefined>
  removeChallenge(kind: ChallengeKind, name: string): Promise<void>
  /** An exclusive lock that expires by itself, so a replica that dies mid-order does not block the others. */
  lock(name: string, ttlMs: number): Promise<Lock | undefined>
}

/** The account file name: one account per CA directory. */
function accountId(directoryUrl: string): string {
  return createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16)
}

/**
 * Challenge answers and order locks: short-lived, so kept in memory. One process keeps them itself;
 * workers keep them in the primary, so whichever worker a CA's validation reaches can answer it.
 */
export type VolatileAcmeState = Pick<
  AcmeStorage,
  'putChallenge' | 'getChallenge' | 'removeChallenge' | 'lock'
>

export class MemoryAcmeState implements VolatileAcmeState {
  private readonly challenges = new Map<string, { answer: string; expiresAt: number }>()
  private readonly locks = new Map<string, number>()

  async putChallenge(kind: ChallengeKind, name: string, answer: string, ttlMs: number): Promise<void> {
    this.challenges.set(`${kind}:${name}`, { answer, expiresAt: Date.now() + ttlMs })
  }

  async getChallenge(kind: ChallengeKind, name: string): Promise<string | undefined> {
    const entry = this.challenges.get(`${kind}:${name}`)
    return entry && entry.expiresAt > Date.now() ? entry.answer : undefined
  }

  async removeChallenge(kind: ChallengeKind, name: string): Promise<void> {
    this.challenges.delete(`${kind}:${name}`)
  }

  async lock(name: string, ttlMs: number): Promise<Lock | undefined> {
    const now = Date.now()
    if ((this.locks.get(name) ?? 0) > now) return undefined
    const expiresAt = now + ttlMs
    this.locks.set(name, expiresAt)
    return {
      release: async () => {
        if (this.locks.get(name) === expiresAt) this.locks.delete(name)
      },
    }
  }
}

/**
 * Files under `<stateDir>/acme/`: `accounts/<ca>.json` and `certificates/<app>.{crt,key}`, keys 0600,
 * every write atomic. Challenges and locks are volatile: this storage serves a single replica.
 */
export class FileAcmeStorage implements AcmeStorage {
  private readonly directory: string

  constructor(
    stateDir: string,
    private readonly volatile: VolatileAcmeState = new MemoryAcmeState(),
  ) {
    this.directory = path.join(stateDir, 'acme')
  }

  async readAccount(directoryUrl: string): Promise<AccountRecord | undefined> {
    const text = await readOptional(path.join(this.directory, 'accounts', `${accountId(directoryUrl)}.json`))
    return text === undefined ? undefined : (JSON.parse(text) as AccountRecord)
  }

  async writeAccount(directoryUrl: string, account: AccountRecord): Promise<void> {
    const file = path.join(this.directory, 'accounts', `${accountId(directoryUrl)}.json`)
    await writeFileAtomic(file, JSON.stringify({ ...account, directoryUrl }), 0o600)
  }

  async readCertificate(appId: string): Promise<PemPair | undefined> {
    const base = path.join(this.directory, 'certificates', appId)
    const [cert, key] = await Promise.all([readOptional(`${base}.crt`), readOptional(`${base}.key`)])
    return cert !== undefined && key !== undefined ? { cert, key } : undefined
  }

  async writeCertificate(appId: string, pair: PemPair): Promise<void> {
    // The key first: a crash between the two writes leaves a new key beside the old certificate, which
    // fails the key check on load and is ordered again, never a certificate served with the wrong key.
    const base = path.join(this.directory, 'certificates', appId)
    await writeFileAtomic(`${base}.key`, pair.key, 0o600)
    await writeFileAtomic(`${base}.crt`, pair.cert)
  }

  putChallenge(kind: ChallengeKind, name: string, answer: string, ttlMs: number): Promise<void> {
    return this.volatile.putChallenge(kind, name, answer, ttlMs)
  }

  getChallenge(kind: ChallengeKind, name: string): Promise<string | undefined> {
    return this.volatile.getChallenge(kind, name)
  }

  removeChallenge(kind: ChallengeKind, name: string): Promise<void> {
    return this.volatile.removeChallenge(kind, name)
  }

  lock(name: string, ttlMs: number): Promise<Lock | undefined> {
    return this.volatile.lock(name, ttlMs)
  }
}

// Deletes the lock only if it still holds our token: a lock that expired and was taken by another
// replica must not be released by us.
const releaseScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

/**
 * Redis, shared by the replicas, with the files as a local copy: certificates and accounts are written to
 * both and read from Redis first, so a restart while Redis is down still finds them. Challenge answers
 * and locks are in Redis only; they expire by themselves.
 */
export class RedisAcmeStorage implements AcmeStorage {
  constructor(
    private readonly redis: RedisClient,
    private readonly files: FileAcmeStorage,
    private readonly prefix = 'portcullis:acme:',
  ) {}

  async readAccount(directoryUrl: string): Promise<AccountRecord | undefined> {
    const shared = await this.sharedValue(`account:${accountId(directoryUrl)}`)
    return shared ? (JSON.parse(shared) as AccountRecord) : this.files.readAccount(directoryUrl)
  }

  async writeAccount(directoryUrl: string, account: AccountRecord): Promise<void> {
    await this.files.writeAccount(directoryUrl, account)
    await this.redis.set(`${this.prefix}account:${accountId(directoryUrl)}`, JSON.stringify(account))
  }

  /** The later-expiring of the shared and the local copy: a replica that renewed during an outage keeps its own. */
  async readCertificate(appId: string): Promise<PemPair | undefined> {
    const shared = await this.sharedValue(`certificate:${appId}`)
    const local = await this.files.readCertificate(appId)
    const candidates = [shared ? (JSON.parse(shared) as PemPair) : undefined, local].filter(
      (pair): pair is PemPair => pair !== undefined,
    )
    return candidates.sort((a, b) => expiryOf(b) - expiryOf(a))[0]
  }

  async writeCertificate(appId: string, pair: PemPair): Promise<void> {
    await this.files.writeCertificate(appId, pair)
    await this.redis.set(`${this.prefix}certificate:${appId}`, JSON.stringify(pair))
  }

  async putChallenge(kind: ChallengeKind, name: string, answer: string, ttlMs: number): Promise<void> {
    await this.redis.set(`${this.prefix}challenge:${kind}:${name}`, answer, 'PX', ttlMs)
  }

  async getChallenge(kind: ChallengeKind, name: string): Promise<string | undefined> {
    return (await this.redis.get(`${this.prefix}challenge:${kind}:${name}`)) ?? undefined
  }

  async removeChallenge(kind: ChallengeKind, name: string): Promise<void> {
    await this.redis.del(`${this.prefix}challenge:${kind}:${name}`)
  }

  /** A value from Redis, or undefined while Redis is unreachable (the caller falls back to the files). */
  private async sharedValue(key: string): Promise<string | undefined> {
    try {
      return (await this.redis.get(`${this.prefix}${key}`)) ?? undefined
    } catch {
      return undefined
    }
  }

  async lock(name: string, ttlMs: number): Promise<Lock | undefined> {
    const key = `${this.prefix}lock:${name}`
    const token = randomBytes(16).toString('hex')
    const taken = await this.redis.set(key, token, 'PX', ttlMs, 'NX')
    if (taken !== 'OK') return undefined
    return {
      release: async () => {
        await this.redis.eval(releaseScript, 1, key, token)
      },
    }
  }
}

function expiryOf(pair: PemPair): number {
  try {
    return Date.parse(new X509Certificate(pair.cert).validTo)
  } catch {
    return 0
  }
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}
