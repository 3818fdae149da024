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
 * One breaker for a worker's primary, whichever of its services (rate limits, WebSocket places)
 * found it silent first.
 */
export function primaryBreaker(log: Logger): CircuitBreaker {
  return new CircuitBreaker(breakerThreshold, breakerCooldownMs, (state, error) => {
    if (state === 'open')
      log.error(
        { err: error, state },
        'the primary does not answer: rate limits fall back to their onStoreError, WebSocket caps to this worker’s share',
      )
    else if (state === 'closed') log.info({ state }, 'the primary answers again')
  })
}

/**
 * Where a gateway process counts its rate limits, first choice first: Redis (a breaker per Cluster
 * master), then with workers the primary (one store for the replica's workers), then this process's
 * memory. Each holds its share of a limit: Redis all of it, the primary 1/replicas, memory
 * 1/(replicas × workers).
 */
export function rateLimitStore(options: {
  settings: Settings
  log: Logger
  redis?: RedisClient
  primary?: { link: PrimaryLink; breaker: CircuitBreaker; workers: number }
  onError(store: 'redis' | 'primary'): void
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
  if (primary)
    remote.push({
      name: 'primary',
      store: new SharedRateLimitStore(primary.link, settings.redisTimeout),
      share: redis ? settings.replicas : 1,
      onError: () => options.onError('primary'),
      breaker: () => primary.breaker,
    })
  return new ResilientRateLimitStore({
    remote,
    local: new MemoryStore(),
    localShare: (redis ? settings.replicas : 1) * (primary?.workers ?? 1),
  })
}
