import { X509Certificate } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import * as acme from 'acme-client'
import type { Logger } from 'pino'
import type { AcmeSettings, App, PemPair } from '../../policy/compile.js'
import type { CertificateStore } from '../certificates.js'
import { selfSigned } from '../internal-ca.js'
import type { AcmeStorage, ChallengeKind } from './storage.js'

export interface AcmeManagerOptions {
  storage: AcmeStorage
  certificates: CertificateStore
  log: Logger
  /** First wait after a failed order; it doubles on each failure up to an hour. */
  retryMs: number
  /** How often the CA is asked whether it has validated the challenges and issued. */
  pollMs: number
  /** Told of every order this replica makes. */
  onOrder?(appId: string, success: boolean): void
  /** Told when a certificate this process ordered is stored, so workers beside it can serve it now. */
  onStored?(appId: string): void
}

/** One app under ACME management; replaced (not mutated) when a reload changes its hosts or settings. */
interface Managed {
  readonly app: App
  readonly acme: AcmeSettings
  timer: NodeJS.Timeout | undefined
  failures: number
  /** The certificate being served, to tell whether storage holds a newer one. */
  served: string | undefined
}

const hour = 3_600_000
/** Long enough for an order with a slow CA; a replica that dies mid-order frees the name after it. */
const orderLockMs = 5 * 60_000
/** Challenge answers outlive any order, then expire by themselves. */
const challengeTtlMs = 10 * 60_000
/** While another replica holds a name's lock, how often this one looks for its result. */
const peerPollMs = 1000
/** ACME tokens are base64url with at least 128 bits of entropy. */
const challengeToken = /^[A-Za-z0-9_-]{22,128}$/
/** setTimeout's limit; longer waits are taken in steps. */
const longestTimerMs = 2 ** 31 - 1

/**
 * Keeps a certificate from an ACME CA for every app with `tls.mode: acme`, as Caddy does:
 * - at start a stored certificate is served at once; without one, a self-signed placeholder is, and an
 *   order starts in the background, so a slow or unreachable CA never delays start-up;
 * - renewal when a third of the lifetime is left (minus a random jitter so replicas and apps spread out);
 *   failures retry with exponential backoff and never replace a still-valid certificate;
 * - with shared storage, one replica orders per app under a lock and the others pick up its result.
 */
export class AcmeManager {
  private readonly managed = new Map<string, Managed>()
  private readonly alpnContexts = new Map<string, { answer: string; context: SecureContext }>()
  private closed = false

  constructor(private readonly options: AcmeManagerOptions) {
    // acme-client retries a failed request itself, by default 5 times 5 s apart (75 s) before an order
    // even fails; our own backoff retries orders, so its inner retry is kept short. Retry-After wins.
    const defaults = acme.axios.defaults as { acmeSettings?: Record<string, unknown> }
    defaults.acmeSettings = {
      ...defaults.acmeSettings,
      retryMaxAttempts: 3,
      retryDefaultDelay: options.pollMs / 1000,
    }
  }

  /** Follows a newly applied set of apps: new ACME apps get a certificate or a placeholder now. */
  async update(apps: readonly App[]): Promise<void> {
    const wanted = new Map(
      apps.flatMap((app) =>
        app.tls.mode === 'acme' && app.tls.acme ? [[app.id, { app, acme: app.tls.acme }] as const] : [],
      ),
    )
    for (const [appId, entry] of this.managed) {
      const next = wanted.get(appId)
      if (next && sameOrder(entry, next.app)) {
        wanted.delete(appId)
        continue
      }
      clearTimeout(entry.timer)
      this.managed.delete(appId)
    }
    await Promise.all(
      [...wanted.values()].map(async ({ app, acme }) => {
        const entry: Managed = {
          app,
          acme,
          timer: undefined,
          failures: 0,
          served: undefined,
        }
        this.managed.set(app.id, entry)
        // A reload that adds a host keeps the current certificate for the others until the new one comes.
        const serving = this.options.certificates.current().get(app.id)
        // Storage that cannot be read now (Redis down) is like storage without a certificate: the
        // order scheduled below tries again, and a certificate being served is never taken away.
        const stored = await this.installStored(entry).catch((error: unknown) => {
          this.options.log.warn({ err: error, app: app.id }, 'cannot read the stored ACME certificate')
          return undefined
        })
        if (!stored && (!serving || serving.placeholder)) await this.installPlaceholder(entry)
        this.schedule(entry, 0)
      }),
    )
  }

  /**
   * The HTTP-01 answer for a token, from whichever replica started the challenge. Only asked when some
   * app validates with HTTP-01 and the token looks like one (base64url, RFC 8555 §8.1), so clients
   * cannot turn port 80 into a stream of storage lookups.
   */
  async httpChallenge(token: string): Promise<string | undefined> {
    if (!challengeToken.test(token)) return undefined
    for (const entry of this.managed.values()) {
      if (entry.acme.challenge === 'http-01') return this.options.storage.getChallenge('http-01', token)
    }
    return undefined
  }

  /**
   * The TLS-ALPN-01 certificate for a name, from whichever replica started the challenge; only looked up
   * for hosts of apps that validate this way.
   */
  async alpnChallenge(servername: string): Promise<SecureContext | undefined> {
    const name = servername.toLowerCase()
    const ours = [...this.managed.values()].some(
      (entry) => entry.acme.challenge === 'tls-alpn-01' && entry.app.hosts.includes(name),
    )
    if (!ours) return undefined
    const answer = await this.options.storage.getChallenge('tls-alpn-01', name)
    if (answer === undefined) return undefined
    const cached = this.alpnContexts.get(name)
    if (cached?.answer === answer) return cached.context
    const pair = JSON.parse(answer) as PemPair
    const context = createSecureContext({ cert: pair.cert, key: pair.key })
    this.alpnContexts.set(name, { answer, context })
    return context
  }

  /** Serves what storage now holds for the app: another worker just stored a certificate there. */
  pickUp(appId: string): void {
    const entry = this.managed.get(appId)
    if (!entry) return
    this.installStored(entry).catch((error: unknown) =>
      this.options.log.warn({ err: error, app: appId }, 'cannot read the stored ACME certificate'),
    )
  }

  /** Whether any app validates with TLS-ALPN-01, so the HTTPS listener must look for `acme-tls/1`. */
  get answersTlsAlpn(): boolean {
    for (const entry of this.managed.values()) if (entry.acme.challenge === 'tls-alpn-01') return true
    return false
  }

  close(): void {
    this.closed = true
    for (const entry of this.managed.values()) clearTimeout(entry.timer)
    this.managed.clear()
  }

  private schedule(entry: Managed, delayMs: number): void {
    if (this.closed || this.managed.get(entry.app.id) !== entry) return
    clearTimeout(entry.timer)
    entry.timer = setTimeout(
      () => {
        entry.timer = undefined
        if (delayMs > longestTimerMs) this.schedule(entry, delayMs - longestTimerMs)
        else void this.check(entry)
      },
      Math.min(delayMs, longestTimerMs),
    )
    entry.timer.unref()
  }

  /** Picks up a certificate another replica stored, orders one when it is due, then sets the next check. */
  private async check(entry: Managed): Promise<void> {
    const { log, storage } = this.options
    const current = entry.app.id
    try {
      const stored = await this.installStored(entry)
      const renewAt = stored && renewalTime(stored)
      if (renewAt && Date.now() < renewAt) {
        entry.failures = 0
        this.schedule(entry, renewAt - Date.now())
        return
      }
      const lock = await storage.lock(current, orderLockMs)
      if (!lock) {
        log.debug({ app: current }, 'another replica is ordering this certificate; waiting for its result')
        this.schedule(entry, peerPollMs)
        return
      }
      try {
        // Another replica may have finished between our read and our lock.
        const fresh = await this.installStored(entry)
        const freshRenewAt = fresh && renewalTime(fresh)
        if (freshRenewAt && Date.now() < freshRenewAt) {
          this.schedule(entry, freshRenewAt - Date.now())
          return
        }
        const issued = await this.order(entry).catch((error: unknown) => {
          this.options.onOrder?.(current, false)
          throw error
        })
        this.options.onOrder?.(current, true)
        if (this.managed.get(current) !== entry) return
        this.install(entry, issued)
        await storage
          .writeCertificate(current, issued)
          .then(() => this.options.onStored?.(current))
          .catch((error: unknown) =>
            log.error(
              { err: error, app: current },
              'could not store the new ACME certificate everywhere; serving it, other replicas may order their own',
            ),
          )
        entry.failures = 0
        const certificate = new X509Certificate(issued.cert)
        log.info(
          { app: current, hosts: entry.app.hosts, validTo: certificate.validTo, ca: entry.acme.directoryUrl },
          'ACME certificate issued and now served',
        )
        this.schedule(entry, renewalTime(certificate) - Date.now())
      } finally {
        await lock.release().catch(() => {})
      }
    } catch (error) {
      entry.failures++
      const delayMs = Math.min(this.options.retryMs * 2 ** (entry.failures - 1), hour)
      log.error(
        {
          err: error,
          app: current,
          ca: entry.acme.directoryUrl,
          failures: entry.failures,
          retryInMs: delayMs,
        },
        'ACME certificate order failed; still serving the current certificate, retrying later',
      )
      this.schedule(entry, delayMs)
    }
  }

  private async order(entry: Managed): Promise<PemPair> {
    const { storage, log, pollMs } = this.options
    const { acme: settings, app } = entry
    const account = await storage.readAccount(settings.directoryUrl)
    const accountKey = account?.key ?? (await acme.crypto.createPrivateEcdsaKey()).toString()
    const client = new acme.Client({
      directoryUrl: settings.directoryUrl,
      accountKey,
      ...(account?.url ? { accountUrl: account.url } : {}),
      ...(settings.eab ? { externalAccountBinding: settings.eab } : {}),
      backoffMin: pollMs,
      backoffMax: pollMs * 10,
    })
    if (!account) {
      // Registered and stored before ordering: a crash mid-order must not create a second account.
      await client.createAccount({ termsOfServiceAgreed: true, contact: [`mailto:${settings.email}`] })
      await storage.writeAccount(settings.directoryUrl, { key: accountKey, url: client.getAccountUrl() })
      log.info(
        { app: app.id, ca: settings.directoryUrl, account: client.getAccountUrl() },
        'ACME account created',
      )
    }
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: app.hosts[0], altNames: [...app.hosts] },
      await acme.crypto.createPrivateEcdsaKey(),
    )
    log.info({ app: app.id, hosts: app.hosts, challenge: settings.challenge }, 'ordering an ACME certificate')
    const kind: ChallengeKind = settings.challenge
    const cert = await client.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: [kind],
      // The CA validates anyway; a self-check through this machine's resolver only adds a way to hang.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (kind === 'http-01') {
          await storage.putChallenge(kind, challenge.token, keyAuthorization, challengeTtlMs)
        } else {
          const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization)
          const answer = JSON.stringify({ cert: alpnCert.toString(), key: alpnKey.toString() })
          await storage.putChallenge(kind, authz.identifier.value, answer, challengeTtlMs)
        }
      },
      challengeRemoveFn: async (authz, challenge) => {
        await storage.removeChallenge(kind, kind === 'http-01' ? challenge.token : authz.identifier.value)
      },
    })
    return { cert, key: key.toString() }
  }

  /** Serves the stored certificate if it is usable for the app's hosts; returns it, parsed. */
  private async installStored(entry: Managed): Promise<X509Certificate | undefined> {
    const stored = await this.options.storage.readCertificate(entry.app.id)
    const certificate = stored && usableFor(stored, entry.app.hosts)
    if (!stored || !certificate) return undefined
    if (entry.served !== stored.cert && this.managed.get(entry.app.id) === entry) {
      const firstTime = entry.served === undefined
      this.install(entry, stored)
      this.options.log.info(
        { app: entry.app.id, validTo: certificate.validTo },
        firstTime ? 'serving the stored ACME certificate' : 'serving a renewed ACME certificate from storage',
      )
    }
    return certificate
  }

  private install(entry: Managed, pair: PemPair): void {
    this.options.certificates.set(entry.app.id, pair)
    entry.served = pair.cert
  }

  private async installPlaceholder(entry: Managed): Promise<void> {
    const { app } = entry
    const placeholder = await selfSigned(
      `Portcullis placeholder: certificate for ${app.hosts[0]} pending`,
      app.hosts,
      7 * 86_400_000,
    )
    if (this.managed.get(app.id) !== entry) return
    this.options.certificates.set(app.id, placeholder, { placeholder: true })
    this.options.log.warn(
      { app: app.id, hosts: app.hosts },
      'no ACME certificate yet: serving a self-signed placeholder until the CA issues one',
    )
  }
}

function sameOrder(entry: Managed, app: App): boolean {
  return JSON.stringify([entry.app.hosts, entry.acme]) === JSON.stringify([app.hosts, app.tls.acme])
}

/** A third of the lifetime before expiry, minus up to 1/30 of it at random so renewals spread out. */
function renewalTime(certificate: X509Certificate): number {
  const from = Date.parse(certificate.validFrom)
  const to = Date.parse(certificate.validTo)
  const lifetime = to - from
  return to - lifetime / 3 - Math.random() * (lifetime / 30)
}

/** The certificate, if it is unexpired, covers every host and matches its key. */
function usableFor(pair: PemPair, hosts: readonly string[]): X509Certificate | undefined {
  try {
    createSecureContext({ cert: pair.cert, key: pair.key })
    const certificate = new X509Certificate(pair.cert)
    if (Date.parse(certificate.validTo) <= Date.now()) return undefined
    return hosts.every((host) => certificate.checkHost(host) !== undefined) ? certificate : undefined
  } catch {
    return undefined
  }
}
