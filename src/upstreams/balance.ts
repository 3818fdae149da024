import { createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { App } from '../policy/compile.js'
import type { Upstream } from './target.js'

/** What balancing may know of the client: its derived IP and its request headers. */
export interface BalancedClient {
  ip: string
  headers: IncomingHttpHeaders
}

export interface Picked {
  upstream: Upstream
  /** A Set-Cookie value pinning the client to this target (sticky balancing). */
  setCookie?: string
}

/** Round-robin and least-connections share one turn counter per app's set of targets. */
export interface Rotation {
  turn: number
}

const stickyCookie = 'pcl_upstream'

/**
 * The selection policies of `upstream.balance`, over the targets in rotation (never empty): round
 * robin, least connections, rendezvous hashing on the client IP or a header, and sticky sessions
 * pinned by a signed cookie.
 */
export class Balancer {
  constructor(
    /** Signs sticky cookies, so a client cannot pin itself to a target of its choosing. */
    private readonly stickySecret: Buffer,
  ) {}

  choose(app: App, usable: Upstream[], rotation: Rotation, client: BalancedClient): Picked {
    const balance = app.upstream.balance
    if (balance === 'hash') return { upstream: highestRandomWeight(usable, affinityKey(app, client)) }
    if (balance === 'sticky') {
      const pinned = this.stickyTarget(app, client.headers.cookie, usable)
      if (pinned) return { upstream: pinned }
      const chosen = leastConnections(usable, rotation)
      return { upstream: chosen, setCookie: this.cookieFor(app, chosen) }
    }
    if (balance === 'least-connections') return { upstream: leastConnections(usable, rotation) }
    const chosen = usable[rotation.turn % usable.length] as Upstream
    rotation.turn = (rotation.turn + 1) % 1_000_000
    return { upstream: chosen }
  }

  private stickyTarget(app: App, cookieHeader: string | undefined, usable: Upstream[]): Upstream | undefined {
    const value = cookieValue(cookieHeader, stickyCookie)
    if (!value) return undefined
    const [id, signature] = value.split('.')
    if (!id || !signature) return undefined
    const expected = Buffer.from(this.sign(app, id))
    const given = Buffer.from(signature)
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    return usable.find((target) => target.id === id)
  }

  private cookieFor(app: App, target: Upstream): string {
    return `${stickyCookie}=${target.id}.${this.sign(app, target.id)}; Path=/; HttpOnly; SameSite=Lax`
  }

  private sign(app: App, id: string): string {
    return createHmac('sha256', this.stickySecret).update(`${app.id}|${id}`).digest('base64url')
  }
}

/** The value `hashOn` names for this client; a missing header falls back to the client IP. */
function affinityKey(app: App, client: BalancedClient): string {
  const { hashOn } = app.upstream
  if (hashOn === 'ip') return client.ip
  const value = client.headers[hashOn.slice('header:'.length)]
  return (Array.isArray(value) ? value[0] : value) || client.ip
}

/**
 * Rendezvous (highest random weight) hashing: each target scores hash(key, target) and the highest
 * wins. A key keeps its target while that target is usable, and when one leaves or returns only the
 * keys whose best target it is move; the others stay put.
 */
function highestRandomWeight(usable: Upstream[], key: string): Upstream {
  let best = usable[0] as Upstream
  let bestScore = -1
  for (const target of usable) {
    const score = fnv1a(`${target.id}\u0000${key}`)
    if (score > bestScore) {
      best = target
      bestScore = score
    }
  }
  return best
}

/** FNV-1a, 32 bits, with a final avalanche so close keys spread: cheap, and plenty for balancing. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index)
    hash = Math.imul(hash, 0x01000193)
  }
  hash ^= hash >>> 16
  hash = Math.imul(hash, 0x85ebca6b)
  hash ^= hash >>> 13
  return hash >>> 0
}

/** The target with the fewest requests in progress; ties go round in turn so equal targets share. */
function leastConnections(usable: Upstream[], rotation: Rotation): Upstream {
  const start = rotation.turn++ % usable.length
  let best = usable[start] as Upstream
  for (let offset = 1; offset < usable.length; offset++) {
    const candidate = usable[(start + offset) % usable.length] as Upstream
    if (candidate.active < best.active) best = candidate
  }
  return best
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const separator = part.indexOf('=')
    if (separator > 0 && part.slice(0, separator).trim() === name) return part.slice(separator + 1).trim()
  }
  return undefined
}
