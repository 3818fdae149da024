import { Cluster, Redis } from 'ioredis'

export type RedisClient = Redis | Cluster

/**
 * A Redis connection from a URL:
 * - `redis://[user:password@]host:port[/db]`, `rediss://...` for TLS;
 * - `redis-sentinel://[password@]host:port,host:port/masterName` for Sentinel;
 * - `redis-cluster://[password@]host:port,host:port` for Cluster (the nodes to start from).
 *
 * Commands never queue while disconnected and each is bounded by `commandTimeoutMs`, so an outage
 * costs a request at most that long; reconnection is left to ioredis, in the background.
 */
/** `unpipelined`: commands that go out on their own, never in an auto-pipeline (they batch themselves). */
export function connectRedis(
  url: string,
  commandTimeoutMs: number,
  unpipelined: readonly string[] = [],
): RedisClient {
  // The WHATWG URL parser refuses host lists, so the parts are read by hand.
  const parts = /^([a-z-]+):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)(?:\/([^?#]*))?/.exec(url)
  if (!parts) throw new Error(`not a Redis URL: ${url}`)
  const [, scheme, username, password, hostList = '', path = ''] = parts
  const common = {
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: [...unpipelined],
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(1000, commandTimeoutMs * 10),
    retryStrategy: (times: number) => Math.min(100 * 2 ** times, 2000),
    ...(username ? { username: decodeURIComponent(username) } : {}),
    ...(password ? { password: decodeURIComponent(password) } : {}),
  }
  const hosts = (defaultPort: number) =>
    hostList.split(',').map((entry) => {
      const [host = '127.0.0.1', port] = entry.split(':')
      return { host, port: Number(port ?? defaultPort) }
    })
  switch (scheme) {
    case 'redis':
    case 'rediss':
      return new Redis(url, common)
    case 'redis-sentinel':
      if (!path)
        throw new Error('a Sentinel URL names the master: redis-sentinel://host:26379,host:26379/mymaster')
      return new Redis({ ...common, sentinels: hosts(26_379), name: decodeURIComponent(path) })
    case 'redis-cluster':
      return connectMasters(
        new Cluster(hosts(6379), {
          enableAutoPipelining: true,
          autoPipeliningIgnoredCommands: [...unpipelined],
          enableOfflineQueue: false,
          clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** times, 2000),
          redisOptions: common,
        }),
      )
    default:
      throw new Error(
        `unsupported Redis URL scheme ${scheme}: (redis, rediss, redis-sentinel or redis-cluster)`,
      )
  }
}

/**
 * ioredis opens a Cluster node's connection on the node's first command, and that command's timeout
 * runs through the connect and the ready check: under load at start-up, or for a master that appears
 * after a failover, the first calls could time out and open a breaker with no fault at all. Each
 * master's connection is opened as soon as ioredis learns of it instead.
 */
function connectMasters(cluster: Cluster): Cluster {
  const connect = (node: Redis) => {
    if (!node.options.readOnly && node.status === 'wait') node.connect().catch(() => {})
  }
  cluster.on('+node', connect)
  cluster.on('ready', () => {
    for (const node of cluster.nodes('master')) connect(node)
  })
  return cluster
}

/**
 * Resolves when the client is ready (on Cluster: with a connection to every master), or after
 * `timeoutMs` with false: a gateway starts even while Redis is down.
 */
export async function whenReady(client: RedisClient, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  if (!(await becomes(client, deadline))) return false
  if (!(client instanceof Cluster)) return true
  const masters = await Promise.all(client.nodes('master').map((node) => becomes(node, deadline)))
  return masters.every(Boolean)
}

/** Whether `client` is ready by `deadline`. */
function becomes(client: RedisClient, deadline: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => {
        client.off('ready', onReady)
        resolve(false)
      },
      Math.max(0, deadline - Date.now()),
    )
    const onReady = () => {
      clearTimeout(timer)
      resolve(true)
    }
    client.once('ready', onReady)
  })
}
