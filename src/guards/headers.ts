import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import helmet from 'helmet'
import type { ResponseEdit } from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

/** Never sent to clients: they tell attackers what runs behind the gateway. */
const alwaysRemoved = ['server', 'x-powered-by']

/**
 * Security headers. helmet (the engine of @fastify/helmet) computes them once per app at load, since
 * they do not depend on the request; each response then gets the ones the app did not set itself.
 * `set` overrides the app, `remove` and Server/X-Powered-By are always removed.
 */
export class SecurityHeaders implements ResponseEdit {
  private readonly defaults: [string, string][]
  private readonly overrides: [string, string][]
  private readonly removed: ReadonlySet<string>

  constructor(section: Policy['headers']) {
    const defaults = helmetHeaders(section)
    if (section.contentSecurityPolicy) defaults['content-security-policy'] = section.contentSecurityPolicy
    this.defaults = Object.entries(defaults)
    this.overrides = Object.entries(section.set)
    this.removed = new Set([...alwaysRemoved, ...section.remove])
  }

  drops(name: string): boolean {
    return this.removed.has(name)
  }

  explainEdit(): string {
    const added = this.defaults.map(([name, value]) => `${name}: ${value}`).join(', ')
    const set = this.overrides.map(([name, value]) => `${name}: ${value}`).join(', ')
    return [
      `removed: ${[...this.removed].join(', ')}`,
      added ? `added where the app set none: ${added}` : undefined,
      set ? `set over the app's: ${set}` : undefined,
    ]
      .filter((part) => part !== undefined)
      .join('; ')
  }

  /** Defaults where the app set none, then the overrides. */
  edit(headers: OutgoingHttpHeaders): void {
    for (const [name, value] of this.defaults) if (headers[name] === undefined) headers[name] = value
    for (const [name, value] of this.overrides) headers[name] = value
  }
}

function helmetHeaders(section: Policy['headers']): Record<string, string> {
  const headers: Record<string, string> = {}
  const collector = {
    setHeader: (name: string, value: string | number) => {
      headers[name.toLowerCase()] = String(value)
    },
    removeHeader: (name: string) => {
      delete headers[name.toLowerCase()]
    },
  }
  const off = <T>(value: string, options: T): T | false => (value === 'off' ? false : options)
  helmet({
    contentSecurityPolicy: false,
    strictTransportSecurity: false, // the gateway sends HSTS from the policy's hsts section
    // It ends document.domain, which an old app's cross-subdomain frames may rely on.
    originAgentCluster: false,
    xFrameOptions: off(section.frameOptions, {
      action: section.frameOptions.toLowerCase() as 'deny' | 'sameorigin',
    }),
    referrerPolicy: { policy: section.referrerPolicy },
    crossOriginOpenerPolicy: off(section.crossOriginOpenerPolicy, {
      policy: section.crossOriginOpenerPolicy as 'same-origin' | 'same-origin-allow-popups' | 'unsafe-none',
    }),
    crossOriginResourcePolicy: off(section.crossOriginResourcePolicy, {
      policy: section.crossOriginResourcePolicy as 'same-origin' | 'same-site' | 'cross-origin',
    }),
    crossOriginEmbedderPolicy: off(section.crossOriginEmbedderPolicy, {
      policy: section.crossOriginEmbedderPolicy as 'require-corp' | 'credentialless' | 'unsafe-none',
    }),
  })({} as IncomingMessage, collector as unknown as ServerResponse, () => {})
  return headers
}

/** Strict-Transport-Security on every answer over HTTPS, when the policy's `hsts` asks for it. */
export class StrictTransportSecurity implements ResponseEdit {
  constructor(private readonly value: string) {}

  explainEdit(): string {
    return `strict-transport-security: ${this.value} on HTTPS answers, replacing the app's`
  }

  edit(headers: OutgoingHttpHeaders, secure: boolean): void {
    if (secure) headers['strict-transport-security'] = this.value
  }
}
