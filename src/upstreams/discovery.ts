import { Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'

/** A target the gateway looks up in DNS, again and again, instead of a fixed address. */
export interface DiscoveredTarget {
  /** As written in the policy: `dns+http://name:port` or `srv+http://_service._tcp.name`. */
  readonly spec: string
  readonly kind: 'a' | 'srv'
  readonly scheme: 'http' | 'https'
  readonly name: string
  /** For `dns+`: the port of every address (the scheme's default when none is written). */
  readonly port: number
}

export interface Resolution {
  /** Origins such as `http://10.0.0.7:8080`, sorted so equal sets compare equal. */
  origins: string[]
  /** The shortest TTL of the records used, in ms. */
  ttlMs: number
}

/** A policy target that names DNS records, or undefined for a fixed origin. */
export function discoveredTarget(text: string): DiscoveredTarget | undefined {
  const url = new URL(text)
  const scheme = /^(dns|srv)\+(https?):$/.exec(url.protocol)
  if (!scheme) return undefined
  const secure = scheme[2] === 'https'
  return {
    spec: text,
    kind: scheme[1] === 'srv' ? 'srv' : 'a',
    scheme: secure ? 'https' : 'http',
    name: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port ? Number(url.port) : secure ? 443 : 80,
  }
}

/**
 * Resolves discovered targets into origins: every A and AAAA address of a name, or for SRV the
 * hosts (themselves resolved) and ports of the records of the lowest priority (RFC 2782); their
 * weights are left to the app's own balancing. Throws when no address is found.
 */
export class TargetResolver {
  private readonly resolver: Resolver

  /** `servers`: `host:port` of the DNS servers to ask; the system's when empty. */
  constructor(servers: readonly string[]) {
    this.resolver = new Resolver({ timeout: 2000, tries: 2 })
    if (servers.length > 0) this.resolver.setServers([...servers])
  }

  async resolve(target: DiscoveredTarget): Promise<Resolution> {
    if (target.kind === 'a') {
      const { addresses, ttlMs } = await this.addresses(target.name)
      return {
        origins: addresses.map((address) => origin(target.scheme, address, target.port)).sort(),
        ttlMs,
      }
    }
    const records = await this.resolver.resolveSrv(target.name)
    if (records.length === 0) throw new Error(`no SRV record for ${target.name}`)
    const best = Math.min(...records.map((record) => record.priority))
    const chosen = records.filter((record) => record.priority === best)
    const resolved = await Promise.all(
      chosen.map(async (record) => {
        const { addresses, ttlMs } = await this.addresses(record.name)
        return { origins: addresses.map((address) => origin(target.scheme, address, record.port)), ttlMs }
      }),
    )
    return {
      origins: [...new Set(resolved.flatMap((entry) => entry.origins))].sort(),
      ttlMs: Math.min(...resolved.map((entry) => entry.ttlMs)),
    }
  }

  /** A and AAAA addresses of a name (an address literal is itself); a family without records is skipped. */
  private async addresses(name: string): Promise<{ addresses: string[]; ttlMs: number }> {
    if (isIP(name)) return { addresses: [name], ttlMs: Number.POSITIVE_INFINITY }
    const [v4, v6] = await Promise.allSettled([
      this.resolver.resolve4(name, { ttl: true }),
      this.resolver.resolve6(name, { ttl: true }),
    ])
    const records = [v4, v6].flatMap((result) => (result.status === 'fulfilled' ? result.value : []))
    if (records.length === 0) {
      const failure = [v4, v6].find((result) => result.status === 'rejected')
      throw failure?.status === 'rejected' ? failure.reason : new Error(`no address for ${name}`)
    }
    return {
      addresses: records.map((record) => record.address),
      ttlMs: Math.min(...records.map((record) => record.ttl)) * 1000,
    }
  }
}

function origin(scheme: string, address: string, port: number): string {
  return `${scheme}://${isIP(address) === 6 ? `[${address}]` : address}:${port}`
}
