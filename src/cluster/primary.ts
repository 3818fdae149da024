import cluster, { type Worker } from 'node:cluster'
import { type FSWatcher, watch } from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { admissionProblems, internalLeaves } from '../gateway/admission.js'
import { persistentSecret } from '../gateway/server.js'
import { formatProblem, type PolicyProblem } from '../policy/load.js'
import { compilePolicyTexts, type PolicyTexts, readPolicySource } from '../policy/source.js'
import type { Settings } from '../settings.js'
import { InternalCa } from '../tls/internal-ca.js'
import { randomTicketKeys, TicketKeyRotation } from '../tls/ticket-keys.js'
import { answerTimeoutMs, Channel, type Endpoint } from './channel.js'
import { SharedStateKeeper } from './keeper.js'
import type { Collected, WorkerLink } from './protocol.js'

interface Member {
  worker: Worker
  link: WorkerLink
  started: boolean
  startedAt: number
}

/**
 * How long the primary waits for each worker's figures when one asks for all of them: shorter than
 * that worker's own ask of the primary, so a slow worker leaves a gap in the answer, not a failed one.
 */
const collectTimeoutMs = answerTimeoutMs / 2

/** A worker that dies sooner than this after it started counts as crash-looping: restarts back off. */
const stableAfterMs = 10_000
const longestRestartDelayMs = 10_000
/** A worker compiles a generation, issues nothing and waits for DNS at most a few seconds. */
const applyTimeoutMs = 30_000

/**
 * The primary of `--workers N`: it serves no traffic itself. It validates the policies once (at start,
 * on SIGHUP and on file changes) and tells every worker to reload; forks the workers, which share the
 * listening sockets (Node's cluster hands each new connection to the next worker); replaces a worker
 * that dies; on SIGTERM has every worker drain and exits 0 once all did. It keeps the state the
 * workers must share (`keeper.ts`) and answers for all of them when one asks for the metrics or the
 * recent activity. Workers write their log lines to the stdout they inherit (`log-blocks.ts`).
 */
export async function runPrimary(settings: Settings, log: Logger, count: number): Promise<number> {
  // Caught from the first moment: by default SIGHUP and SIGTERM end a process on the spot.
  let reload: (reason: string) => Promise<void> = async () => {}
  process.on('SIGHUP', () => void reload('SIGHUP'))
  const stopRequested = new Promise<NodeJS.Signals | undefined>((resolve) => {
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  })
  // Made once here, not by each worker racing the others: a worker would make a CA of its own, and
  // two workers writing the same leaf could leave one's certificate beside the other's key.
  const internalCa = await InternalCa.open(settings.stateDir)
  if (!settings.stickySecret) await persistentSecret(path.join(settings.stateDir, 'sticky.key'))
  const first = await validate(settings, log, internalCa, false)
  if ('problems' in first) {
    for (const problem of first.problems)
      log.error({ problem: formatProblem(problem) }, formatProblem(problem))
    log.fatal({ problems: first.problems.length }, 'refusing to start: fix the policy files above')
    return 2
  }
  /** The generation every worker serves: the texts validated last, which a worker that joins gets too. */
  let policies = first

  const keeper = new SharedStateKeeper()
  const members = new Map<number, Member>()
  const registry = new Registry()
  const restarts = new Counter({
    name: 'portcullis_worker_restarts_total',
    help: 'Workers that died and were replaced.',
    registers: [registry],
  })
  new Gauge({
    name: 'portcullis_workers',
    help: 'Workers serving now.',
    registers: [registry],
    collect() {
      this.set(serving().length)
    },
  })
  let prober: number | undefined
  let ticketKey: string | undefined
  let stopping = false
  let restartDelayMs = 100
  let starting = true
  /** The workers serving now (started, not exited), but `except`. */
  const serving = (except?: Member) =>
    [...members.values()].filter((member) => member.started && member !== except)
  const ticketKeys = settings.redis
    ? undefined // every worker takes the key from Redis itself, as every replica does
    : new TicketKeyRotation({
        periodMs: settings.ticketKeyRotation,
        source: randomTicketKeys,
        apply: (key) => {
          ticketKey = key.toString('base64')
          for (const member of members.values()) member.link.tell('ticket-key', ticketKey)
        },
        log,
      })
  await ticketKeys?.start()

  const unanswered = new Gauge({
    name: 'portcullis_workers_unanswered',
    help: 'Workers whose figures are missing from this answer: they did not answer the primary in time.',
    registers: [registry],
  })
  const gather = async (kind: Collected): Promise<unknown[]> => {
    const answers = await Promise.allSettled(
      serving().map((member) => member.link.ask('collect', kind, collectTimeoutMs)),
    )
    const found = answers.flatMap((answer) => (answer.status === 'fulfilled' ? [answer.value] : []))
    if (kind !== 'metrics') return found
    unanswered.set(answers.length - found.length)
    return [...found, await registry.getMetricsAsJSON()]
  }

  let firstStart: (code: number | undefined) => void = () => {}
  const startedAll = new Promise<number | undefined>((resolve) => {
    firstStart = resolve
  })

  const fork = (): void => {
    const worker = cluster.fork()
    const link: WorkerLink = new Channel(worker as unknown as Endpoint)
    const member: Member = { worker, link, started: false, startedAt: Date.now() }
    members.set(worker.id, member)
    keeper.serve(worker.id, link, (tell) => {
      for (const other of serving(member)) tell(other.link)
    })
    link.answer('join', () => {
      prober ??= worker.id
      return {
        policies,
        workers: count,
        probe: prober === worker.id,
        health: keeper.healthSoFar(),
        ...(ticketKey ? { ticketKey } : {}),
      }
    })
    link.answer('gather', (kind) => gather(kind))
    link.listen('started', (addresses) => {
      member.started = true
      member.startedAt = Date.now()
      if (starting && [...members.values()].every((each) => each.started)) {
        starting = false
        log.info({ ...addresses, workers: members.size, env: settings.env }, 'gateway listening')
        firstStart(undefined)
      }
    })
    worker.on('exit', (code, signal) => {
      members.delete(worker.id)
      keeper.forget(worker.id)
      if (prober === worker.id) {
        const [next] = serving()
        prober = next?.worker.id
        next?.link.tell('probe', true)
      }
      if (stopping) return
      if (starting) {
        // A worker that cannot start (a policy changed since it was checked, a port taken) stops them
        // all; judged a moment later, like a restart below.
        setTimeout(() => stopping || firstStart(code === 0 || code === null ? 1 : code), 100)
        return
      }
      const lived = Date.now() - member.startedAt
      restartDelayMs = lived > stableAfterMs ? 100 : Math.min(restartDelayMs * 2, longestRestartDelayMs)
      // Judged after the delay: a stop signal sent to the whole group (systemd, Ctrl-C) can reach a
      // worker, which drains and exits, before it reaches this process.
      setTimeout(() => {
        if (stopping) return
        restarts.inc()
        log.error(
          { worker: worker.id, pid: worker.process.pid, code, signal, afterMs: restartDelayMs },
          'worker died: its requests in flight are lost; starting another',
        )
        fork()
      }, restartDelayMs)
    })
  }

  /** One reload: the files read once and validated; every worker told to serve exactly those texts. */
  const reloadOnce = async (reason: string) => {
    const read = await validate(settings, log, internalCa, true)
    if ('problems' in read) {
      for (const problem of read.problems)
        log.error(
          { reason, problem: formatProblem(problem) },
          `policy reload refused: ${formatProblem(problem)}`,
        )
      log.error(
        { reason, problems: read.problems.length },
        'policy reload refused; still serving the last good policies',
      )
      return
    }
    policies = read
    const workers = serving()
    const answers = await Promise.allSettled(
      workers.map((member) => member.link.ask('apply', { reason, policies: read }, applyTimeoutMs)),
    )
    const failed = answers.flatMap((answer, index) => {
      const worker = workers[index]?.worker.id
      if (answer.status === 'rejected') return [{ worker, problems: [String(answer.reason)] }]
      return answer.value.applied ? [] : [{ worker, problems: answer.value.problems }]
    })
    for (const { worker, problems } of failed)
      log.error(
        { reason, worker, digest: read.digest, problems },
        'a worker did not apply the policies the primary validated; it serves its previous generation',
      )
    if (failed.length === 0)
      log.info({ reason, digest: read.digest, workers: workers.length }, 'policies reloaded on every worker')
  }
  // Requests that arrive while a reload runs coalesce into one more, with the files as they are then.
  let reloading: Promise<void> | undefined
  let again = false
  reload = async (reason: string) => {
    if (reloading) {
      again = true
      return reloading
    }
    reloading = (async () => {
      do {
        again = false
        await reloadOnce(reason)
      } while (again)
    })().finally(() => {
      reloading = undefined
    })
    return reloading
  }

  for (let index = 0; index < count; index++) fork()
  const failed = await Promise.race([startedAll, stopRequested.then(() => undefined)])
  const watcher =
    settings.watch && failed === undefined ? watchPolicies(settings.policies, log, reload) : undefined
  const signal = failed === undefined ? await stopRequested : undefined
  stopping = true
  watcher?.close()
  ticketKeys?.stop()
  if (signal) log.info({ signal, workers: members.size }, 'stop requested: every worker drains')
  // A worker stopped before it served had nothing to drain: however it ends, that is a clean stop.
  const exits = [...members.values()].map(
    ({ worker, started }) =>
      new Promise<number>((resolve) => {
        const judged = (code: number | null) => (started ? (code ?? 1) : 0)
        if (worker.isDead()) resolve(judged(worker.process.exitCode))
        worker.once('exit', (code) => resolve(judged(code)))
        worker.process.kill('SIGTERM')
      }),
  )
  const codes = await Promise.all(exits)
  keeper.close()
  if (failed !== undefined) {
    log.fatal({ code: failed }, 'a worker failed to start: stopped them all')
    return failed
  }
  const code = codes.every((each) => each === 0) ? 0 : 1
  log.info({ code }, 'every worker stopped')
  return code
}

/**
 * The policy files read once and judged: their texts, which the workers will compile, or the problems
 * that refuse them. Internal-CA leaves are issued here, so every worker reads the same certificate
 * instead of issuing its own.
 */
async function validate(
  settings: Settings,
  log: Logger,
  internalCa: InternalCa,
  quiet: boolean,
): Promise<PolicyTexts | { problems: PolicyProblem[] }> {
  const read = await readPolicySource([settings.policies])
  if ('problems' in read) return read
  const loaded = await compilePolicyTexts(read)
  if (!loaded.ok) return loaded
  const problems = admissionProblems(loaded, settings, log, { redis: settings.redis !== undefined, quiet })
  if (problems.length > 0) return { problems }
  const issued = await internalLeaves(loaded.apps, internalCa)
  return issued.ok ? read : issued
}

function watchPolicies(
  directory: string,
  log: Logger,
  reload: (reason: string) => Promise<void>,
): FSWatcher | undefined {
  let timer: NodeJS.Timeout | undefined
  try {
    return watch(directory, () => {
      clearTimeout(timer)
      // Editors write a file in several steps; wait for them to settle.
      timer = setTimeout(() => void reload('file change'), 200)
    })
  } catch (error) {
    log.warn({ err: error }, 'cannot watch the policy directory; reload with SIGHUP')
    return undefined
  }
}
