import { X509Certificate } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import type { PemPair } from '../policy/compile.js'

/**
 * The certificate each app serves, swappable at runtime: `set` replaces an app's context and the next
 * handshake uses it, while connections already established keep theirs (ACME renewals rely on this).
 */
export class CertificateStore {
  private readonly contexts = new Map<string, SecureContext>()
  private readonly expiry = new Map<string, number>()

  constructor(private readonly fallback: SecureContext) {}

  set(appId: string, pair: PemPair): void {
    this.contexts.set(appId, createSecureContext({ cert: pair.cert, key: pair.key }))
    this.expiry.set(appId, Date.parse(new X509Certificate(pair.cert).validTo) / 1000)
  }

  /** Forgets apps that are no longer configured. */
  retain(appIds: ReadonlySet<string>): void {
    for (const appId of this.contexts.keys()) {
      if (appIds.has(appId)) continue
      this.contexts.delete(appId)
      this.expiry.delete(appId)
    }
  }

  /** When each app's certificate expires, in epoch seconds. */
  expiries(): ReadonlyMap<string, number> {
    return this.expiry
  }

  /** The app's context, or the placeholder for names no app claims. */
  contextFor(appId: string | undefined): SecureContext {
    return (appId !== undefined && this.contexts.get(appId)) || this.fallback
  }
}
