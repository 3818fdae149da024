import { X509Certificate } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import type { PemPair } from '../policy/compile.js'

/** What an app currently serves: its certificate's expiry, or a placeholder while ACME has none yet. */
export interface ServedCertificate {
  /** Epoch seconds. */
  expiresAt: number
  placeholder: boolean
}

/**
 * The certificate each app serves, swappable at runtime: `set` replaces an app's context and the next
 * handshake uses it, while connections already established keep theirs (ACME renewals rely on this).
 */
export class CertificateStore {
  private readonly contexts = new Map<string, SecureContext>()
  private readonly served = new Map<string, ServedCertificate>()

  constructor(private readonly fallback: SecureContext) {}

  set(appId: string, pair: PemPair, options: { placeholder?: boolean } = {}): void {
    this.contexts.set(appId, createSecureContext({ cert: pair.cert, key: pair.key }))
    this.served.set(appId, {
      expiresAt: Date.parse(new X509Certificate(pair.cert).validTo) / 1000,
      placeholder: options.placeholder ?? false,
    })
  }

  /** Forgets apps that are no longer configured. */
  retain(appIds: ReadonlySet<string>): void {
    for (const appId of this.contexts.keys()) {
      if (appIds.has(appId)) continue
      this.contexts.delete(appId)
      this.served.delete(appId)
    }
  }

  /** What each app serves. */
  current(): ReadonlyMap<string, ServedCertificate> {
    return this.served
  }

  /** When each app's real certificate expires, in epoch seconds; placeholders are left out. */
  expiries(): ReadonlyMap<string, number> {
    return new Map(
      [...this.served].flatMap(([appId, served]) => (served.placeholder ? [] : [[appId, served.expiresAt]])),
    )
  }

  /** The app's context, or the placeholder for names no app claims. */
  contextFor(appId: string | undefined): SecureContext {
    return (appId !== undefined && this.contexts.get(appId)) || this.fallback
  }
}
