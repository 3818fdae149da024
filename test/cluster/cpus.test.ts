import { availableParallelism } from 'node:os'
import { describe, expect, it } from 'vitest'
import { usableCpus } from '../../src/cluster/cpus.js'

describe('usable CPUs', () => {
  const files = (entries: Record<string, string>) => (file: string) => entries[file]

  it('follows a cgroup v2 quota, rounding up, and never exceeds the CPUs it may run on', () => {
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' }))).toBe(
      Math.min(2, availableParallelism()),
    )
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '50000 100000' }))).toBe(1)
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': `${1000 * 100000} 100000` }))).toBe(
      availableParallelism(),
    )
  })

  it('takes no quota as no limit, and reads cgroup v1', () => {
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': 'max 100000' }))).toBe(availableParallelism())
    expect(usableCpus(files({}))).toBe(availableParallelism())
    expect(
      usableCpus(
        files({
          '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '100000',
          '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000',
        }),
      ),
    ).toBe(1)
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1' }))).toBe(availableParallelism())
  })
})
