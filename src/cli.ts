#!/usr/bin/env node
import cluster from 'node:cluster'
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { hashPassword } from './auth/passwords.js'
import { Channel, type Endpoint } from './cluster/channel.js'
import { workerCount } from './cluster/cpus.js'
import { runPrimary } from './cluster/primary.js'
import type { PrimaryLink } from './cluster/protocol.js'
import { explain, formatExplanation } from './gateway/explain.js'
import { Gateway, PolicyError } from './gateway/server.js'
import { canonicalIp } from './net/ip.js'
import { LogBlocks } from './observe/log-blocks.js'
import { formatProblem, loadPolicyFile } from './policy/load.js'
import { checkAlways, checkProduction, formatFinding } from './policy/rules.js'
import type { Policy } from './policy/schema.js'
import { loadPolicySource } from './policy/source.js'
import { envName, flagName, resolveSettings, type SettingName, settingsSchema } from './settings.js'
import { allPassed, formatResults, verify } from './verify.js'

const usage = {
  main: `Usage: portcullis <command> [options]

Commands:
  serve           Run the gateway in front of the apps described in the policy directory
  check [paths]   Validate policy files (default: ./policies)
  explain         Show how the gateway would decide one request, guard by guard
  verify <url>    Probe a live deployment from the outside, check by check
  hash-password   Read a password on stdin, print its hash for a policy's basicAuth.users

Run 'portcullis <command> --help' for a command's options.`,
  check: `Usage: portcullis check [--production] [--redis <url>] [--replicas <n>] [--format text|json] [paths...]

Validates policy files and directories (their *.yaml and *.yml files) as 'serve' would load them:
schema, unique app ids and hosts, readable certificate files. Problems are printed as
file:line:column field: reason.

--production   also run the production rules (the ones 'serve --env production' enforces), printed
               as file:line:column RULE-ID severity: reason (field). Fix: ...
--redis        the Redis URL serve will use (default PORTCULLIS_REDIS), for the rate-limit rules
--replicas     the replicas serve will run (default PORTCULLIS_REPLICAS, else 1): rate limits without
               Redis are a warning for one replica and an error for more
--format json  one JSON document: { valid, problems, findings }

Exit codes: 0 valid (warnings allowed), 1 production rule errors, 2 invalid files.`,
}

const explainUsage = `Usage: portcullis explain --url <url> [--policies <dir>] [--method GET] [--ip <address>]
                          [-H 'Name: value' ...] [--tls-version TLSv1.3] [--format text|json]

Prints the decision trace of one request: the route, the client IP derivation, each guard in order
with its verdict and the rule that decided, the final status, what the upstream would receive and the
response headers the gateway adds. It runs the server's own code on the policies (rate limits against
an empty budget). --ip is the address the request comes from (default 127.0.0.1).

Exit codes: 0 the request would pass, 1 it would be refused, 2 invalid policies or arguments.`

async function explainCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h' },
      policies: { type: 'string', default: './policies' },
      url: { type: 'string' },
      method: { type: 'string', default: 'GET' },
      ip: { type: 'string', default: '127.0.0.1' },
      header: { type: 'string', short: 'H', multiple: true, default: [] },
      'tls-version': { type: 'string', default: 'TLSv1.3' },
      format: { type: 'string', default: 'text' },
    },
  })
  if (values.help) {
    console.log(explainUsage)
    return 0
  }
  if (!values.url || !URL.canParse(values.url) || !canonicalIp(values.ip)) {
    console.error(`explain needs --url <absolute url> and a valid --ip.\n\n${explainUsage}`)
    return 2
  }
  const loaded = await loadPolicySource([values.policies])
  if (!loaded.ok) {
    for (const problem of loaded.problems) console.error(formatProblem(problem))
    return 2
  }
  const headers: Record<string, string> = {}
  for (const line of values.header) {
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim()
  }
  const explanation = await explain(loaded.apps, {
    method: values.method,
    url: values.url,
    ip: values.ip,
    headers,
    tlsVersion: values['tls-version'] === 'TLSv1.2' ? 'TLSv1.2' : 'TLSv1.3',
  })
  console.log(
    values.format === 'json' ? JSON.stringify(explanation, null, 2) : formatExplanation(explanation),
  )
  return explanation.outcome === 'refused' ? 1 : 0
}

const verifyUsage = `Usage: portcullis verify <https://host[:port]> [--policy <file>] [--connect <address>]
                         [--http-port 80] [--ca <pem file>] [--health <path>] [--format text|json]

Probes a live deployment from the outside and prints pass, fail, skip or error per check with the
evidence: HTTP redirects to HTTPS, TLS version, certificate validity and expiry, HSTS, the gateway
refusing a foreign Origin's preflight and WebSocket, a forged X-Forwarded-For not changing the client
(needs a rate limit on /), the gateway refusing restricted paths of --policy, and --health answering.
A check passes only on evidence it saw; where it is about a guard of the gateway, only the gateway's
own refusal (its PCL_* error body) counts. A probe that got no answer (refused, unresolved, TLS
failure, reset, timed out) is an error, never a pass.
--connect sends the connections to that address instead of resolving the host (like curl --resolve).

Exit codes: 0 every check passed or was skipped, 1 a check failed or got no answer, 2 bad arguments.`

async function verifyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      policy: { type: 'string' },
      connect: { type: 'string' },
      'http-port': { type: 'string', default: '80' },
      ca: { type: 'string' },
      health: { type: 'string' },
      format: { type: 'string', default: 'text' },
    },
  })
  if (values.help) {
    console.log(verifyUsage)
    return 0
  }
  const [target] = positionals
  if (!target || !URL.canParse(target) || new URL(target).protocol !== 'https:') {
    console.error(`verify needs an https:// URL.\n\n${verifyUsage}`)
    return 2
  }
  let policy: Policy | undefined
  if (values.policy) {
    const loaded = await loadPolicyFile(values.policy)
    if (!loaded.ok) {
      for (const problem of loaded.problems) console.error(formatProblem(problem))
      return 2
    }
    policy = loaded.loaded.policy
  }
  const results = await verify({
    target,
    httpPort: Number(values['http-port']),
    ...(values.connect ? { connect: values.connect } : {}),
    ...(values.ca ? { ca: await readFile(values.ca, 'utf8') } : {}),
    ...(policy ? { policy } : {}),
    ...(values.health ? { healthPath: values.health } : {}),
  })
  console.log(values.format === 'json' ? JSON.stringify(results, null, 2) : formatResults(results))
  return allPassed(results) ? 0 : 1
}

function serveUsage(): string {
  const names = Object.keys(settingsSchema.shape) as SettingName[]
  const width = Math.max(...names.map((name) => flagName(name).length))
  const lines = names.map((name) => {
    const field = settingsSchema.shape[name]
    return `  --${flagName(name).padEnd(width)} ${field.description ?? ''}\n  ${''.padEnd(width + 2)} env ${envName(name)}`
  })
  return `Usage: portcullis serve [options]

Options (a flag wins over its environment variable):
${lines.join('\n')}

Signals: SIGHUP reloads the policies; SIGTERM and SIGINT drain and stop.`
}

async function serve(args: string[]): Promise<number> {
  const names = Object.keys(settingsSchema.shape) as SettingName[]
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h' },
      ...Object.fromEntries(names.map((name) => [flagName(name), { type: 'string' as const }])),
    },
  })
  if (values.help) {
    console.log(serveUsage())
    return 0
  }
  const flags = Object.fromEntries(
    names.flatMap((name) => {
      const value = values[flagName(name) as keyof typeof values]
      return typeof value === 'string' ? [[name, value]] : []
    }),
  )
  const resolved = resolveSettings(flags, process.env)
  if (!resolved.ok) {
    for (const problem of resolved.problems) console.error(problem)
    return 2
  }
  const { settings } = resolved
  const destination = new LogBlocks()
  const worker = cluster.worker?.id
  const log = pino(
    { level: settings.logLevel, base: { service: 'portcullis', ...(worker ? { worker } : {}) } },
    destination,
  )
  const flushLog = () => destination.flush()
  process.once('exit', flushLog)
  const workers = workerCount(settings.workers)
  if (cluster.isPrimary && workers > 1) return runPrimary(settings, log, workers)
  // Signals are caught before start-up: a supervisor may send SIGTERM as soon as it reads
  // 'gateway listening', and without a handler Node dies at once instead of draining. Every one is
  // caught, not the first alone: a worker may get one from its primary and one sent to its group.
  const stopRequested = new Promise<NodeJS.Signals>((resolve) => {
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  }).then((signal) => {
    log.info({ signal }, 'stop requested')
  })
  let starting: Promise<Gateway>
  if (cluster.isWorker) {
    // The primary validates and asks for reloads; a SIGHUP sent to the whole process group is its.
    process.on('SIGHUP', () => {})
    const primary: PrimaryLink = new Channel(process as unknown as Endpoint)
    starting = primary.ask('join', null).then((welcome) => Gateway.start(settings, log, { primary, welcome }))
  } else {
    starting = Gateway.start(settings, log)
    // A reload asked for during start-up runs once started; a failed start is reported below.
    const reloadOnceStarted = (started: Gateway) => started.reload('SIGHUP')
    process.on('SIGHUP', () => void starting.then(reloadOnceStarted, () => {}))
  }
  let gateway: Gateway
  try {
    gateway = await starting
  } catch (error) {
    if (error instanceof PolicyError) {
      for (const problem of error.problems)
        log.error({ problem: formatProblem(problem) }, formatProblem(problem))
      log.fatal({ problems: error.problems.length }, 'refusing to start: fix the policy files above')
      return 2
    }
    log.fatal({ err: error }, 'gateway failed to start')
    return 1
  }
  await stopRequested
  await gateway.shutdown()
  return 0
}

async function check(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      production: { type: 'boolean' },
      redis: { type: 'string' },
      replicas: { type: 'string' },
      format: { type: 'string', default: 'text' },
    },
  })
  if (values.help) {
    console.log(usage.check)
    return 0
  }
  const source = await loadPolicySource(positionals.length > 0 ? positionals : ['./policies'])
  const { files } = source
  const problems = source.ok ? [] : source.problems
  const findings = !source.ok
    ? []
    : values.production
      ? checkProduction(source.policies, {
          redis: Boolean(values.redis ?? process.env.PORTCULLIS_REDIS),
          replicas: Math.max(1, Number(values.replicas ?? process.env.PORTCULLIS_REPLICAS ?? 1) || 1),
        })
      : checkAlways(source.policies)
  const errors = findings.filter((finding) => finding.severity === 'error')
  const notes = findings.filter((finding) => finding.severity === 'note')
  const code = problems.length > 0 ? 2 : errors.length > 0 ? 1 : 0
  if (values.format === 'json') {
    console.log(JSON.stringify({ valid: problems.length === 0, problems, findings }, null, 2))
    return code
  }
  for (const problem of problems) console.log(formatProblem(problem))
  for (const finding of findings) console.log(formatFinding(finding))
  if (problems.length > 0) console.log(`${problems.length} problem(s) in ${files.length} file(s)`)
  else if (findings.length > 0) {
    console.log(
      `${files.length} policy file(s) valid; ${errors.length} production error(s), ${findings.length - errors.length - notes.length} warning(s)${notes.length > 0 ? `, ${notes.length} note(s)` : ''}`,
    )
  } else console.log(`${files.length} policy file(s) valid`)
  return code
}

/** `echo -n 'secret' | portcullis hash-password`: stdin, so the password stays out of shell history and ps. */
async function hashPasswordCommand(): Promise<number> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const password = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
  if (password.length < 8) {
    console.error('The password must have at least 8 characters (one trailing newline is ignored).')
    return 2
  }
  console.log(await hashPassword(password))
  return 0
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'serve':
      return serve(rest)
    case 'check':
      return check(rest)
    case 'explain':
      return explainCommand(rest)
    case 'verify':
      return verifyCommand(rest)
    case 'hash-password':
      return hashPasswordCommand()
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(usage.main)
      return command === undefined ? 2 : 0
    default:
      console.error(`Unknown command "${command}".\n\n${usage.main}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
    // Exit even if a library left a handle open; the timer does not itself keep the process alive.
    setTimeout(() => process.exit(code), 500).unref()
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  },
)
