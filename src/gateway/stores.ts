import type { Logger } from 'pino'
import { SharedRateLimitStore } from '../cluster/clients.js'
import type { PrimaryLink } from '../cluster/protocol.js'
import type { Settings } from '../settings.js'
import { CircuitBreaker } from '../stores/breaker.js'
import { MemoryStore } from '../stores/rate-limit-store.js'
import type { RedisClient } from '../stores/redis.js'
import { RedisRateLimitStore } from '../stores/redis-rate-limit.js'
import { type RemoteStore, ResilientRateLimitStore } from '../stores/resilient-store.js'

/** Consecutive failures that open a breaker, and how long it stays open before one trial call. */
const breakerThreshold = 3
const breakerCooldownMs = 2000

/**
 * Where a gateway process counts its rate limits: in Redis when configured, else (and while Redis
 * cannot answer) in this process's memory, or with workers the primary's; the fallback holds
 * 1/replicas of each limit.
 */
export function rateLimitStore(options: {
  settings: Settings
  log: Logger
  redis?: RedisClient
  primary?: PrimaryLink
  onError(store: 'redis'): void
}): ResilientRateLimitStore {
  const { settings, log, redis, primary } = options
  const remote: RemoteStore[] = []
  if (redis)
    remote.push({
      name: 'redis',
      store: new RedisRateLimitStore(redis, settings.redisTimeout),
      share: 1,
      onError: () => options.onError('redis'),
      // On Cluster, `part` is a master's host:port: one master's failure touches only its keys.
      breaker: (part) =>
        new CircuitBreaker(breakerThreshold, breakerCooldownMs, (state, error) => {
          const node = part ? { node: part } : {}
          if (state === 'open')
            log.error(
              { err: error, state, ...node },
              'rate limit store unreachable: rules fall back to their onStoreError',
            )
          else if (state === 'closed') log.info({ state, ...node }, 'rate limit store reachable again')
        }),
    })
  return new ResilientRateLimitStore({
    remote,
    local: primary ? new SharedRateLimitStore(primary) : new MemoryStore(),
    localShare: redis ? settings.replicas : 1,
  })
}
