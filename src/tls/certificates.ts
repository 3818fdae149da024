import { createSecureContext, type SecureContext } from 'node:tls'
import type { PemPair } from '../policy/compile.js'

/**
 * The certificate each app serves, swappable at runtime: `set` replaces an app's context and the next
 * handshake uses it, while connections already established keep theirs (ACME renewals rely on this).
 */
export class CertificateStore {
  private readonly contexts = new Map<string, SecureContext>()

  constructor(private readonly fallback: SecureContext) {}

  set(appId: string, pair: PemPair): void {
    this.contexts.set(appId, createSecureContext({ cert: pair.cert, key: pair.key }))
  }

  /** Forgets apps that are no longer configured. */
  retain(appIds: ReadonlySet<string>): void {
    for (const appId of this.contexts.keys()) if (!appIds.has(appId)) this.contexts.delete(appId)
  }

  /** The app's context, or the placeholder for names no app claims. */
  contextFor(appId: string | undefined): SecureContext {
    return (appId !== undefined && this.contexts.get(appId)) || this.fallback
  }
}
