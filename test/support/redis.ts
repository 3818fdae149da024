import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { closedPort } from './upstreams.js'

const run = promisify(execFile)

export interface RedisServer {
  port: number
  url: string
  stop(): Promise<void>
  /** Starts it again on the same port (after stop). */
  start(): Promise<void>
  cli(...args: string[]): Promise<string>
}

async function waitForPing(port: number): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'ping'])
      if (stdout.trim() === 'PONG') return
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`redis-server on ${port} did not answer`)
}

/**
 * A real redis-server on a free loopback port, owned by the test: it can be stopped to simulate an
 * outage. The port is checked to be this server's (its process id answers), since a released port can
 * be taken by another process in between; without a port given, another one is tried.
 */
export async function startRedis(extraArgs: string[] = [], port?: number): Promise<RedisServer> {
  let chosen = port ?? (await closedPort())
  let child: ChildProcess | undefined
  const launch = async () => {
    const started = spawn(
      'redis-server',
      ['--port', String(chosen), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs],
      { stdio: 'ignore' },
    )
    child = started
    await waitForPing(chosen)
    const { stdout } = await run('redis-cli', ['-p', String(chosen), 'info', 'server'])
    if (!stdout.includes(`process_id:${started.pid}\r`)) {
      started.kill('SIGKILL')
      throw new Error(`port ${chosen} answers for another redis-server`)
    }
  }
  for (let attempt = 1; ; attempt++) {
    try {
      await launch()
      break
    } catch (error) {
      if (port !== undefined || attempt === 5) throw error
      chosen = await closedPort()
    }
  }
  return {
    port: chosen,
    url: `redis://127.0.0.1:${chosen}`,
    start: launch,
    stop: async () => {
      const exiting =
        child && child.exitCode === null && child.signalCode === null
          ? new Promise((resolve) => child?.once('exit', resolve))
          : undefined
      child?.kill('SIGKILL')
      await exiting
    },
    cli: async (...args) => (await run('redis-cli', ['-p', String(chosen), ...args])).stdout.trim(),
  }
}

/** Three masters on loopback, joined with `redis-cli --cluster create` (their bus ports are port+10000). */
export async function startRedisCluster(): Promise<{
  nodes: RedisServer[]
  url: string
  stop(): Promise<void>
}> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-redis-cluster-'))
  const nodes: RedisServer[] = []
  for (let index = 0; index < 3; index++) {
    // Bus ports must be free too: pick ports whose +10000 is below 65536.
    let port = await closedPort()
    while (port + 10_000 > 65_535) port = await closedPort()
    nodes.push(
      await startRedis(
        ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(directory, `nodes-${port}.conf`)],
        port,
      ),
    )
  }
  await run('redis-cli', [
    '--cluster',
    'create',
    ...nodes.map((node) => `127.0.0.1:${node.port}`),
    '--cluster-replicas',
    '0',
    '--cluster-yes',
  ])
  for (let attempt = 0; attempt < 100; attempt++) {
    const info = await nodes[0]?.cli('cluster', 'info')
    if (info?.includes('cluster_state:ok')) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    nodes,
    url: `redis-cluster://${nodes.map((node) => `127.0.0.1:${node.port}`).join(',')}`,
    stop: async () => {
      await Promise.all(nodes.map((node) => node.stop()))
    },
  }
}

/** A Sentinel watching `master` under the name `mymaster`, on its own free port. */
export async function startSentinel(master: RedisServer): Promise<{ url: string; stop(): Promise<void> }> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-sentinel-'))
  const port = await closedPort()
  const config = path.join(directory, 'sentinel.conf')
  // Sentinel rewrites its configuration file, so it gets a writable one of its own.
  await writeFile(
    config,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${directory}`,
      `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`,
      'sentinel down-after-milliseconds mymaster 1000',
      '',
    ].join('\n'),
  )
  const child = spawn('redis-server', [config, '--sentinel'], { stdio: 'ignore' })
  await waitForPing(port)
  return {
    url: `redis-sentinel://127.0.0.1:${port}/mymaster`,
    stop: async () => {
      const exiting =
        child.exitCode === null && child.signalCode === null
          ? new Promise((resolve) => child.once('exit', resolve))
          : undefined
      child.kill('SIGKILL')
      await exiting
    },
  }
}
