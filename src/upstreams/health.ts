import type { Logger } from 'pino'
import { request as undiciRequest } from 'undici'
import type { App } from '../policy/compile.js'
import type { Upstream } from './target.js'

/** Told when active checks take a target out of rotation or bring it back: by pool id and origin. */
export type HealthChange = (pool: string, origin: string, healthy: boolean) => void

/**
 * Active health checks: GET the check path every interval, outside the target's pool (a probe must
 * not wait behind traffic for a connection), and flip the target after enough answers in a row.
 */
export function watchHealth(
  app: App,
  target: Upstream,
  log: Logger,
  onChange?: (healthy: boolean) => void,
): NodeJS.Timeout {
  const check = app.upstream.healthCheck
  if (!check) throw new Error('no health check configured')
  const timer = setInterval(async () => {
    let ok = false
    try {
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
      log[ok ? 'info' : 'warn'](
        { app: app.id, upstream: target.origin, healthy: ok, rule: 'upstream.healthCheck' },
        ok ? 'upstream target healthy again' : 'upstream target failed its health checks: out of rotation',
      )
      onChange?.(ok)
    }
  }, check.interval)
  timer.unref()
  return timer
}

/**
 * Passive health, told how each request on the target ended: consecutive failures (connect errors,
 * 5xx) take it out for the cool-down; a success resets the count.
 */
export function recordOutcome(app: App, target: Upstream, failed: boolean, log: Logger): void {
  if (!failed) {
    target.consecutiveFailures = 0
    return
  }
  target.consecutiveFailures++
  const { failures, cooldown } = app.upstream.passive
  if (target.consecutiveFailures >= failures && target.downUntil <= Date.now()) {
    target.downUntil = Date.now() + cooldown
    target.consecutiveFailures = 0
    log.warn(
      { app: app.id, upstream: target.origin, cooldownMs: cooldown, rule: 'upstream.passive' },
      'upstream target failing: out of rotation for the cool-down',
    )
  }
}

/** Healthy by the active checks and not in a passive cool-down. */
export function inRotation(target: Upstream, now: number): boolean {
  return target.healthy && target.downUntil <= now
}

/** The targets in rotation; on the hot path where all are, the same array, without allocating. */
export function usableTargets(targets: Upstream[], avoid: ReadonlySet<Upstream> | undefined): Upstream[] {
  const now = Date.now()
  for (const target of targets) {
    if (!inRotation(target, now) || avoid?.has(target))
      return targets.filter((each) => inRotation(each, now) && !avoid?.has(each))
  }
  return targets
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
