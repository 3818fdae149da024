import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { Pool, request as undiciRequest } from 'undici'
import type { App } from '../policy/compile.js'

/** One target of one app: its keep-alive pool and what the balancer knows about it. */
export interface Upstream {
  readonly origin: string
  readonly pool: Pool
  /** Short public id of the target, used in the sticky cookie. */
  readonly id: string
  /** Requests and WebSockets in progress (least-connections). */
  active: number
  /** Active health check verdict; true until a check says otherwise. */
  healthy: boolean
  /** Passive health: out of rotation until this time (epoch ms). */
  downUntil: number
  consecutiveFailures: number
  checkStreak: number
}

export interface Picked {
  upstream: Upstream
  /** A Set-Cookie value pinning the client to this target (sticky balancing). */
  setCookie?: string
}

interface AppTargets {
  app: App
  targets: Upstream[]
  turn: number
  timers: NodeJS.Timeout[]
}

export const stickyCookie = 'pcl_upstream'

/** What balancing may know of the client: its derived IP and its request headers. */
export interface BalancedClient {
  ip: string
  headers: IncomingHttpHeaders
}

/**
 * Keep-alive connection pools and balancing, one pool per (app, target). Reloading keeps the pools and
 * health of targets whose settings did not change, so a reload does not cost every upstream connection;
 * pools that are gone close gracefully, letting their in-flight requests finish.
 */
export class UpstreamPools {
  private apps = new Map<string, AppTargets>()

  constructor(
    private readonly options: {
      log: Logger
      /** Signs sticky cookies, so a client cannot pin itself to a target of its choosing. */
      stickySecret: Buffer
      onHealthChange?(app: string, origin: string, healthy: boolean): void
    },
  ) {}

  update(apps: readonly App[]): void {
    const previous = new Map<string, Upstream>()
    for (const entry of this.apps.values()) {
      for (const timer of entry.timers) clearInterval(timer)
      for (const target of entry.targets) previous.set(poolKey(entry.app, target.origin), target)
    }
    const next = new Map<string, AppTargets>()
    const kept = new Set<Upstream>()
    for (const app of apps) {
      const targets = app.upstream.targets.map((origin) => {
        const reused = previous.get(poolKey(app, origin))
        if (reused) {
          kept.add(reused)
          return reused
        }
        return newUpstream(app, origin)
      })
      const entry: AppTargets = { app, targets, turn: 0, timers: [] }
      if (app.upstream.healthCheck) entry.timers = targets.map((target) => this.watch(app, target))
      next.set(app.id, entry)
    }
    for (const target of previous.values()) if (!kept.has(target)) void target.pool.close()
    this.apps = next
  }

  /**
   * A target for the request, or undefined when none is healthy. `avoid` holds targets that already
   * failed this request (retries).
   */
  pick(app: App, client: BalancedClient, avoid?: ReadonlySet<Upstream>): Picked | undefined {
    const entry = this.apps.get(app.id)
    if (!entry) return undefined
    const usable = usableTargets(entry.targets, avoid)
    if (usable.length === 0) return undefined
    const balance = app.upstream.balance
    if (balance === 'hash') return { upstream: highestRandomWeight(usable, affinityKey(app, client)) }
    if (balance === 'sticky') {
      const pinned = this.stickyTarget(app, client.headers.cookie, usable)
      if (pinned) return { upstream: pinned }
      const chosen = leastConnections(usable, entry)
      return { upstream: chosen, setCookie: this.cookieFor(app, chosen) }
    }
    if (balance === 'least-connections') return { upstream: leastConnections(usable, entry) }
    const chosen = usable[entry.turn % usable.length] as Upstream
    entry.turn = (entry.turn + 1) % 1_000_000
    return { upstream: chosen }
  }

  /** Every connection to the target is busy and the queue for one is full: the request is refused at once. */
  isSaturated(app: App, target: Upstream): boolean {
    return target.active >= app.upstream.maxConnections && target.pool.stats.queued >= app.upstream.maxQueue
  }

  /** A request started on the target (least-connections counts them). */
  begin(target: Upstream): void {
    target.active++
  }

  /**
   * A request on the target ended. Passive health: consecutive failures (connect errors, 5xx) take the
   * target out for the cool-down; a success resets the count.
   */
  end(app: App, target: Upstream, failed: boolean): void {
    target.active--
    if (!failed) {
      target.consecutiveFailures = 0
      return
    }
    target.consecutiveFailures++
    const { failures, cooldown } = app.upstream.passive
    if (target.consecutiveFailures >= failures && target.downUntil <= Date.now()) {
      target.downUntil = Date.now() + cooldown
      target.consecutiveFailures = 0
      this.options.log.warn(
        { app: app.id, upstream: target.origin, cooldownMs: cooldown, rule: 'upstream.passive' },
        'upstream target failing: out of rotation for the cool-down',
      )
    }
  }

  /** How many of the app's targets are in rotation now. */
  healthyCount(appId: string): number {
    const now = Date.now()
    return (this.apps.get(appId)?.targets ?? []).filter((target) => inRotation(target, now)).length
  }

  /** Per app: each target's state, for readiness, metrics and the dashboard. */
  status(): Map<string, { origin: string; healthy: boolean; active: number }[]> {
    const now = Date.now()
    return new Map(
      [...this.apps].map(([appId, entry]) => [
        appId,
        entry.targets.map((target) => ({
          origin: target.origin,
          healthy: inRotation(target, now),
          active: target.active,
        })),
      ]),
    )
  }

  /** Lets requests in flight finish, then closes every pool; `destroy` cuts what is still running. */
  async close(how: 'close' | 'destroy' = 'close'): Promise<void> {
    const entries = [...this.apps.values()]
    this.apps.clear()
    for (const entry of entries) for (const timer of entry.timers) clearInterval(timer)
    await Promise.all(entries.flatMap((entry) => entry.targets.map((target) => target.pool[how]())))
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
    return createHmac('sha256', this.options.stickySecret).update(`${app.id}|${id}`).digest('base64url')
  }

  /** Active health checks: GET the path on the target's own pool every interval. */
  private watch(app: App, target: Upstream): NodeJS.Timeout {
    const check = app.upstream.healthCheck
    if (!check) throw new Error('no health check configured')
    const timer = setInterval(async () => {
      let ok = false
      try {
        // Not through the target's pool: a probe must not wait behind traffic for one of its connections.
        const answer = await undiciRequest(`${target.origin}${check.path}`, {
          headersTimeout: check.timeout,
          bodyTimeout: check.timeout,
          signal: AbortSignal.timeout(check.timeout),
        })
        ok = await meetsExpectations(answer, check.expect)
      } catch {}
      target.checkStreak = ok === target.healthy ? 0 : target.checkStreak + 1
      const threshold = ok ? check.healthyThreshold : check.unhealthyThreshold
      if (target.checkStreak >= threshold) {
        target.healthy = ok
        target.checkStreak = 0
        if (ok) target.downUntil = 0
        this.options.log[ok ? 'info' : 'warn'](
          { app: app.id, upstream: target.origin, healthy: ok, rule: 'upstream.healthCheck' },
          ok ? 'upstream target healthy again' : 'upstream target failed its health checks: out of rotation',
        )
        this.options.onHealthChange?.(app.id, target.origin, ok)
      }
    }, check.interval)
    timer.unref()
    return timer
  }
}

type HealthExpectations = NonNullable<App['upstream']['healthCheck']>['expect']

/** Bodies of health answers are read up to this size; a larger one fails a body or JSON expectation. */
const maxHealthBody = 64 * 1024

/** Whether a health answer is healthy: its status, then any text or JSON fields the policy expects. */
async function meetsExpectations(
  answer: Awaited<ReturnType<typeof undiciRequest>>,
  expect: HealthExpectations,
): Promise<boolean> {
  const statusOk = expect?.status
    ? expect.status.includes(answer.statusCode)
    : answer.statusCode >= 200 && answer.statusCode < 400
  if (!statusOk || (!expect?.body && !expect?.json)) {
    await answer.body.dump()
    return statusOk
  }
  let text = ''
  for await (const chunk of answer.body) {
    text += chunk
    if (text.length > maxHealthBody) return false
  }
  if (expect.body && !text.includes(expect.body)) return false
  if (!expect.json) return true
  let document: unknown
  try {
    document = JSON.parse(text)
  } catch {
    return false
  }
  return Object.entries(expect.json).every(([field, wanted]) => {
    const value = field
      .split('.')
      .reduce<unknown>(
        (node, key) =>
          node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined,
        document,
      )
    return value === wanted
  })
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

/** Healthy by the active checks and not in a passive cool-down. */
function inRotation(target: Upstream, now: number): boolean {
  return target.healthy && target.downUntil <= now
}

/** The targets in rotation; on the hot path where all are, the same array, without allocating. */
function usableTargets(targets: Upstream[], avoid: ReadonlySet<Upstream> | undefined): Upstream[] {
  const now = Date.now()
  for (const target of targets) {
    if (!inRotation(target, now) || avoid?.has(target))
      return targets.filter((each) => inRotation(each, now) && !avoid?.has(each))
  }
  return targets
}

function poolKey(app: App, origin: string): string {
  return `${app.id} ${origin} ${app.upstream.timeouts.connect} ${app.upstream.maxConnections}`
}

function newUpstream(app: App, origin: string): Upstream {
  return {
    origin,
    pool: new Pool(origin, {
      connect: { timeout: app.upstream.timeouts.connect },
      connections: app.upstream.maxConnections,
      // An idle connection closes after 4 s whatever the target's Keep-Alive header offers.
      keepAliveTimeout: 4000,
      keepAliveMaxTimeout: 4000,
      pipelining: 1,
    }),
    id: createHash('sha256').update(origin).digest('base64url').slice(0, 12),
    active: 0,
    healthy: true,
    downUntil: 0,
    consecutiveFailures: 0,
    checkStreak: 0,
  }
}

/** The target with the fewest requests in progress; ties go round in turn so equal targets share. */
function leastConnections(usable: Upstream[], entry: AppTargets): Upstream {
  const start = entry.turn++ % usable.length
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
