/** What the benchmarks beside `run.ts` share: one gateway started from a policy text, and medians. */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'

const root = path.resolve(import.meta.dirname, '..')

export interface StartedGateway {
  child: ChildProcess
  httpsPort: number
  /** The gateway's state directory: `internal/<app>.crt` is the app's certificate. */
  stateDir: string
}

/**
 * `portcullis serve` from this checkout's build, with one policy, on loopback (HTTPS only, free
 * ports); resolves once it listens. `children` collects it, for the caller to stop.
 */
export async function startPortcullis(
  policy: string,
  extra: readonly string[],
  children: ChildProcess[],
): Promise<StartedGateway> {
  const work = await mkdtemp(path.join(tmpdir(), 'pcl-bench-'))
  const policies = path.join(work, 'policies')
  await mkdir(policies)
  await writeFile(path.join(policies, 'app.yaml'), policy)
  const stateDir = path.join(work, 'state')
  const child = spawn(
    process.execPath,
    [
      path.join(root, 'dist/cli.js'),
      'serve',
      '--policies',
      policies,
      '--state-dir',
      stateDir,
      '--listen',
      '127.0.0.1',
      '--http-port',
      'off',
      '--https-port',
      '0',
      '--admin-port',
      '0',
      '--env',
      'development',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  children.push(child)
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const httpsPort = await new Promise<number>((resolve, reject) => {
    lines.on('line', (line) => {
      const parsed = JSON.parse(line) as { msg?: string; https?: number }
      if (parsed.msg !== 'gateway listening') return
      resolve(Number(parsed.https))
      // Its later lines are read and dropped: a full pipe would stall it.
      lines.close()
      child.stdout?.resume()
    })
    child.once('exit', (code) => reject(new Error(`the gateway exited (${code})`)))
  })
  return { child, httpsPort, stateDir }
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return Number.NaN
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}
