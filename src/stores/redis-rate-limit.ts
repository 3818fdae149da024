import { Cluster } from 'ioredis'
import type { LimitCheck, LimitOutcome, RateLimitStore } from './rate-limit-store.js'
import type { RedisClient } from './redis.js'

/**
 * GCRA for every key of a request in one atomic step, timed by the Redis server's clock (TIME) so
 * replicas with skewed clocks agree. Either all of a request's limits admit it and all are spent, or
 * none is. Each key expires once its budget is full again, so idle clients leave nothing behind.
 *
 * One call carries the requests of a whole batch, checked one after the other (a key two requests
 * share sees the first one's spending). ARGV: the number of requests, then each one's number of keys,
 * then interval and tolerance (ms) per key. Returns, per key, four integers: allowed (1 or 0),
 * remaining, retry and reset (ms, rounded up). Integers, not strings: the reply is parsed per request.
 */
const script = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local requests = tonumber(ARGV[1])
local limitsAt = 2 + requests
local out = {}
local first = 1
for r = 1, requests do
  local count = tonumber(ARGV[1 + r])
  local steps = {}
  local allowed = true
  for i = 1, count do
    local k = first + i - 1
    local interval = tonumber(ARGV[limitsAt + 2 * (k - 1)])
    local tolerance = tonumber(ARGV[limitsAt + 2 * (k - 1) + 1])
    local tat = tonumber(redis.call('GET', KEYS[k])) or now
    if tat < now then tat = now end
    local nextTat = tat + interval
    local excess = nextTat - now - tolerance
    if excess > 0 then
      allowed = false
      steps[i] = { 0, 0, excess, tat - now, tat }
    else
      steps[i] = { 1, math.floor((tolerance - (nextTat - now)) / interval), 0, nextTat - now, nextTat }
    end
  end
  for i = 1, count do
    local step = steps[i]
    if allowed then
      -- %.17g keeps the double exact; tostring's %.14g would round a millisecond timestamp to 0.1 ms
      -- and could refuse the last request of a burst that arrived within that tenth.
      redis.call('SET', KEYS[first + i - 1], string.format('%.17g', step[5]), 'PX', math.max(1, math.ceil(step[5] - now)))
    end
    out[#out + 1] = allowed and 1 or 0
    out[#out + 1] = step[2]
    out[#out + 1] = math.ceil(step[3])
    out[#out + 1] = math.ceil(step[4])
  end
  first = first + count
end
return out
`

/**
 * The script's command name. Clients leave it out of ioredis's auto-pipelining (see `connectRedis`):
 * the store batches its calls itself, and auto-pipelining would wrap each batch in a pipeline of one.
 */
export const rateLimitCommand = 'portcullisRateLimit'

type ScriptedClient = RedisClient & {
  [rateLimitCommand](numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<number[]>
}

interface Pending {
  checks: readonly LimitCheck[]
  resolve(outcomes: LimitOutcome[]): void
  reject(error: unknown): void
}

export class RedisRateLimitStore implements RateLimitStore {
  readonly sameSlotOnly: boolean
  private readonly client: ScriptedClient
  private queue: Pending[] = []

  constructor(client: RedisClient) {
    this.sameSlotOnly = client instanceof Cluster
    // defineCommand loads the script once (EVALSHA), falling back to EVAL when a node lost it.
    client.defineCommand(rateLimitCommand, { lua: script })
    this.client = client as ScriptedClient
  }

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    if (this.sameSlotOnly) return this.run([checks]).then(([outcomes]) => outcomes as LimitOutcome[])
    return new Promise((resolve, reject) => {
      this.queue.push({ checks, resolve, reject })
      if (this.queue.length === 1) setImmediate(() => this.flush())
    })
  }

  /**
   * Requests that arrive in one turn of the event loop share one script call, hence one round trip:
   * they are queued and sent together when the turn ends (setImmediate). On Cluster a call must stay
   * within one hash slot, so there every request is its own call (auto-pipelined per node by ioredis).
   */
  private flush(): void {
    const batch = this.queue
    this.queue = []
    this.run(batch.map((pending) => pending.checks)).then(
      (outcomes) => {
        for (const [index, pending] of batch.entries()) pending.resolve(outcomes[index] as LimitOutcome[])
      },
      (error: unknown) => {
        for (const pending of batch) pending.reject(error)
      },
    )
  }

  private async run(requests: readonly (readonly LimitCheck[])[]): Promise<LimitOutcome[][]> {
    // KEYS, then ARGV: the number of requests, each one's number of keys, interval and tolerance per key.
    const keys: string[] = []
    const counts: number[] = [requests.length]
    const limits: number[] = []
    for (const checks of requests) {
      counts.push(checks.length)
      for (const check of checks) {
        keys.push(check.key)
        limits.push(check.intervalMs, check.toleranceMs)
      }
    }
    const reply = await this.client[rateLimitCommand](keys.length, ...keys, ...counts, ...limits)
    let at = 0
    return requests.map((checks) =>
      checks.map(() => {
        const outcome = {
          allowed: reply[at] === 1,
          remaining: reply[at + 1] as number,
          retryAfterMs: reply[at + 2] as number,
          resetMs: reply[at + 3] as number,
        }
        at += 4
        return outcome
      }),
    )
  }
}
