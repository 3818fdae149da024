import { z } from 'zod'

/**
 * The policy file schema: the single source of truth for validation, for the TypeScript types (z.infer)
 * and for policy.schema.json (scripts/schema.ts). Field documentation lives in `.describe()` so editors
 * show it; the README tables mirror it.
 */

const durationUnitsMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const durationPattern = /^(\d+)(ms|s|m|h|d)$/

/** `30s`, `5m`, `1h`, `250ms`, `7d` → milliseconds. */
export function parseDuration(text: string): number {
  const match = durationPattern.exec(text)
  if (!match) throw new Error(`not a duration: ${text}`)
  return Number(match[1]) * durationUnitsMs[match[2] as keyof typeof durationUnitsMs]
}

export const duration = z
  .string()
  .regex(durationPattern, { error: 'must be a duration like 500ms, 30s, 5m or 1h' })
  .transform(parseDuration)

// Upper case is accepted and folded: DNS names are case-insensitive.
const hostLabel = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
const hostPattern = new RegExp(`^(?:\\*\\.)?${hostLabel}(?:\\.${hostLabel})*$`)

export const hostName = z
  .string()
  .max(253)
  .regex(hostPattern, {
    error: 'must be a host name like app.example.com or *.example.com (no scheme, port or path)',
  })
  .transform((host) => host.toLowerCase())

const upstreamTarget = z.string().refine(
  (text) => {
    if (!URL.canParse(text)) return false
    const url = new URL(text)
    return (
      (url.protocol === 'http:' || url.protocol === 'https:') &&
      url.pathname === '/' &&
      !url.search &&
      !url.hash
    )
  },
  { error: 'must be an origin like http://127.0.0.1:8080 (http or https, no path)' },
)

export const upstreamSchema = z
  .strictObject({
    targets: z
      .array(upstreamTarget)
      .min(1, { error: 'needs at least one target' })
      .describe('Where the app listens, as origins (http://host:port or https://host:port).'),
    timeouts: z
      .strictObject({
        connect: duration
          .default(5000)
          .describe('Time allowed to open a connection to a target. Default 5s.'),
        read: duration
          .default(30_000)
          .describe(
            'Longest wait for the response headers and between two chunks of the response body. Default 30s.',
          ),
        write: duration
          .default(60_000)
          .describe(
            'Longest pause allowed while the client sends its request or receives the response. Default 60s.',
          ),
      })
      .prefault({})
      .describe(
        'Upstream timeouts; each ends the request with a 504 or closes the stream instead of hanging.',
      ),
  })
  .describe('The app behind the gateway.')

const manualCertificate = z.strictObject({
  cert: z.string().min(1).describe('PEM certificate chain, relative to the policy file.'),
  key: z.string().min(1).describe('PEM private key, relative to the policy file.'),
})

export const tlsSchema = z
  .strictObject({
    mode: z
      .enum(['internal', 'manual', 'off'])
      .default('internal')
      .describe(
        'internal: a local CA under the state dir signs a certificate for the hosts (development). ' +
          'manual: certificate files you provide. off: served on plain HTTP, for a gateway behind another TLS hop.',
      ),
    manual: manualCertificate.optional().describe('Certificate files, required when mode is manual.'),
    minVersion: z
      .enum(['TLSv1.2', 'TLSv1.3'])
      .default('TLSv1.2')
      .describe('Lowest TLS version accepted for this app.'),
  })
  .prefault({})
  .superRefine((tls, context) => {
    if (tls.mode === 'manual' && !tls.manual) {
      context.addIssue({ code: 'custom', path: ['manual'], message: 'is required when tls.mode is manual' })
    }
    if (tls.mode !== 'manual' && tls.manual) {
      context.addIssue({ code: 'custom', path: ['manual'], message: 'is only used when tls.mode is manual' })
    }
  })
  .describe('How the gateway terminates TLS for this app.')

export const hstsSchema = z
  .strictObject({
    maxAge: z
      .number()
      .int()
      .min(0)
      .default(31_536_000)
      .describe(
        'Seconds browsers remember to use HTTPS only; 0 sends no header. Default 31536000 (one year).',
      ),
    includeSubDomains: z.boolean().default(false).describe('Apply to every subdomain too. Default false.'),
    preload: z.boolean().default(false).describe('Ask to be put on browsers’ preload lists. Default false.'),
  })
  .prefault({})
  .describe('Strict-Transport-Security, sent on every HTTPS response of the app (never on plain HTTP).')

export const policySchema = z
  .strictObject({
    app: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, {
        error: 'must be lowercase letters, digits, - or _ (at most 63)',
      })
      .describe('Unique id of the app, used in logs, metrics and errors.'),
    hosts: z
      .array(hostName)
      .min(1, { error: 'needs at least one host' })
      .describe(
        'Host names routed to this app, exact or *.example.com (one label). Host header and SNI both route.',
      ),
    upstream: upstreamSchema,
    tls: tlsSchema,
    hsts: hstsSchema,
  })
  .describe('One app fronted by Portcullis.')

/** A policy file as the user writes it (before defaults). */
export type PolicyInput = z.input<typeof policySchema>
/** A validated policy with defaults filled in and durations in milliseconds. */
export type Policy = z.output<typeof policySchema>
