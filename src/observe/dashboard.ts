import type { App } from '../policy/compile.js'
import type { ServedCertificate } from '../tls/certificates.js'
import type { GatewayMetrics } from './metrics.js'

const bucketMs = 10_000
const bucketsKept = 60 // ten minutes
const recentKept = 50

interface Bucket {
  at: number
  requests: number
  refusals: number
}

export interface Refusal {
  time: string
  app: string
  status: number
  code: string
  rule: string
  enforced: boolean
  method: string
  path: string
  clientIp: string
}

/**
 * What happened in the last minutes, for the dashboard: requests and refusals per app in 10-second
 * buckets, and the last refusals. Totals are not kept here: the dashboard reads them from the
 * Prometheus metrics, so the two can never disagree.
 */
export class RecentActivity {
  private readonly buckets = new Map<string, Bucket[]>()
  private readonly recent: Refusal[] = []

  record(
    app: string | undefined,
    refusal: Omit<Refusal, 'time' | 'app'> | undefined,
    now = Date.now(),
  ): void {
    const id = app ?? '(none)'
    const at = now - (now % bucketMs)
    const series = this.buckets.get(id) ?? []
    this.buckets.set(id, series)
    let last = series.at(-1)
    if (!last || last.at !== at) {
      last = { at, requests: 0, refusals: 0 }
      series.push(last)
      while (series.length > bucketsKept) series.shift()
    }
    last.requests++
    if (!refusal) return
    last.refusals++
    this.recent.unshift({ time: new Date(now).toISOString(), app: id, ...refusal })
    this.recent.length = Math.min(this.recent.length, recentKept)
  }

  /** The app's buckets over the last ten minutes, empty ones included, oldest first. */
  series(app: string, now = Date.now()): Bucket[] {
    const current = now - (now % bucketMs)
    const known = new Map((this.buckets.get(app) ?? []).map((bucket) => [bucket.at, bucket]))
    return Array.from({ length: bucketsKept }, (_, index) => {
      const at = current - (bucketsKept - 1 - index) * bucketMs
      return known.get(at) ?? { at, requests: 0, refusals: 0 }
    })
  }

  refusals(): readonly Refusal[] {
    return this.recent
  }

  /** What this process saw, as plain data a worker sends to the primary. */
  snapshot(): ActivitySnapshot {
    return { buckets: [...this.buckets], recent: this.recent }
  }

  /** Several workers' activity as one: buckets added up, refusals newest first. */
  static merged(snapshots: readonly ActivitySnapshot[]): RecentActivity {
    const merged = new RecentActivity()
    for (const { buckets, recent } of snapshots) {
      for (const [app, series] of buckets) {
        const into = new Map((merged.buckets.get(app) ?? []).map((bucket) => [bucket.at, bucket]))
        for (const bucket of series) {
          const known = into.get(bucket.at)
          into.set(
            bucket.at,
            known
              ? {
                  at: bucket.at,
                  requests: known.requests + bucket.requests,
                  refusals: known.refusals + bucket.refusals,
                }
              : { ...bucket },
          )
        }
        merged.buckets.set(app, [...into.values()].sort((a, b) => a.at - b.at).slice(-bucketsKept))
      }
      merged.recent.push(...recent)
    }
    merged.recent.sort((a, b) => b.time.localeCompare(a.time))
    merged.recent.length = Math.min(merged.recent.length, recentKept)
    return merged
  }
}

export interface ActivitySnapshot {
  buckets: [string, Bucket[]][]
  recent: Refusal[]
}

export interface DashboardSources {
  apps(): readonly App[]
  certificates(): ReadonlyMap<string, ServedCertificate>
  upstreams(): ReadonlyMap<string, readonly { origin: string; healthy: boolean; active: number }[]>
  /** This process's activity, or with workers all of theirs merged. */
  activity(): Promise<RecentActivity>
  metrics: GatewayMetrics
}

/** The dashboard's data: per app its settings, certificate, targets, totals from /metrics and recent activity. */
export async function dashboardData(sources: DashboardSources) {
  const [totals, activity] = await Promise.all([sources.metrics.totals(), sources.activity()])
  const certificates = sources.certificates()
  const upstreams = sources.upstreams()
  return {
    generatedAt: new Date().toISOString(),
    apps: sources.apps().map((app) => {
      const certificate = certificates.get(app.id)
      return {
        id: app.id,
        hosts: app.hosts,
        mode: app.mode,
        tls: app.tls.mode,
        certificate: certificate
          ? {
              expiresAt: certificate.placeholder
                ? null
                : new Date(certificate.expiresAt * 1000).toISOString(),
              placeholder: certificate.placeholder,
            }
          : null,
        targets: upstreams.get(app.id) ?? [],
        requests: totals.requests.get(app.id) ?? 0,
        refusals: totals.refusals.get(app.id) ?? [],
        series: activity.series(app.id),
      }
    }),
    recent: activity.refusals(),
  }
}
