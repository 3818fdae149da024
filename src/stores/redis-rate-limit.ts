import { Cluster } from 'ioredis'
import type { LimitCheck, LimitOutcome, RateLimitStore } from './rate-limit-store.js'
import type { RedisClient } from './redis.js'

/**
 * GCRA for every key of a request in one atomic script, timed by the Redis server's clock (TIME) so
 * replicas with skewed clocks agree. Either all limits admit the request and all are spent, or none
 * is. Each key expires once its budget is full again, so idle clients leave nothing behind.
 * ARGV holds interval and tolerance (ms) per key. Returns, per key: allowed, remaining, retry, reset.
 */
const script = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local steps = {}
local allowed = true
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
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
local out = {}
for i, key in ipairs(KEYS) do
  local step = steps[i]
  if allowed then
    redis.call('SET', key, tostring(step[5]), 'PX', math.max(1, math.ceil(step[5] - now)))
  end
  local ok = step[1]
  if not allowed then ok = 0 end
  table.insert(out, tostring(ok))
  table.insert(out, tostring(step[2]))
  table.insert(out, tostring(step[3]))
  table.insert(out, tostring(step[4]))
end
return out
`

type ScriptedClient = RedisClient & {
  portcullisRateLimit(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<string[]>
}

export class RedisRateLimitStore implements RateLimitStore {
  readonly sameSlotOnly: boolean
  private readonly client: ScriptedClient

  constructor(client: RedisClient) {
    this.sameSlotOnly = client instanceof Cluster
    // defineCommand loads the script once (EVALSHA), falling back to EVAL when a node lost it.
    client.defineCommand('portcullisRateLimit', { lua: script })
    this.client = client as ScriptedClient
  }

  async check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    const keys = checks.map((check) => check.key)
    const args = checks.flatMap((check) => [check.intervalMs, check.toleranceMs])
    const reply = await this.client.portcullisRateLimit(keys.length, ...keys, ...args)
    return checks.map((_, index) => {
      const at = (offset: number) => Number(reply[index * 4 + offset])
      return { allowed: at(0) === 1, remaining: at(1), retryAfterMs: at(2), resetMs: at(3) }
    })
  }
}
