import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { timeoutScale } from './gateway.js'

/** An app in a process of its own, which prints `PORT <n>` once it listens. */
export interface AppProcess {
  url: string
  port: number
  /** Every line it printed, stdout and stderr. */
  lines: string[]
  /** Resolves with the first line (past or future) that matches. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>
  stop(): Promise<void>
}

export async function startAppProcess(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<AppProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  const lines: string[] = []
  const waiters = new Set<{ match: (line: string) => boolean; resolve: (line: string) => void }>()
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const onLine = (line: string) => {
    lines.push(line)
    for (const waiter of waiters) {
      if (!waiter.match(line)) continue
      waiters.delete(waiter)
      waiter.resolve(line)
    }
  }
  createInterface({ input: child.stdout }).on('line', onLine)
  createInterface({ input: child.stderr }).on('line', onLine)
  const waitForLine = (match: (line: string) => boolean, timeoutMs = 10_000) => {
    const seen = lines.find(match)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(waiter)
        reject(new Error(`${command}: no matching line within ${timeoutMs} ms:\n${lines.join('\n')}`))
      }, timeoutMs * timeoutScale)
      const waiter = {
        match,
        resolve: (line: string) => {
          clearTimeout(timer)
          resolve(line)
        },
      }
      waiters.add(waiter)
    })
  }
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  const listening = await Promise.race([
    waitForLine((line) => /^PORT \d+$/.test(line), 20_000),
    exited.then(() => {
      throw new Error(`${command} exited before listening:\n${lines.join('\n')}`)
    }),
  ]).catch(async (error: unknown) => {
    await stop()
    throw error
  })
  const port = Number(listening.slice('PORT '.length))
  return { url: `http://127.0.0.1:${port}`, port, lines, waitForLine, stop }
}
