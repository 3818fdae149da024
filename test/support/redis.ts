import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { timeoutScale } from './gateway.js'
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

/** Polls `check` every 50 ms until it holds; the wait scales with PCL_TEST_TIMEOUT_SCALE. */
export async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs * timeoutScale
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs * timeoutScale} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function waitForPing(port: number): Promise<void> {
  await eventually(
    `redis on ${port} answers PING`,
    async () => (await run('redis-cli', ['-p', String(port), 'ping'])).stdout.trim() === 'PONG',
    5000,
  )
}

/** Runs `steps`; if one fails, stops what was started so far, so a failed start-up leaves no server behind. */
async function stoppingOnFailure<T>(
  started: { stop(): Promise<unknown> }[],
  steps: () => Promise<T>,
): Promise<T> {
  try {
    return await steps()
  } catch (error) {
    await Promise.all(started.map((each) => each.stop().catch(() => undefined)))
    throw error
  }
}

function stopChild(child: ChildProcess | undefined): Promise<void> {
  const exiting =
    child && child.exitCode === null && child.signalCode === null
      ? new Promise<void>((resolve) => child.once('exit', () => resolve()))
      : undefined
  child?.kill('SIGKILL')
  return exiting ?? Promise.resolve()
}

/**
 * A real redis-server on a free loopback port, owned by the test: it can be stopped to simulate an
 * outage. The port is checked to be this server's (its process id answers), since a released port can
 * be taken by another process in between; without a port given, another one is tried.
 */
export async function startRedis(extraArgs: string[] = [], port?: number): Promise<RedisServer> {
  let chosen = port ?? (await closedPort())
  let child: ChildProcess | undefined
  // A replica writes the data it syncs to its directory: a temporary one, not the working directory.
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-redis-'))
  const launch = async () => {
    const started = spawn(
      'redis-server',
      [
        '--port',
        String(chosen),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        directory,
        ...extraArgs,
      ],
      { stdio: 'ignore' },
    )
    child = started
    try {
      await waitForPing(chosen)
      const { stdout } = await run('redis-cli', ['-p', String(chosen), 'info', 'server'])
      if (!stdout.includes(`process_id:${started.pid}\r`))
        throw new Error(`port ${chosen} answers for another redis-server`)
    } catch (error) {
      await stopChild(started)
      throw error
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
    stop: () => stopChild(child),
    cli: async (...args) => (await run('redis-cli', ['-p', String(chosen), ...args])).stdout.trim(),
  }
}

export interface RedisCluster {
  nodes: RedisServer[]
  url: string
  /** The node serving `key`'s slot as master now, as the first node that answers sees it. */
  masterOf(key: string): Promise<RedisServer>
  /** Resolves with the node that took over `dead`'s slots, once every live node agrees the cluster is ok. */
  failedOver(dead: RedisServer): Promise<RedisServer>
  stop(): Promise<void>
}

/**
 * Three masters on loopback, joined with `redis-cli --cluster create` (their bus ports are port+10000),
 * each with `replicas` replicas (1 for failover tests: cluster-node-timeout 2000, as TESTING.md says).
 * Resolves once every node reports cluster_state:ok and every replica is in sync with its master.
 * `fullCoverage: false` is `cluster-require-full-coverage no`: the other masters keep serving while
 * one has failed and its replica is not promoted yet (with the default, every node answers
 * CLUSTERDOWN meanwhile).
 */
export async function startRedisCluster(
  options: { replicas?: 0 | 1; fullCoverage?: boolean } = {},
): Promise<RedisCluster> {
  const replicas = options.replicas ?? 0
  const coverage = options.fullCoverage === false ? ['--cluster-require-full-coverage', 'no'] : []
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-redis-cluster-'))
  const nodes: RedisServer[] = []
  const stopped = new Set<RedisServer>()
  return stoppingOnFailure(nodes, async () => {
    for (let index = 0; index < 3 * (1 + replicas); index++) {
      // Bus ports must be free too: pick ports whose +10000 is below 65536.
      let port = await closedPort()
      while (port + 10_000 > 65_535) port = await closedPort()
      nodes.push(
        await startRedis(
          [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            path.join(directory, `nodes-${port}.conf`),
            '--cluster-node-timeout',
            '2000',
            ...coverage,
          ],
          port,
        ),
      )
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ])
    const live = () => nodes.filter((node) => !stopped.has(node))
    const table = async () => {
      for (const node of live()) {
        try {
          return clusterTable(await node.cli('cluster', 'nodes'), nodes)
        } catch {}
      }
      throw new Error('no cluster node answers')
    }
    const allOk = async () =>
      (await Promise.all(live().map((node) => node.cli('cluster', 'info')))).every((info) =>
        info.includes('cluster_state:ok'),
      )
    await eventually('the cluster is ok on every node', allOk)
    if (replicas > 0) {
      await eventually('every replica is in sync', async () => {
        const roles = await Promise.all(nodes.map((node) => node.cli('info', 'replication')))
        const synced = roles.filter((role) => role.includes('master_link_status:up'))
        return synced.length === 3 * replicas
      })
    }
    // Who replicates whom, as created: a replica that takes over is a master of its own afterwards.
    const heirs = new Map(
      (await table()).flatMap((entry) => (entry.master ? [[entry.master, entry.node]] : [])),
    )
    return {
      nodes,
      url: `redis-cluster://${nodes
        .slice(0, 3)
        .map((node) => `127.0.0.1:${node.port}`)
        .join(',')}`,
      masterOf: async (key) => {
        const [first] = live()
        const slot = Number(await first?.cli('cluster', 'keyslot', key))
        const owner = (await table()).find((entry) =>
          entry.slots.some(([from, to]) => from <= slot && slot <= to),
        )
        if (!owner) throw new Error(`no master serves slot ${slot}`)
        return owner.node
      },
      failedOver: async (dead) => {
        stopped.add(dead)
        const heir = heirs.get(dead)
        if (!heir) throw new Error(`${dead.port} has no replica`)
        await eventually(
          `${heir.port} took over from ${dead.port}`,
          async () =>
            ((await table()).find((entry) => entry.node === heir)?.slots.length ?? 0) > 0 && (await allOk()),
          30_000,
        )
        return heir
      },
      stop: async () => {
        await Promise.all(nodes.map((node) => node.stop()))
      },
    }
  })
}

interface TableEntry {
  node: RedisServer
  /** The master it replicates. */
  master: RedisServer | undefined
  /** The slot ranges it serves as a master (none once it failed). */
  slots: [number, number][]
}

/** `CLUSTER NODES` read into who serves which slots and who replicates whom. */
function clusterTable(text: string, nodes: RedisServer[]): TableEntry[] {
  const lines = text.split('\n').map((line) => line.trim().split(' '))
  const byId = new Map(
    lines.map((fields) => [
      fields[0],
      nodes.find((node) => fields[1]?.startsWith(`127.0.0.1:${node.port}@`)),
    ]),
  )
  return lines.flatMap(([id, , flags = '', master = '-', , , , , ...ranges]) => {
    const node = byId.get(id)
    if (!node) return []
    const serving = flags.includes('master') && !flags.includes('fail')
    const slots = ranges
      .filter((range) => !range.startsWith('['))
      .map((range) => {
        const [from, to = from] = range.split('-')
        return [Number(from), Number(to)] as [number, number]
      })
    return [{ node, master: master === '-' ? undefined : byId.get(master), slots: serving ? slots : [] }]
  })
}

/** A redis-sentinel on its own free port watching `master` as `mymaster`, with a config file it can rewrite. */
async function spawnSentinel(master: RedisServer, quorum: number): Promise<RedisServer> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-sentinel-'))
  const port = await closedPort()
  const config = path.join(directory, 'sentinel.conf')
  await writeFile(
    config,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${directory}`,
      `sentinel monitor mymaster 127.0.0.1 ${master.port} ${quorum}`,
      'sentinel down-after-milliseconds mymaster 1000',
      'sentinel failover-timeout mymaster 3000',
      '',
    ].join('\n'),
  )
  const child = spawn('redis-sentinel', [config], { stdio: 'ignore' })
  try {
    await waitForPing(port)
  } catch (error) {
    await stopChild(child)
    throw error
  }
  return {
    port,
    url: `redis-sentinel://127.0.0.1:${port}/mymaster`,
    stop: () => stopChild(child),
    start: () => Promise.reject(new Error('a sentinel is not restarted')),
    cli: async (...args) => (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim(),
  }
}

/** A Sentinel watching `master` under the name `mymaster`, on its own free port. */
export async function startSentinel(master: RedisServer): Promise<{ url: string; stop(): Promise<void> }> {
  return spawnSentinel(master, 1)
}

export interface SentinelGroup {
  master: RedisServer
  replica: RedisServer
  /** A redis-sentinel:// URL naming all three sentinels. */
  url: string
  /** Resolves once every sentinel names the replica as the master and it answers as one. */
  promoted(): Promise<void>
  stop(): Promise<void>
}

/**
 * What TESTING.md describes for failover: a master, a replica in sync with it, and three sentinels
 * with a quorum of two that know each other and the replica, so a SIGKILL of the master promotes the
 * replica in about 2–3 s.
 */
export async function startSentinelGroup(): Promise<SentinelGroup> {
  const started: RedisServer[] = []
  return stoppingOnFailure(started, async () => {
    const master = await startRedis()
    started.push(master)
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
    started.push(replica)
    await eventually('the replica is in sync', async () =>
      (await replica.cli('info', 'replication')).includes('master_link_status:up'),
    )
    const sentinels: RedisServer[] = []
    for (let index = 0; index < 3; index++) sentinels.push(await spawnSentinel(master, 2))
    started.push(...sentinels)
    // Sentinels find each other and the replica through the master (hello messages every 2 s).
    await eventually('the sentinels know each other and the replica', async () => {
      const views = await Promise.all(
        sentinels.map((sentinel) => sentinel.cli('sentinel', 'master', 'mymaster')),
      )
      return views.every(
        (view) => /num-other-sentinels\n2(\n|$)/.test(view) && /num-slaves\n1(\n|$)/.test(view),
      )
    })
    return {
      master,
      replica,
      url: `redis-sentinel://${sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`).join(',')}/mymaster`,
      promoted: () =>
        eventually(
          `the replica on ${replica.port} is promoted`,
          async () => {
            const named = await Promise.all(
              sentinels.map((sentinel) => sentinel.cli('sentinel', 'get-master-addr-by-name', 'mymaster')),
            )
            return (
              named.every((answer) => answer.endsWith(String(replica.port))) &&
              (await replica.cli('role')).startsWith('master')
            )
          },
          30_000,
        ),
      stop: async () => {
        await Promise.all(started.map((each) => each.stop()))
      },
    }
  })
}
