import { z } from 'zod'
import { parseCidr } from './net/ip.js'
import { duration, size } from './policy/units.js'

const port = z.coerce.number().int().min(0).max(65_535)

/**
 * Gateway settings (not per app): from `serve` flags, else `PORTCULLIS_<NAME>` environment variables,
 * else these defaults. Port 0 picks a free port (tests do this).
 */
/** A comma-separated list, blanks dropped. */
function commaList(fallback = '') {
  return z
    .string()
    .default(fallback)
    .transform((text) =>
      text
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean),
    )
}

/** A comma-separated list of header names, lower-cased. */
function headerList(fallback: string) {
  return commaList(fallback).transform((names) => names.map((name) => name.toLowerCase()))
}

export const settingsSchema = z.strictObject({
  policies: z.string().default('./policies').describe('Directory of policy files (*.yaml, *.yml).'),
  listen: z.string().default('0.0.0.0').describe('Address the HTTP and HTTPS listeners bind to.'),
  httpPort: z
    .union([z.literal('off'), port], { error: 'must be a port number (0 to 65535) or off' })
    .default(80)
    .describe(
      'Plain HTTP: ACME HTTP-01 challenges, redirects to HTTPS, apps with tls.mode off. "off" opens no HTTP listener at all (443 only).',
    ),
  httpsPort: port.default(443).describe('TLS: HTTP/2 and HTTP/1.1, certificate chosen by SNI.'),
  adminPort: port.default(9090).describe('Admin listener: /health and /metrics.'),
  adminListen: z
    .string()
    .default('127.0.0.1')
    .describe('Address of the admin listener; loopback keeps it private.'),
  adminTokenFile: z
    .string()
    .optional()
    .describe(
      'A file whose content (one line) /metrics and /dashboard then require, as a bearer token or a Basic password.',
    ),
  probePort: port
    .optional()
    .describe('A listener with /health and /ready alone, for orchestrator probes on the pod network.'),
  probeListen: z.string().default('0.0.0.0').describe('Address of the probe listener.'),
  redis: z
    .string()
    .regex(/^(rediss?|redis-sentinel|redis-cluster):\/\//, {
      error: 'must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL',
    })
    .optional()
    .describe('Redis shared by the replicas for rate limits. Without it, limits are per process.'),
  redisTimeout: duration
    .default(250)
    .describe(
      'Longest wait for one call to a shared rate-limit store (Redis; with workers, also the primary); then the rule falls back as its onStoreError says. Room for ordinary event-loop lag under load.',
    ),
  replicas: z.coerce
    .number()
    .int()
    .min(1)
    .default(1)
    .describe('Gateway replicas sharing the Redis: the local fallback divides each limit by this.'),
  stateDir: z
    .string()
    .default('./certs')
    .describe('Where certificates, keys and the ACME account are kept (keys mode 0600).'),
  stickySecret: z
    .string()
    .min(32, { error: 'must be at least 32 characters' })
    .optional()
    .describe(
      'Signs sticky-session cookies; give every replica the same one. Default: a random key kept in the state dir.',
    ),
  acmeRetry: duration
    .default(60_000)
    .describe(
      'After a failed ACME order, the wait before the next try; it doubles on each failure, up to 1h.',
    ),
  acmePoll: duration
    .default(1000)
    .describe('How often the ACME CA is asked whether it has validated and issued (backs off to 10x).'),
  env: z.enum(['production', 'development']).default('production').describe('Deployment environment.'),
  gracePeriod: duration
    .default(30_000)
    .describe('On SIGTERM, how long in-flight requests and WebSockets may take to finish.'),
  headersTimeout: duration
    .default(15_000)
    .describe(
      'Time a client has to finish its TLS handshake, and to send a whole request head once it started (slowloris); then 408.',
    ),
  keepAliveTimeout: duration
    .default(75_000)
    .describe(
      'How long a client connection with nothing in flight stays open: HTTP/1 keep-alive, HTTP/2 without streams.',
    ),
  h2StreamWindow: size
    .default(16 * 1024 ** 2)
    .refine((bytes) => bytes >= 65_535 && bytes <= 2 ** 31 - 1, {
      error: 'must be between 64kb and 2gb (HTTP/2 windows are 65535 to 2^31-1 bytes)',
    })
    .describe(
      'HTTP/2 receive window per stream: how much of an upload may be in flight unacknowledged, so a link with latency is not capped at one window per round trip: Node acknowledges every half window, so an upload moves about a window per two round trips (16mb: ~100 MB/s at 50 ms). Lowered for every stream of a session while uploads run side by side, so their windows stay within --h2-connection-window. Default 16mb.',
    ),
  h2ConnectionWindow: size
    .default(16 * 1024 ** 2)
    .refine((bytes) => bytes >= 65_535 && bytes <= 2 ** 31 - 1, {
      error: 'must be between 64kb and 2gb (HTTP/2 windows are 65535 to 2^31-1 bytes)',
    })
    .describe(
      'HTTP/2 upload budget per connection (the session window, and the sum the windows of its uploading streams are kept within): about the most one client connection can make the gateway hold while the upstream reads slower than the client sends. Default 16mb.',
    ),
  maxConnections: z.coerce
    .number()
    .int()
    .min(0)
    .default(0)
    .describe(
      'Most client connections per listener at once; 0 for no limit. Further ones are closed at once.',
    ),
  proxyProtocolFrom: commaList()
    .refine((entries) => entries.every((entry) => parseCidr(entry) !== undefined), {
      error: 'must be a comma-separated list of IP addresses or networks like 10.0.0.0/8',
    })
    .describe(
      'Load balancers that send a PROXY protocol (v1 or v2) header; their connections must start with one.',
    ),
  dnsServers: commaList().describe(
    'DNS servers (host:port, comma-separated) for dns+ and srv+ upstream targets; default the system resolver.',
  ),
  logLevel: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
    .default('info')
    .describe('Log level.'),
  logHeaders: headerList('').describe(
    'Request headers to include in access log lines (comma-separated), e.g. user-agent,referer.',
  ),
  logResponseHeaders: headerList('').describe(
    'Response headers to include in access log lines (comma-separated), e.g. content-type,x-synapse-detection-time-us.',
  ),
  logRedact: headerList('authorization,proxy-authorization,cookie,x-api-key').describe(
    'Headers whose values are logged as [redacted] even when --log-headers or --log-response-headers names them (set-cookie always is).',
  ),
  workers: z
    .union([z.literal('auto'), z.coerce.number().int().min(1).max(256)], {
      error: 'must be a number of workers (1 to 256) or auto',
    })
    .default(1)
    .describe(
      'Worker processes serving the listeners together (auto: one per CPU the process may use, container limits included). Rate limits, WebSocket caps, ACME, health checks, TLS session tickets and metrics stay shared across them.',
    ),
  ticketKeyRotation: duration
    .default(12 * 3_600_000)
    .describe(
      'How long one TLS session-ticket key is used; every worker (and with --redis every replica) uses the same one, so a returning client resumes anywhere.',
    ),
  watch: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true')
    .describe('Reload when a policy file changes (SIGHUP always reloads).'),
})

export type Settings = z.output<typeof settingsSchema>
export type SettingName = keyof Settings

/** `httpPort` → `--http-port` and `PORTCULLIS_HTTP_PORT`. */
export function flagName(name: SettingName): string {
  return name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)
}

export function envName(name: SettingName): string {
  return `PORTCULLIS_${flagName(name).replace(/-/g, '_').toUpperCase()}`
}

export function resolveSettings(
  flags: Partial<Record<SettingName, string>>,
  env: NodeJS.ProcessEnv,
): { ok: true; settings: Settings } | { ok: false; problems: string[] } {
  const raw: Partial<Record<SettingName, string>> = {}
  for (const name of Object.keys(settingsSchema.shape) as SettingName[]) {
    const value = flags[name] ?? env[envName(name)]
    if (value !== undefined) raw[name] = value
  }
  const parsed = settingsSchema.safeParse(raw)
  if (parsed.success) return { ok: true, settings: parsed.data }
  return {
    ok: false,
    problems: parsed.error.issues.map((issue) => {
      const name = String(issue.path[0]) as SettingName
      return `--${flagName(name)} (${envName(name)}): ${issue.message.replace(/^Invalid input: /, '')}`
    }),
  }
}
