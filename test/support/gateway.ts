import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { afterEach } from 'vitest'

export const cliPath = path.resolve(import.meta.dirname, '../../dist/cli.js')

/** Waits in tests scale with PCL_TEST_TIMEOUT_SCALE, like vitest's own timeouts (vitest.config.ts). */
export const timeoutScale = Number(process.env.PCL_TEST_TIMEOUT_SCALE ?? 1)

export type LogLine = Record<string, unknown> & { msg?: string; level?: number }

export interface RunningGateway {
  process: ChildProcess
  ports: { http: number; https: number; admin: number }
  policiesDir: string
  stateDir: string
  logs: LogLine[]
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  writePolicy(name: string, yaml: string): Promise<void>
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

export async function makePolicyDir(policies: Record<string, string>): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-policies-'))
  for (const [name, yaml] of Object.entries(policies)) await writeFile(path.join(directory, name), yaml)
  return directory
}

/** Starts `portcullis serve` as a real process on free loopback ports, with its own policies and state. */
export async function startGateway(options: {
  policies: Record<string, string>
  args?: string[]
  stateDir?: string
  env?: Record<string, string>
  /** How long start-up may take (before PCL_TEST_TIMEOUT_SCALE); default 15 s. */
  startTimeoutMs?: number
}): Promise<RunningGateway> {
  const policiesDir = await makePolicyDir(options.policies)
  const stateDir = options.stateDir ?? (await mkdtemp(path.join(tmpdir(), 'pcl-state-')))
  const child = spawn(
    process.execPath,
    [
      cliPath,
      'serve',
      '--policies',
      policiesDir,
      '--state-dir',
      stateDir,
      '--listen',
      '127.0.0.1',
      '--http-port',
      '0',
      '--https-port',
      '0',
      '--admin-port',
      '0',
      '--env',
      'development',
      ...(options.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } },
  )
  const logs: LogLine[] = []
  const waiters: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = []
  const onLine = (text: string) => {
    let line: LogLine
    try {
      line = JSON.parse(text) as LogLine
    } catch {
      line = { msg: text }
    }
    logs.push(line)
    for (const waiter of [...waiters]) {
      if (waiter.match(line)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(line)
      }
    }
  }
  createInterface({ input: child.stdout }).on('line', onLine)
  createInterface({ input: child.stderr }).on('line', onLine)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))

  const waitForLog = (match: (line: LogLine) => boolean, timeoutMs = 10_000) => {
    timeoutMs *= timeoutScale
    const seen = logs.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `no matching log line within ${timeoutMs} ms; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`,
            ),
          ),
        timeoutMs,
      )
      waiters.push({
        match,
        resolve: (line) => {
          clearTimeout(timer)
          resolve(line)
        },
      })
    })
  }

  const listening = await Promise.race([
    waitForLog((line) => line.msg === 'gateway listening', options.startTimeoutMs ?? 15_000),
    exited.then((code) => {
      throw new Error(
        `gateway exited with ${code} before listening:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`,
      )
    }),
  ]).catch((error: unknown) => {
    // Not handed to the test, so nothing else would stop it: a gateway left running holds its ports.
    child.kill('SIGKILL')
    throw error
  })
  return {
    process: child,
    ports: { http: Number(listening.http), https: Number(listening.https), admin: Number(listening.admin) },
    policiesDir,
    stateDir,
    logs,
    waitForLog,
    writePolicy: (name, yaml) => writeFile(path.join(policiesDir, name), yaml),
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
    exited,
  }
}

/** Runs the CLI to completion. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk
    })
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

/** A policy file for one app in front of `target`. */
export function policyYaml(options: {
  app: string
  hosts: string[]
  target: string
  tls?: string
  extra?: string
}): string {
  return [
    `app: ${options.app}`,
    `hosts: [${options.hosts.join(', ')}]`,
    'upstream:',
    `  targets: [${options.target}]`,
    options.tls ? `tls:\n${options.tls}` : '',
    options.extra ?? '',
  ]
    .filter(Boolean)
    .join('\n')
}

/**
 * What a test started (gateways, upstreams, Redis, pebble), stopped after each test, last started
 * first. Call it in a `describe`: it registers the `afterEach`.
 */
export function stoppedAfterEach(): { stop(): Promise<unknown> }[] {
  const running: { stop(): Promise<unknown> }[] = []
  afterEach(async () => {
    for (const thing of running.splice(0).reverse()) await thing.stop()
  })
  return running
}
