import { describe, expect, it } from 'vitest'
import { RecentActivity } from '../../src/observe/dashboard.js'

describe('recent activity over workers', () => {
  it('adds up the buckets of several workers and keeps the newest refusals first', () => {
    const now = Date.parse('2026-12-02T10:00:05Z')
    const refusal = (path: string) => ({
      status: 403,
      code: 'PCL_ACCESS_DENIED',
      rule: 'access[0]',
      enforced: true,
      method: 'GET',
      path,
      clientIp: '192.0.2.1',
    })
    const one = new RecentActivity()
    one.record('shop', undefined, now)
    one.record('shop', refusal('/first'), now)
    const two = new RecentActivity()
    two.record('shop', undefined, now)
    two.record('shop', refusal('/second'), now + 1000)
    two.record('shop', undefined, now - 20_000)
    // Through JSON, as a worker sends it.
    const merged = RecentActivity.merged(
      [one.snapshot(), two.snapshot()].map((each) => JSON.parse(JSON.stringify(each))),
    )
    const series = merged.series('shop', now)
    expect(series.at(-1)).toMatchObject({ requests: 4, refusals: 2 })
    expect(series.at(-3)).toMatchObject({ requests: 1, refusals: 0 })
    expect(series.reduce((total, bucket) => total + bucket.requests, 0)).toBe(5)
    expect(merged.refusals().map((each) => each.path)).toEqual(['/second', '/first'])
  })
})
