import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'

/**
 * The CPUs this process may use: the ones it may run on (`availableParallelism`, which follows the
 * affinity mask), capped by a cgroup CPU quota. Node 20 reads only the former, so in a container
 * limited to 2 CPUs on a 64-core host it would otherwise start 64 workers.
 */
export function usableCpus(readText: (file: string) => string | undefined = readOptional): number {
  const quota = cgroupQuota(readText)
  const cpus = availableParallelism()
  return quota === undefined ? cpus : Math.max(1, Math.min(cpus, Math.ceil(quota)))
}

/** The worker count a `--workers` setting asks for. */
export function workerCount(setting: number | 'auto'): number {
  return setting === 'auto' ? usableCpus() : setting
}

/** CPUs the cgroup may use per period: v2 `cpu.max` ("200000 100000"), else v1's quota and period. */
function cgroupQuota(readText: (file: string) => string | undefined): number | undefined {
  const v2 = readText('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/)
  if (v2 && v2.length === 2) {
    const [quota, period] = v2
    return quota === 'max' ? undefined : Number(quota) / Number(period)
  }
  const quota = Number(readText('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'))
  const period = Number(readText('/sys/fs/cgroup/cpu/cpu.cfs_period_us'))
  return quota > 0 && period > 0 ? quota / period : undefined
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}
