import { Cluster } from 'ioredis'
import { within } from './deadline.js'
import type { LimitCheck, LimitOutcome, RateLimitStore } from './rate-limit-store.js'
import type { RedisClient } from './redis.js'
import { hashSlot } from './slots.js'

/**
 * GCRA for every key of a request in one atomic step, timed by the Redis server's clock (TIME) so
 * replicas with skewed clocks agree. Either all of a request's limits admit it and all are spent, or
 * none is. Each key expires once its budget is full again, so idle clients leave nothing behind.
 *
 * One call carries the requests of a whole batch, checked one after the other (a key two requests
 * share sees the first one's spending). ARGV[1] holds numbers separated by spaces: for each request,
 * its number of keys, then interval and tolerance (ms) per key; a request that carries known TATs (what a
 * fallback counted, see `LimitCheck.knownTat`) writes its key count negated and adds, per key, how far
 * ahead of now its TAT is at least (ms). One argument rather than three per
 * request: ioredis copies and encodes every argument of a call (Array.prototype.flat, then one RESP
 * string each), which costs the gateway more than the script's parsing costs Redis. Returns, per key,
 * four integers: allowed (1 or 0), remaining, retry and reset (ms, rounded up). Integers, not strings:
 * the reply is parsed per request.
 *
 * Each key is read once and written once per call, whatever the number of requests in the batch that
 * share it: a flooding client, whose requests fill whole batches, costs Redis one GET and one PSETEX per
 * batch instead of one each per request. PSETEX rather than SET ... PX: Redis parses no options, which
 * makes the write about a fifth cheaper.
 */
const script = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local numbers = {}
for token in string.gmatch(ARGV[1], '%S+') do numbers[#numbers + 1] = tonumber(token) end
-- Each key's TAT as the requests so far in this call left it; changed keys are written back at the end.
local tats = {}
local changed = {}
local intervals = {}
local tolerances = {}
local out = {}
local first = 1
local at = 1
local total = #numbers
while at <= total do
  -- A request's key count, negative when each of its keys carries a known TAT too.
  local count = numbers[at]
  local known = count < 0
  if known then count = -count end
  local last = first + count - 1
  at = at + 1
  -- First pass: does every limit of the request admit it? Second: answer per key, and spend if so.
  local allowed = true
  for k = first, last do
    local key = KEYS[k]
    local tat = tats[key]
    if tat == nil then
      tat = tonumber(redis.call('GET', key)) or now
      if tat < now then tat = now end
    end
    intervals[k] = numbers[at]
    tolerances[k] = numbers[at + 1]
    at = at + 2
    if known then
      -- What the replica counted while this store could not answer: the TAT is at least that far ahead.
      local floor = now + numbers[at]
      at = at + 1
      if floor > tat then
        tat = floor
        changed[key] = true
      end
    end
    tats[key] = tat
    if tat + intervals[k] - now > tolerances[k] then allowed = false end
  end
  for k = first, last do
    local key = KEYS[k]
    local tat = tats[key]
    local nextTat = tat + intervals[k]
    local excess = nextTat - now - tolerances[k]
    local slot = 4 * k - 4
    if excess > 0 then
      out[slot + 1] = 0
      out[slot + 2] = 0
      out[slot + 3] = math.ceil(excess)
      out[slot + 4] = math.ceil(tat - now)
    else
      out[slot + 1] = allowed and 1 or 0
      out[slot + 2] = math.floor((tolerances[k] - (nextTat - now)) / intervals[k])
      out[slot + 3] = 0
      out[slot + 4] = math.ceil(nextTat - now)
      if allowed then
        changed[key] = true
        tats[key] = nextTat
      end
    end
  end
  first = last + 1
end
for key in pairs(changed) do
  local tat = tats[key]
  -- %.17g keeps the double exact; tostring's %.14g would round a millisecond timestamp to 0.1 ms
  -- and could refuse the last request of a burst that arrived within that tenth.
  redis.call('PSETEX', key, math.max(1, math.ceil(tat - now)), string.format('%.17g', tat))
end
return out
`

/**
 * The script's command name. Clients leave it out of ioredis's auto-pipelining (see `connectRedis`):
 * the store batches its calls itself, and auto-pipelining would wrap each batch in a pipeline of one.
 */
export const rateLimitCommand = 'portcullisRateLimit'

type Call = (...keysAndArgs: (string | number)[]) => Promise<number[]>

/** Requests that share one script call: the reply holds four integers per key, in request order. */
interface Batch {
  requests: (readonly LimitCheck[])[]
  keys: number
  reply: Promise<number[]>
}

export class RedisRateLimitStore implements RateLimitStore {
  readonly sameSlotOnly: boolean
  private readonly cluster: Cluster | undefined
  /** The script with its number of keys first. */
  private readonly script: Call
  /** On Cluster: the script as a command of a fixed number of keys, key first, by that number. */
  private readonly fixed = new Map<number, Call>()
  private batch: Batch | undefined

  /** `timeoutMs`: the longest a call may wait, whatever ioredis does meanwhile (retries, redirections). */
  constructor(
    client: RedisClient,
    private readonly timeoutMs?: number,
  ) {
    this.cluster = client instanceof Cluster ? client : undefined
    this.sameSlotOnly = this.cluster !== undefined
    // defineCommand loads the script once (EVALSHA), falling back to EVAL when a node lost it.
    client.defineCommand(rateLimitCommand, { lua: script })
    const scripted = client as unknown as Record<string, Call>
    this.script = (...keysAndArgs) => (scripted[rateLimitCommand] as Call).call(client, ...keysAndArgs)
    if (this.cluster) this.defineFixed(client)
  }

  /**
   * Requests that arrive in one turn of the event loop share one script call, hence one round trip:
   * they join the open batch, which is sent when the turn ends (setImmediate), and each reads its own
   * part of the reply. On Cluster a call must stay within one hash slot, so there every request is its
   * own call (auto-pipelined per node by ioredis).
   */
  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    if (this.sameSlotOnly) return this.call([checks]).then((reply) => outcomesIn(reply, 0, checks.length))
    const batch = this.batch ?? this.openBatch()
    const first = batch.keys
    batch.requests.push(checks)
    batch.keys += checks.length
    return batch.reply.then((reply) => outcomesIn(reply, first, checks.length))
  }

  /** On Cluster, the master that serves the key's slot as ioredis last learned it. */
  partOf(key: string): string {
    return this.cluster?.slots[hashSlot(key)]?.[0] ?? ''
  }

  parts(): string[] {
    if (!this.cluster) return ['']
    const masters = new Set<string>()
    for (const nodes of this.cluster.slots) if (nodes?.[0]) masters.add(nodes[0])
    return [...masters]
  }

  private openBatch(): Batch {
    const requests: (readonly LimitCheck[])[] = []
    const reply = new Promise<number[]>((resolve) => {
      setImmediate(() => {
        this.batch = undefined
        resolve(this.call(requests))
      })
    })
    this.batch = { requests, keys: 0, reply }
    return this.batch
  }

  /** KEYS, then one argument: per request, its number of keys, then interval and tolerance per key. */
  private call(requests: readonly (readonly LimitCheck[])[]): Promise<number[]> {
    const now = Date.now()
    const keys: string[] = []
    let numbers = ''
    for (const checks of requests) {
      const known = checks.some((check) => check.knownTat !== undefined && check.knownTat > now)
      numbers += `${known ? -checks.length : checks.length} `
      for (const check of checks) {
        keys.push(check.key)
        numbers += `${check.intervalMs} ${check.toleranceMs} `
        if (known) numbers += `${Math.max(0, Math.ceil((check.knownTat ?? now) - now))} `
      }
    }
    const fixed = this.fixed.get(keys.length)
    const reply = fixed ? fixed(...keys, numbers) : this.script(keys.length, ...keys, numbers)
    return this.timeoutMs === undefined ? reply : within(reply, this.timeoutMs)
  }

  /**
   * ioredis auto-pipelines a command with the other commands for the same node, found by its first
   * argument. With the number of keys first, every call would join the pipeline of that number's
   * slot, and a pipeline whose keys live on several masters fails as a whole. So on Cluster the script
   * is also defined with a fixed number of keys, key first, for each count up to `fixedUpTo`: defined
   * at once, since a pipeline knows only the commands defined before it. A call with more keys goes
   * out on its own (see `connectRedis`), routed by its keys.
   */
  private defineFixed(client: RedisClient): void {
    const scripted = client as unknown as Record<string, Call>
    for (let count = 1; count <= fixedUpTo; count++) {
      const name = `${rateLimitCommand}${count}`
      client.defineCommand(name, { lua: script, numberOfKeys: count })
      this.fixed.set(count, (...keysAndArgs) => (scripted[name] as Call).call(client, ...keysAndArgs))
    }
  }
}

/** Rules of one request on one identity: more than this many in a call go out unpipelined. */
const fixedUpTo = 16

/** The outcomes of `count` keys from the script's reply, starting at key number `first`. */
function outcomesIn(reply: number[], first: number, count: number): LimitOutcome[] {
  const outcomes: LimitOutcome[] = []
  for (let at = first * 4; at < (first + count) * 4; at += 4) {
    outcomes.push({
      allowed: reply[at] === 1,
      remaining: reply[at + 1] as number,
      retryAfterMs: reply[at + 2] as number,
      resetMs: reply[at + 3] as number,
    })
  }
  return outcomes
}
