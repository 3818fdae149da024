import { z } from 'zod'
import { passwordHashPattern } from '../auth/passwords.js'
import { parseCidr } from '../net/ip.js'
import { isOriginSpec } from '../net/origin.js'
import { isPathPattern, patternsOverlap, rewrittenPattern } from '../net/path-pattern.js'
import { serverOf } from '../net/servers.js'
import { isCipherSuite, isTls13Suite, tlsGroupNames, tlsProfileNames } from '../net/tls-profiles.js'
import { duration, size } from './units.js'

/**
 * The policy file schema: the single source of truth for validation, for the TypeScript types (z.infer)
 * and for policy.schema.json (scripts/schema.ts). Field documentation lives in `.describe()` so editors
 * show it, and docs/reference.md is generated from it (npm run docs).
 */

const cidr = z.string().refine((text) => parseCidr(text) !== undefined, {
  error: 'must be an IP address or a network like 10.0.0.0/8 or 2001:db8::/32',
})

const origin = z.string().refine(isOriginSpec, {
  error: 'must be an origin like https://example.com, a pattern like https://*.example.com, "null" or "*"',
})

const pathPattern = z.string().refine(isPathPattern, {
  error:
    'must be a path pattern like /admin, /studio/** or /workspaces/*/db (starting with /, ** only as a whole last segment)',
})

const httpMethod = z
  .string()
  .transform((method) => method.toUpperCase())
  .pipe(z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE']))

const headerName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'must be an HTTP header name' })
  .transform((name) => name.toLowerCase())

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
    const scheme = /^(?:(dns|srv)\+)?(https?):$/.exec(url.protocol)
    if (!scheme || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) return false
    // An SRV name says the port itself; an A/AAAA name needs one unless the scheme's default will do.
    return scheme[1] !== 'srv' || url.port === ''
  },
  {
    error:
      'must be an origin like http://127.0.0.1:8080, a name re-resolved as dns+http://app.internal:8080, or an SRV name as srv+http://_http._tcp.app.internal (http or https, no path)',
  },
)

export const upstreamSchema = z
  .strictObject({
    targets: z
      .array(upstreamTarget)
      .min(1, { error: 'needs at least one target' })
      .describe(
        "Origins of the app (`http://host:port` or `https://host:port`, no path). Or names to look up again and again, each address becoming a target with its own health, balancing and stickiness: `dns+http://app.ns.svc.cluster.local:8080` (every A and AAAA address, as a headless Kubernetes Service gives them), `srv+http://_http._tcp.app.internal` (the hosts and ports of the SRV records of the best priority). They are looked up on their records' TTL (within `upstream.dns`); a new address joins at once, one that disappears leaves rotation and its requests in flight finish; a failed lookup keeps the last good set, logs `upstream DNS lookup failed` and counts in `portcullis_upstream_dns_failures_total`. The gateway waits up to 5 s for the first lookups before it serves a new set of policies. Sticky cookies keep their target while its address stays.",
      ),
    dns: z
      .strictObject({
        minTtl: duration
          .default(1000)
          .describe('Re-resolve no more often than this, whatever the TTL. Default 1s.'),
        maxTtl: duration
          .default(60_000)
          .describe('Re-resolve at least this often, whatever the TTL. Default 60s.'),
      })
      .prefault({})
      .describe('Bounds on how often `dns+` and `srv+` targets are looked up again, whatever their TTL.'),
    balance: z
      .enum(['round-robin', 'least-connections', 'sticky', 'hash'])
      .default('round-robin')
      .describe(
        '`round-robin`, `least-connections` or `sticky` (a signed cookie pins each client to a target, which `least-connections` picks first). `hash`: each client keeps its target without cookies (rendezvous hashing on `hashOn`); when a target leaves or returns, only its own clients move.',
      ),
    hashOn: z
      .union([z.literal('ip'), z.string().regex(/^header:[!#$%&'*+.^_`|~0-9A-Za-z-]+$/)])
      .default('ip')
      .transform((key) => key.toLowerCase())
      .describe(
        'For `balance: hash`: `ip` (the derived client IP) or `header:<name>` (e.g. `header:x-sensor-id` for cookie-less devices behind one NAT), falling back to the IP when the header is missing.',
      ),
    healthCheck: z
      .strictObject({
        path: z
          .string()
          .regex(/^\/[^\s?#]*$/, { error: 'must be a path such as /health' })
          .describe(
            'Path requested on each target; a 2xx or 3xx answer counts as healthy unless expect says more.',
          ),
        interval: duration.default(10_000).describe('Time between checks of one target. Default 10s.'),
        timeout: duration.default(2000).describe('Longest wait for an answer. Default 2s.'),
        healthyThreshold: z
          .number()
          .int()
          .min(1)
          .default(2)
          .describe('Consecutive successes that bring a target back. Default 2.'),
        unhealthyThreshold: z
          .number()
          .int()
          .min(1)
          .default(3)
          .describe('Consecutive failures that take a target out. Default 3.'),
        expect: z
          .strictObject({
            status: z
              .array(z.number().int().min(100).max(599))
              .min(1)
              .optional()
              .describe('Statuses that count as healthy. Default: any 2xx or 3xx.'),
            body: z.string().min(1).optional().describe('Text the answer body must contain.'),
            json: z
              .record(z.string().min(1), z.union([z.string(), z.number(), z.boolean(), z.null()]))
              .optional()
              .describe(
                'Fields of a JSON answer and the values they must have; a dotted name reaches inside objects (db.connected: true).',
              ),
          })
          .optional()
          .describe(
            'What a healthy answer looks like: `status: [200]`, `body: "ok"` (text it contains), `json: { pg_connected: true, db.replicas: 2 }` (fields of a JSON answer, dotted names reach inside objects). Bodies are read up to 64 KiB. Without it, any 2xx or 3xx is healthy.',
          ),
      })
      .optional()
      .describe(
        '`{ path, interval: 10s, timeout: 2s, healthyThreshold: 2, unhealthyThreshold: 3 }`: active checks of every target, on connections of their own (a probe never waits behind traffic).',
      ),
    passive: z
      .strictObject({
        failures: z
          .number()
          .int()
          .min(1)
          .default(3)
          .describe('Consecutive connect errors or 5xx answers that take a target out. Default 3.'),
        cooldown: duration.default(30_000).describe('How long it stays out. Default 30s.'),
      })
      .prefault({})
      .describe('Consecutive connect errors or 5xx that take a target out, and for how long.'),
    maxConnections: z
      .number()
      .int()
      .min(1)
      .default(256)
      .describe(
        'Most connections open to each target at once, for HTTP requests (WebSockets have their own caps). Requests beyond wait in a queue.',
      ),
    maxQueue: z
      .number()
      .int()
      .min(0)
      .default(1024)
      .describe(
        'Requests that may wait for a connection to a target; past it, `503 PCL_UPSTREAM_BUSY` at once, so a flood cannot queue without bound.',
      ),
    maxPerClient: z
      .number()
      .int()
      .min(1)
      .default(128)
      .describe(
        'Requests one client address (an IPv6 client: its /64) may have in flight (sent or waiting) to the pool, counted per worker; past it, `503 PCL_UPSTREAM_BUSY`, so one client (HTTP/2 streams opened and reset in a flood) cannot take every connection and the queue. Raise it for clients behind one large NAT.',
      ),
    retries: z
      .number()
      .int()
      .min(0)
      .max(5)
      .default(1)
      .describe(
        'Other targets tried when a connection cannot be opened, for GET, HEAD, OPTIONS, PUT and DELETE without a body only. A request that reached an app is never sent again.',
      ),
    timeouts: z
      .strictObject({
        connect: duration
          .default(5000)
          .describe(
            'Time allowed to open a connection to a target; then `504 PCL_UPSTREAM_CONNECT_TIMEOUT`.',
          ),
        headers: duration
          .optional()
          .describe(
            'Longest wait for the response head once the request went upstream; then `504 PCL_UPSTREAM_TIMEOUT`. (`read` is its former name, still understood.) Default 30s.',
          ),
        idle: duration
          .optional()
          .describe(
            "Longest silence in either direction, nginx's `proxy_read_timeout`: while the client sends its body, between two chunks of the answer, while the client does not read. Every chunk that moves starts it over, so server-sent events, long polls, long downloads and slow uploads live as long as bytes move; no timeout bounds a whole exchange. Then `504 PCL_UPSTREAM_TIMEOUT`, or, once the answer has started, the connection is closed and the access line carries the code and this rule (and `portcullis_refusals_total` counts it). WebSockets are not bound by it. (`write` is its former name, still understood.) Default 60s.",
          ),
        upload: duration
          .optional()
          .describe(
            'Longest time the client may take to send its whole request body, however it trickles; then `408 PCL_REQUEST_TIMEOUT` (the connection closed), or the exchange is cut if the answer had started.',
          ),
        read: duration.optional().describe('Former name of headers, still understood.'),
        write: duration.optional().describe('Former name of idle, still understood.'),
      })
      .superRefine((timeouts, context) => {
        for (const [former, name] of [
          ['read', 'headers'],
          ['write', 'idle'],
        ] as const) {
          if (timeouts[former] !== undefined && timeouts[name] !== undefined)
            context.addIssue({
              code: 'custom',
              path: [former],
              message: `is the former name of ${name}: set only ${name}`,
            })
        }
      })
      .transform(({ connect, headers, idle, upload, read, write }) => ({
        connect,
        headers: headers ?? read ?? 30_000,
        idle: idle ?? write ?? 60_000,
        upload,
      }))
      .prefault({})
      .describe(
        'Upstream timeouts; each ends the request with a 504 (408 for upload) or closes the stream instead of hanging. None bounds a whole exchange that keeps moving.',
      ),
  })
  .describe('The app behind the gateway.')

const manualCertificate = z.strictObject({
  cert: z.string().min(1).describe('PEM certificate chain, relative to the policy file.'),
  key: z.string().min(1).describe('PEM private key, relative to the policy file.'),
})

/** Directory URLs of the CAs named in policies; anything else is given as a URL. */
export const acmeDirectories = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
} as const

const acmeSchema = z
  .strictObject({
    email: z
      .email({ error: 'must be an email address' })
      .describe(
        'Contact address for the CA account (expiry and incident notices). Required with `mode: acme`.',
      ),
    directory: z
      .string()
      .refine(
        (value) =>
          Object.hasOwn(acmeDirectories, value) ||
          (URL.canParse(value) && new URL(value).protocol === 'https:'),
        {
          error: 'must be letsencrypt, letsencrypt-staging or the https:// URL of an ACME directory',
        },
      )
      .default('letsencrypt')
      .describe(
        '`letsencrypt`, `letsencrypt-staging` (untrusted certificates, generous rate limits: try a setup there first) or the `https://` URL of an ACME directory.',
      ),
    challenge: z
      .enum(['http-01', 'tls-alpn-01'])
      .default('http-01')
      .describe(
        '`http-01` (port 80) or `tls-alpn-01` (port 443 only, for deployments where port 80 is closed).',
      ),
    eab: z
      .strictObject({
        kid: z.string().min(1).describe('Key identifier given by the CA.'),
        hmacKey: z.string().min(1).describe('Base64url HMAC key given by the CA.'),
      })
      .optional()
      .describe(
        '`{ kid, hmacKey }` external account binding, for CAs that require one (ZeroSSL, Google, some private CAs).',
      ),
  })
  .describe('Automatic certificates from an ACME CA, required when mode is acme.')

const cipherSuite = z.string().refine(isCipherSuite, {
  error:
    'must be the OpenSSL name of one cipher suite, such as ECDHE-ECDSA-AES128-GCM-SHA256 or TLS_AES_128_GCM_SHA256 (no keywords such as HIGH)',
})

export const tlsSchema = z
  .strictObject({
    mode: z
      .enum(['acme', 'internal', 'manual', 'off'])
      .default('internal')
      .describe(
        "`acme`: certificates from an ACME CA such as Let's Encrypt, ordered and renewed automatically. `internal`: a local CA under the state dir signs a certificate for the app's hosts (development, like Caddy's `tls internal`). `manual`: certificate files you provide. `off`: the app is served on plain HTTP, for a gateway behind another TLS terminator. Behind one that is in `clientIp.trustedProxies`, its `X-Forwarded-Proto` is the client's protocol: `http` gets a 308 to the same URL on `https://` and `https` gets HSTS (both unless `hsts.maxAge` is `0`, for a deployment with no TLS anywhere); from an untrusted peer the header changes nothing.",
      ),
    acme: acmeSchema.optional(),
    manual: manualCertificate
      .optional()
      .describe(
        'PEM certificate chain and private key, relative to the policy file. Required with `mode: manual`, refused otherwise. Read and checked at load.',
      ),
    minVersion: z
      .enum(['TLSv1.2', 'TLSv1.3'])
      .default('TLSv1.2')
      .describe(
        "Lowest TLS version for this app: `TLSv1.2` or `TLSv1.3`. The listener never accepts below TLS 1.2. A connection below the app's minimum gets `403 PCL_TLS_VERSION_TOO_OLD`. (`profile: modern` refuses TLS 1.2 in the handshake itself.)",
      ),
    profile: z
      .enum(tlsProfileNames)
      .default('intermediate')
      .describe(
        "The versions, cipher suites and groups the app's connections are offered; see [TLS profiles](tls.md#tls-profiles). `intermediate`: TLS 1.2 with ECDHE and AEAD suites only, and TLS 1.3 (Mozilla intermediate without DHE). `modern`: TLS 1.3 only. Both on X25519, P-256 and P-384.",
      ),
    ciphers: z
      .array(cipherSuite)
      .min(1, { error: 'needs at least one suite' })
      .optional()
      .describe(
        "The exact suites offered instead of the profile's, as OpenSSL names: TLS 1.2 suites (`ECDHE-ECDSA-AES256-GCM-SHA384`) and TLS 1.3 ones (`TLS_AES_256_GCM_SHA384`). Listing no `TLS_*` suite turns TLS 1.3 off for the app, listing only `TLS_*` suites turns TLS 1.2 off; with `modern`, TLS 1.2 suites are refused. A name this OpenSSL does not know, or a keyword such as `HIGH`, is refused at load.",
      ),
    groups: z
      .array(z.enum(tlsGroupNames))
      .min(1, { error: 'needs at least one group' })
      .optional()
      .describe(
        "The exact key-exchange groups offered instead of the profile's: `X25519`, `X448`, `P-256`, `P-384`, `P-521`, `ffdhe2048` … `ffdhe8192`.",
      ),
  })
  .prefault({})
  .superRefine((tls, context) => {
    if (tls.mode === 'off') {
      for (const field of ['ciphers', 'groups'] as const) {
        if (tls[field])
          context.addIssue({ code: 'custom', path: [field], message: 'is only used when TLS is on' })
      }
    }
    if (tls.profile === 'modern') {
      for (const [index, suite] of (tls.ciphers ?? []).entries()) {
        if (!isTls13Suite(suite))
          context.addIssue({
            code: 'custom',
            path: ['ciphers', index],
            message: `${suite} is a TLS 1.2 suite, and profile modern is TLS 1.3 only`,
          })
      }
    }
    if (tls.mode === 'manual' && !tls.manual) {
      context.addIssue({ code: 'custom', path: ['manual'], message: 'is required when tls.mode is manual' })
    }
    if (tls.mode !== 'manual' && tls.manual) {
      context.addIssue({ code: 'custom', path: ['manual'], message: 'is only used when tls.mode is manual' })
    }
    if (tls.mode === 'acme' && !tls.acme) {
      context.addIssue({ code: 'custom', path: ['acme'], message: 'is required when tls.mode is acme' })
    }
    if (tls.mode !== 'acme' && tls.acme) {
      context.addIssue({ code: 'custom', path: ['acme'], message: 'is only used when tls.mode is acme' })
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
        '`Strict-Transport-Security` max-age in seconds (`31536000`: one year), sent on every HTTPS response of the app (including those a trusted TLS terminator in front says arrived over HTTPS) and never on plain HTTP. `0` sends no header.',
      ),
    includeSubDomains: z.boolean().default(false).describe('Adds `includeSubDomains`: every subdomain too.'),
    preload: z
      .boolean()
      .default(false)
      .describe('Adds `preload`: asks to be put on browsers’ preload lists.'),
  })
  .prefault({})
  .describe('Strict-Transport-Security, sent on every HTTPS response of the app (never on plain HTTP).')

/** X-Forwarded-For and Forwarded carry a chain of addresses; any other client-IP header holds one. */
export function isChainHeader(header: string): boolean {
  return header === 'x-forwarded-for' || header === 'forwarded'
}

export const clientIpSchema = z
  .strictObject({
    trustedProxies: z
      .array(cidr)
      .default([])
      .describe(
        'Networks (`10.0.0.0/8`, `2001:db8::/32`, single addresses) whose forwarding headers are believed. Empty: the socket peer is the client and forwarding headers are ignored.',
      ),
    hops: z
      .number()
      .int()
      .min(1)
      .max(32)
      .optional()
      .describe(
        "Number of proxies in front, like Express's `trust proxy = N` (Appstrate's `TRUST_PROXY`). Counts only when the peer itself is in `trustedProxies`; refused without it, since a bare hop count lets anyone choose their own address.",
      ),
    trustedProxiesFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        "A file of more trusted networks, one per line (`#` comments), relative to the policy file and read at every load: for a CDN's published ranges. A bad line is a located problem (`cdn.txt:2: ...`).",
      ),
    header: z
      .union([z.enum(['x-forwarded-for', 'forwarded']), headerName])
      .default('x-forwarded-for')
      .describe(
        'Where trusted proxies name the client: the chain in `x-forwarded-for` or `forwarded` (RFC 7239), or any other header name for a header of one address written by the proxy in front (`cf-connecting-ip` behind Cloudflare, `true-client-ip`). That header is read only from a trusted peer; the upstream then gets `X-Forwarded-For: <client>, <peer>`. `hops` goes only with a chain.',
      ),
  })
  .prefault({})
  .superRefine((section, context) => {
    const trusts = section.trustedProxies.length > 0 || section.trustedProxiesFile !== undefined
    if (section.hops !== undefined && !trusts) {
      context.addIssue({
        code: 'custom',
        path: ['hops'],
        message: 'needs trustedProxies: a hop count alone would let any client choose its own address',
      })
    }
    if (section.hops !== undefined && !isChainHeader(section.header)) {
      context.addIssue({
        code: 'custom',
        path: ['hops'],
        message: `counts hops of a chain; ${section.header} holds one address`,
      })
    }
  })
  .describe('Who the client is: one derivation used by every guard, the logs and the headers sent upstream.')

export const requestHeadersSchema = z
  .strictObject({
    underscores: z
      .enum(['drop', 'forward'])
      .default('drop')
      .describe(
        "Client request headers with `_` in their name: `drop` (as nginx's `underscores_in_headers off`, gunicorn 22+ and Apache) or `forward`. WSGI and CGI servers read `X_User` and `X-User` as one header (`HTTP_X_USER`). Either way, a header the gateway vouches for (see [What the gateway vouches for](architecture.md#what-the-gateway-does-with-a-request)) is removed in every spelling.",
      ),
  })
  .prefault({})
  .describe('What the app receives of the client’s request headers.')

const corsFields = {
  origins: z
    .array(origin)
    .min(1, { error: 'needs at least one origin' })
    .describe(
      'Exact origins (canonicalised: lowercase, default port dropped), subdomain patterns `https://*.example.com` (subdomains only, never a plain suffix), `"null"` (only if listed) or `"*"` (never with credentials).',
    ),
  credentials: z
    .boolean()
    .default(false)
    .describe('Sends `Access-Control-Allow-Credentials: true`, with the exact origin. Never with `"*"`.'),
  methods: z
    .array(httpMethod)
    .default(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'])
    .describe('Methods allowed in preflights.'),
  allowedHeaders: z
    .array(headerName)
    .default(['content-type', 'authorization', 'x-requested-with'])
    .describe('Request headers allowed in preflights.'),
  exposedHeaders: z.array(headerName).default([]).describe('Response headers scripts may read.'),
  maxAge: duration
    .default(600_000)
    .describe('Preflight cache time: how long browsers may cache a preflight.'),
  onDisallowed: z
    .enum(['reject', 'omit'])
    .default('reject')
    .describe(
      'A request from another origin: `reject` (403) or `omit` (passes, with no CORS headers). Preflights from other origins are always refused.',
    ),
}

export const corsSchema = z
  .strictObject(corsFields)
  .superRefine((section, context) => {
    const wildcard = section.origins.indexOf('*')
    if (wildcard >= 0 && section.credentials) {
      context.addIssue({
        code: 'custom',
        path: ['origins', wildcard],
        message: '"*" cannot be used with credentials: true',
      })
    }
  })
  .describe(
    'Without it, the gateway leaves CORS to the app. With it, the gateway owns CORS for the app: it answers preflights and replaces any CORS headers the app sets.',
  )

export const accessRuleSchema = z
  .strictObject({
    path: pathPattern.describe(
      'Pattern: `*` is one segment, a final `/**` is any depth including none (`/studio/**` covers `/studio`). `/admin` also covers `/admin/`.',
    ),
    methods: z.array(httpMethod).optional().describe('Only these methods; default all.'),
    allow: z
      .array(cidr)
      .optional()
      .describe(
        'Exactly one of `allow`, `deny` and `require`. `allow: [networks]`: only those clients pass.',
      ),
    deny: z
      .union([z.literal('all'), z.array(cidr)])
      .optional()
      .describe('`deny: all` or `deny: [networks]`: those are refused; everyone else passes.'),
    require: z
      .strictObject({
        claim: z.string().min(1).describe('A claim of the verified JWT (jwt section), e.g. role or org_id.'),
        oneOf: z
          .array(z.string())
          .min(1)
          .describe('Values that pass; a claim that is a list passes if any of its values does.'),
      })
      .optional()
      .describe(
        '`require: { claim, oneOf }`: only requests with a verified JWT (the `jwt` section) whose claim (or one of its values, for a list) is one of `oneOf` pass.',
      ),
    respond: z
      .union([z.literal(403), z.literal(404)])
      .default(403)
      .describe('Status for refused clients; `404` hides that the path exists.'),
    caseInsensitive: z
      .boolean()
      .default(true)
      .describe(
        'Many apps route `/Admin` like `/admin`, so rules match regardless of case unless this is `false`.',
      ),
  })
  .superRefine((rule, context) => {
    const given = [rule.allow, rule.deny, rule.require].filter((entry) => entry !== undefined).length
    if (given !== 1) {
      context.addIssue({ code: 'custom', path: [], message: 'needs exactly one of allow, deny or require' })
    }
  })

export const websocketSchema = z
  .strictObject({
    maxConnections: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Open WebSockets for the app; beyond it, upgrades get 429.'),
    maxConnectionsPerIp: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Open WebSockets per client IP; beyond it, 429.'),
    idleTimeout: duration
      .optional()
      .describe('Close both sides with 1001 after this long without a frame either way.'),
    maxMessageSize: size
      .default(1024 * 1024)
      .describe('Largest message either way; a larger one closes with 1009.'),
    paths: z
      .array(
        z.strictObject({
          path: pathPattern.describe('Path pattern of the WebSocket endpoints this rule covers.'),
          allowedOrigins: z
            .array(origin)
            .optional()
            .describe('Origins allowed to open WebSockets here; default the CORS origins.'),
          requireOrigin: z
            .boolean()
            .default(false)
            .describe('Refuse upgrades without an Origin header (browser-only endpoints).'),
        }),
      )
      .default([])
      .describe(
        '`{ path, allowedOrigins, requireOrigin }`, first match wins. `allowedOrigins` defaults to `cors.origins`. `requireOrigin: true` refuses upgrades without an Origin (browser-only endpoints). Paths without a rule check the Origin against `cors.origins` when there are any.',
      ),
  })
  .prefault({})
  .describe('WebSocket origin checks and connection caps, decided before the upgrade.')

export const limitsSchema = z
  .strictObject({
    maxBodySize: size.default(10 * 1024 ** 2).describe('Largest request body; then 413.'),
    bodySizes: z
      .array(
        z.strictObject({
          path: pathPattern.describe('Path pattern; the first entry that matches decides.'),
          max: size.describe('Largest request body on those paths; then 413.'),
        }),
      )
      .default([])
      .describe('`{ path, max }`, first match wins over `maxBodySize` (Appstrate caps manifests at 64 KiB).'),
    maxUrlLength: z
      .number()
      .int()
      .min(16)
      .default(8192)
      .describe('Longest request target (path and query); then 414.'),
    maxHeaderSize: size.default(16 * 1024).describe('Largest total of header names and values; then 431.'),
  })
  .prefault({})
  .describe('Request size limits; the upstream never sees a request over them.')

const referrerPolicies = [
  'no-referrer',
  'no-referrer-when-downgrade',
  'origin',
  'origin-when-cross-origin',
  'same-origin',
  'strict-origin',
  'strict-origin-when-cross-origin',
  'unsafe-url',
] as const

export const headersSchema = z
  .strictObject({
    contentSecurityPolicy: z
      .string()
      .min(1)
      .optional()
      .describe('A `Content-Security-Policy` to send. Off unless set, since apps usually own their CSP.'),
    frameOptions: z
      .enum(['DENY', 'SAMEORIGIN', 'off'])
      .default('SAMEORIGIN')
      .describe('`X-Frame-Options`: `DENY`, `SAMEORIGIN` or `off`.'),
    referrerPolicy: z
      .enum(referrerPolicies)
      .default('strict-origin-when-cross-origin')
      .describe(
        "`Referrer-Policy`. The browsers' own default: with `no-referrer`, browsers send `Origin: null` on same-origin form posts.",
      ),
    crossOriginOpenerPolicy: z
      .enum(['same-origin', 'same-origin-allow-popups', 'unsafe-none', 'off'])
      .default('off')
      .describe(
        '`same-origin`, `same-origin-allow-popups`, `unsafe-none`. Off unless a policy sets it: `same-origin` breaks OAuth and "Sign in with…" popups (the popup returns with `window.opener === null`; `same-origin-allow-popups` does not fix that), so set it where no popup flow needs the opener, with a route turning it `off` on the paths that do (the SM pack: `/docs/**` for Swagger UI\'s Authorize).',
      ),
    crossOriginResourcePolicy: z
      .enum(['same-origin', 'same-site', 'cross-origin', 'off'])
      .default('off')
      .describe(
        "`same-origin`, `same-site`, `cross-origin`. Off unless set: `same-origin` blocks the app's images and media on its own front end when that is another origin.",
      ),
    crossOriginEmbedderPolicy: z
      .enum(['require-corp', 'credentialless', 'unsafe-none', 'off'])
      .default('off')
      .describe(
        '`require-corp`, `credentialless`, `unsafe-none`. Off unless set: `require-corp` blocks every cross-origin resource without CORP or CORS.',
      ),
    set: z
      .record(headerName, z.string())
      .default({})
      .describe("Headers set on every response, over the app's."),
    remove: z
      .array(headerName)
      .default([])
      .describe("Headers removed from the app's responses. `Server` and `X-Powered-By` always are."),
  })
  .prefault({})
  .describe('Security headers (computed with helmet) added where the app did not set them.')

export const compressionSchema = z
  .strictObject({
    enabled: z
      .boolean()
      .default(true)
      .describe(
        'Brotli or gzip for clients that ask, on text, JSON, JavaScript, XML and SVG the app did not encode.',
      ),
    gzipLevel: z
      .number()
      .int()
      .min(1)
      .max(9)
      .default(5)
      .describe("gzip level, 1 (fast) to 9 (small): pgStack's `GZIP_LEVEL`."),
    brotliLevel: z
      .number()
      .int()
      .min(0)
      .max(11)
      .default(4)
      .describe('Brotli quality, 0 (fast) to 11 (small). Default 4.'),
    minSize: size.default(1024).describe('Answers with a smaller `Content-Length` are sent as they are.'),
  })
  .prefault({})
  .describe(
    'Response compression (brotli or gzip, as the client prefers) for text, JSON, JavaScript, XML and SVG, unless the app compressed already.',
  )

/** A file name of a static directory: no slash, and not a dotfile (dotfiles are never served). */
const staticFileName = z
  .string()
  .regex(/^(?!\.)[^/\\]+$/, { error: 'must be a file name such as index.html (no /, not starting with .)' })

export const staticSchema = z
  .strictObject({
    path: z
      .string()
      .regex(/^\/([^\s?#*]*\/)?$/, { error: 'must be a path prefix ending with /, such as /build/' })
      .describe(
        'URL prefix ending with `/` (`/build/`, or `/` for a whole single-page app), served from `dir`. `/build` (no slash) is redirected to `/build/`.',
      ),
    dir: z.string().min(1).describe('Directory with the files, relative to the policy file.'),
    cacheControl: z
      .string()
      .default('public, max-age=0, must-revalidate')
      .describe(
        '`Cache-Control` of every file but HTML; `public, max-age=31536000, immutable` for content-hashed assets.',
      ),
    htmlCacheControl: z
      .string()
      .default('no-cache')
      .describe(
        '`Cache-Control` of HTML files (`index.html` by any URL) and of every fallback answer, whatever `cacheControl` says: their names carry no hash, so browsers revalidate them by ETag and see a new deploy at once.',
      ),
    index: z
      .union([staticFileName, z.array(staticFileName)])
      .transform((names) => (typeof names === 'string' ? [names] : names))
      .default(['index.html'])
      .describe(
        'The file answered for a directory URL (`/build/` → `/build/index.html`), or a list tried in order; `[]` for none. A directory named without its slash gets `308` to the slash form.',
      ),
    fallback: z
      .string()
      .regex(/^(\/(?!\.)[^/\\]+)+$/, { error: 'must be a file of the directory, such as /index.html' })
      .optional()
      .describe(
        'A file of the directory (`/index.html`) answered to GET and HEAD for paths with no file whose last segment has no extension: the client-side routes of a single-page app (`try_files $uri $uri/ /index.html`). `/assets/app.0000.js` or `/users/jane.doe` stay a 404.',
      ),
    precompressed: z
      .boolean()
      .default(true)
      .describe(
        "For compressible types, serve the build's `x.js.br` or `x.js.gz` beside `x.js` to a client that accepts it (nginx's `gzip_static`, Caddy's `precompressed`), even with `compression.enabled: false`.",
      ),
  })
  .describe(
    'Files served by the gateway itself to GET and HEAD, with ETag/304 and ranges, index files, a history fallback and compression; paths never leave the directory.',
  )

/** Where a login applies: `paths` minus `except`. */
function pathScope(needs: string, leftOpen: string) {
  return {
    paths: z.array(pathPattern).default(['/**']).describe(`Paths that need ${needs}. Default all.`),
    except: z.array(pathPattern).default([]).describe(`Paths left open, such as ${leftOpen}.`),
  }
}

export const basicAuthSchema = z
  .strictObject({
    realm: z.string().min(1).default('Restricted').describe("Shown in the browser's login prompt."),
    users: z
      .record(
        z.string(),
        z.string().regex(passwordHashPattern, {
          error: 'must be a hash from `portcullis hash-password` (scrypt$...), never a plain password',
        }),
      )
      .superRefine((users, context) => {
        const names = Object.keys(users)
        if (names.length === 0)
          context.addIssue({ code: 'custom', path: [], message: 'needs at least one user' })
        for (const name of names.filter((entry) => !/^[^:\s]+$/.test(entry)))
          context.addIssue({
            code: 'custom',
            path: [name],
            message: 'user names must not contain ":" or spaces',
          })
      })
      .describe(
        'User name → password hash from `portcullis hash-password` (`scrypt$...`); plain passwords are refused. Without `basicAuth`, no login is asked.',
      ),
    ...pathScope('a login', 'the health check a load balancer calls'),
  })
  .describe('HTTP Basic authentication in front of the app (for apps without their own login).')

export const forwardAuthSchema = z
  .strictObject({
    url: z
      .string()
      .refine((text) => URL.canParse(text) && /^https?:$/.test(new URL(text).protocol), {
        error: 'must be an http(s) URL, e.g. http://127.0.0.1:4180/oauth2/auth',
      })
      .describe(
        "The auth service's endpoint (`http://127.0.0.1:4180/oauth2/auth` for oauth2-proxy, Authelia's `/api/authz/forward-auth`, ...); see [Guards](guards.md), 9. `paths`/`except` as for `basicAuth`.",
      ),
    ...pathScope('it', 'health checks and the sign-in callback'),
    requestHeaders: z
      .array(headerName)
      .default(['cookie', 'authorization', 'accept'])
      .describe(
        'Request headers sent to the auth service, besides X-Forwarded-Method/-Uri/-Host/-Proto/-For (Accept lets it send browsers to sign in and APIs a 401).',
      ),
    copyHeaders: z
      .array(headerName)
      .default(['x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups'])
      .describe(
        "Headers of the auth service's 2xx answer passed to the app; the client's own headers of these names are always removed.",
      ),
    userHeader: headerName
      .default('x-auth-request-user')
      .describe('The answer header naming the user, for the access log.'),
    timeout: duration.default(5000).describe('Longest wait for the auth service; then 504. Default 5s.'),
    cacheTtl: duration
      .default(0)
      .describe(
        'How long a 2xx answer is reused for the same question: every header sent to the auth service (method, URI, host, protocol, client address, requestHeaders) equal; its Cache-Control may lower it or forbid it. Default 0: asked every time.',
      ),
  })
  .describe(
    'Ask an auth service whether each request may pass (forward auth, as Traefik, Caddy and nginx do).',
  )

export const jwtSchema = z
  .strictObject({
    issuer: z.string().min(1).describe('The iss the tokens must carry.'),
    audiences: z.array(z.string().min(1)).min(1).describe('Accepted aud values.'),
    jwksUrl: z
      .string()
      .refine((text) => URL.canParse(text) && /^https?:$/.test(new URL(text).protocol), {
        error: 'must be an http(s) URL of a JWKS',
      })
      .optional()
      .describe(
        "The issuer's JWKS: keys fetched, cached and fetched again for a key id not seen yet (rotation).",
      ),
    publicKey: z.string().optional().describe('A PEM public key (SPKI), instead of jwksUrl.'),
    algorithms: z
      .array(
        z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']),
      )
      .min(1)
      .default(['RS256', 'ES256'])
      .describe('Accepted signature algorithms; none and shared-secret (HS*) ones are never accepted.'),
    clockSkew: duration.default(30_000).describe('Tolerance for exp and nbf. Default 30s.'),
    paths: z
      .array(pathPattern)
      .default([])
      .describe(
        'Paths where a valid token is required (else 401). Elsewhere a token is verified when present.',
      ),
    except: z.array(pathPattern).default([]).describe('Paths left out of paths.'),
  })
  .superRefine((section, context) => {
    if ((section.jwksUrl === undefined) === (section.publicKey === undefined))
      context.addIssue({ code: 'custom', path: [], message: 'needs exactly one of jwksUrl or publicKey' })
  })
  .describe(
    'Verify bearer tokens (JWT): `issuer`, `audiences`, `jwksUrl` or `publicKey`, `algorithms`, `clockSkew`, `paths`/`except` where a token is required; see [Guards](guards.md). Verified claims can key rate limits and decide access rules.',
  )

export const cookiesSchema = z
  .strictObject({
    secure: z.boolean().default(true).describe('Add `Secure` to cookies set over HTTPS.'),
    httpOnly: z
      .array(
        z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, {
          error: 'must be a cookie name, * standing for any characters (session, "*_session")',
        }),
        {
          error: (issue) =>
            typeof issue.input === 'boolean'
              ? 'lists the cookies to mark HttpOnly (names, or patterns such as "*_session"): HttpOnly is never added to every cookie, since scripts must read CSRF-token cookies'
              : undefined,
        },
      )
      .default([])
      .describe(
        "Cookies to mark `HttpOnly` where the app did not: names, `*` for any characters (`[session, \"*_session\"]`). Never all cookies: an app's script-read CSRF cookie (axios's and Angular's `XSRF-TOKEN`, copied into `X-XSRF-TOKEN`) must stay readable; `httpOnly: true` is refused with that reason.",
      ),
    sameSite: z
      .enum(['Lax', 'Strict', 'None', 'off'])
      .default('Lax')
      .describe(
        '`SameSite` where the app set none (`Lax`, `Strict`, `None` (only added with `Secure`), `off`). The SM seed relies on `Lax` against CSRF.',
      ),
    exclude: z
      .array(z.string().min(1))
      .default([])
      .describe(
        'Cookie names left untouched by `Secure` and `SameSite` too, such as a cookie a third party must get exactly as the app sent it.',
      ),
  })
  .prefault({})
  .describe('Hardening of the Set-Cookie headers of the app.')

export const rateLimitSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, {
        error: 'must be lowercase letters, digits, - or _ (at most 63)',
      })
      .describe('Names the limit in headers, logs and errors; unique per app.'),
    match: z
      .strictObject({
        path: pathPattern.default('/**').describe('Path pattern; default every path.'),
        methods: z.array(httpMethod).optional().describe('Only these methods; default all.'),
      })
      .prefault({})
      .describe('`{ path, methods }`: which requests count.'),
    key: z
      .string()
      .regex(/^(ip|ip\+path|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|jwt:[A-Za-z0-9_.:-]+)$/, {
        error: 'must be ip, ip+path, header:<name> or jwt:<claim>',
      })
      .transform((key) => key.toLowerCase())
      .default('ip')
      .describe(
        'Whose budget: `ip` (IPv6 grouped by `ipv6Prefix`), `ip+path`, `header:<name>` (falls back to the IP when the header is absent), or `jwt:<claim>` of a verified token, such as `jwt:org_id` for a per-organisation limit (falls back to the IP without one). Header values are cut to 256 bytes and hashed; they never reach Redis as sent.',
      ),
    limit: z
      .number()
      .int()
      .min(1)
      .describe('Requests allowed per window, sustained (`limit: 200, window: 1m`).'),
    window: duration.describe('The window the limit is counted over, like 1m.'),
    burst: z.number().int().min(1).optional().describe('Requests allowed at once from a full budget.'),
    onStoreError: z
      .enum(['local', 'allow', 'deny'])
      .default('local')
      .describe(
        'When Redis cannot answer: `local` (each replica limits in memory, limit ÷ `--replicas`), `allow` (fail open) or `deny` (fail closed: 503 `PCL_RATE_LIMIT_UNAVAILABLE`, for `/login`).',
      ),
    ipv6Prefix: z
      .number()
      .int()
      .min(32)
      .max(128)
      .default(64)
      .describe(
        'IPv6 clients sharing this prefix share a budget: one client can rotate through its whole allocation.',
      ),
    legacyHeaders: z
      .boolean()
      .default(false)
      .describe('Also send `X-RateLimit-Limit`, `-Remaining`, `-Reset` (for the strictest rule).'),
  })
  .describe('A rate limit, counted in Redis across replicas (GCRA).')

const routePrefix = z
  .string()
  .regex(/^(?:\/[A-Za-z0-9._~!$&'()+,=:@-]+)+$/, {
    error: 'must be a path prefix such as /media (no trailing slash, wildcards or percent-escapes)',
  })
  // The upstream receives exactly the canonical path: a `..` in a prefix would climb out of it.
  .refine((prefix) => prefix.split('/').every((segment) => segment !== '.' && segment !== '..'), {
    error: 'must not have . or .. segments',
  })

/** The settings a route may refine; each is merged over the app's (see `routes`). */
export const routeSettings = [
  'upstream',
  'cors',
  'websocket',
  'limits',
  'access',
  'rateLimits',
  'headers',
  'cookies',
  'basicAuth',
  'forwardAuth',
  'compression',
  'static',
] as const

export const routeSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, {
        error: 'must be lowercase letters, digits, - or _ (at most 63)',
      })
      .optional()
      .describe('Names the route in logs, metrics and explain; default its index.'),
    path: pathPattern.describe(
      'Which paths the route takes, matched on the canonical path (regardless of case): * is one segment, a final /** any depth.',
    ),
    methods: z.array(httpMethod).optional().describe('Only these methods; default all.'),
    stripPrefix: routePrefix
      .optional()
      .describe('Removed from the start of the path before it goes upstream (/media/a.png → /a.png).'),
    addPrefix: routePrefix.optional().describe('Put in front of the path before it goes upstream.'),
    upstream: upstreamSchema
      .partial()
      .optional()
      .describe('A pool of its own (targets, balance, health) or only other timeouts for the app’s targets.'),
    cors: z
      .strictObject(corsFields)
      .partial()
      .optional()
      .describe(
        "Merged over the app's CORS; a route may set only onDisallowed, say, and keep the app's origins.",
      ),
    websocket: websocketSchema.optional(),
    limits: limitsSchema.optional(),
    access: z
      .array(accessRuleSchema)
      .optional()
      .describe("More access rules for this route's requests; the app's rules apply too."),
    rateLimits: z
      .array(rateLimitSchema)
      .optional()
      .describe("More rate limits for this route's requests; the app's rules apply too."),
    headers: headersSchema.optional(),
    cookies: cookiesSchema.optional(),
    basicAuth: basicAuthSchema.partial().optional(),
    forwardAuth: forwardAuthSchema.partial().optional(),
    compression: compressionSchema.optional(),
    static: z.array(staticSchema).optional().describe('Replaces the app’s static directories here.'),
  })
  .describe(
    "Settings for the requests a route matches. First match wins, in file order; a request that matches no route uses the app's settings. Mappings merge field by field over the app's (the route's value wins), lists replace the app's, except access and rateLimits, where the app's rules and the route's both apply.",
  )

export const policySchema = z
  .strictObject({
    app: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, {
        error: 'must be lowercase letters, digits, - or _ (at most 63)',
      })
      .describe(
        'Unique id of the app: lowercase letters, digits, `-`, `_` (at most 63). Used in logs, metrics and errors.',
      ),
    hosts: z
      .array(hostName)
      .min(1, { error: 'needs at least one host' })
      .describe(
        'Host names routed to this app. Exact (`db.example.com`) or a one-label wildcard (`*.example.com` matches `a.example.com`, not `a.b.example.com` or `example.com`). Case is folded. Exact names win over wildcards. The Host header routes the request; on TLS, the SNI chooses the certificate and must belong to the same app. A Host that is more than a name and an optional port (`app.test:1@evil.test`, port 0 or past 65535; `:0443` is read as 443), a second Host header, or a Host beside an HTTP/2 `:authority` that names another server is refused with 400 `PCL_BAD_REQUEST`: a URL parser in the app would read another host than the router did. No host may be claimed by two files.',
      ),
    mode: z
      .enum(['enforce', 'report-only'])
      .default('enforce')
      .describe(
        "`enforce`: guards refuse. `report-only`: a request a guard would refuse passes, and its log line carries `wouldBlock: {code, rule}`. Roll a new policy out this way and read the logs before enforcing. Malformed requests (bad paths) are refused either way. A request stops at its first refusal, so later guards (rate limits) don't see it.",
      ),
    upstream: upstreamSchema,
    healthPath: z
      .string()
      .regex(/^\/[^\s?#*]*$/, { error: 'must be a path such as /.well-known/portcullis-health' })
      .optional()
      .describe(
        "A path on the app's own hosts the gateway answers itself, for the load balancer: 200 while a target is healthy, else 503. No guard or rate limit applies to it.",
      ),
    tls: tlsSchema,
    hsts: hstsSchema,
    clientIp: clientIpSchema,
    requestHeaders: requestHeadersSchema,
    cors: corsSchema.optional(),
    access: z
      .array(accessRuleSchema)
      .default([])
      .describe(
        'IP-restricted and blocked paths, tried in order; the first rule matching path and method decides.',
      ),
    websocket: websocketSchema,
    limits: limitsSchema,
    headers: headersSchema,
    cookies: cookiesSchema,
    basicAuth: basicAuthSchema.optional(),
    forwardAuth: forwardAuthSchema.optional(),
    jwt: jwtSchema.optional(),
    compression: compressionSchema,
    static: z
      .array(staticSchema)
      .default([])
      .describe(
        'Directories the gateway serves itself, after the guards; the first entry whose `path` prefixes the request wins, and the upstream never sees those paths. See [Static files](upstreams.md#upstreams-compression-and-static-files).',
      ),
    rateLimits: z
      .array(rateLimitSchema)
      .default([])
      .superRefine((rules, context) => {
        const seen = new Set<string>()
        for (const [index, rule] of rules.entries()) {
          if (seen.has(rule.name))
            context.addIssue({
              code: 'custom',
              path: [index, 'name'],
              message: `"${rule.name}" is used twice`,
            })
          seen.add(rule.name)
        }
      })
      .describe('Rate limits. Every rule matching a request is checked, and the strictest answer wins.'),
    routes: z
      .array(routeSchema)
      .default([])
      .describe(
        'Parts of the app with settings of their own: per-path upstreams, timeouts, CORS, WebSocket caps, limits and rules.',
      ),
  })
  .superRefine((policy, context) => {
    const ruleNames = new Set(policy.rateLimits.map((rule) => rule.name))
    const routeNames = new Set<string>()
    for (const [index, route] of policy.routes.entries()) {
      if (route.name !== undefined) {
        if (routeNames.has(route.name))
          context.addIssue({
            code: 'custom',
            path: ['routes', index, 'name'],
            message: `"${route.name}" is used twice`,
          })
        routeNames.add(route.name)
      }
      // Rate-limit keys are per app and rule name: one name, one budget.
      for (const [ruleIndex, rule] of (route.rateLimits ?? []).entries()) {
        if (ruleNames.has(rule.name))
          context.addIssue({
            code: 'custom',
            path: ['routes', index, 'rateLimits', ruleIndex, 'name'],
            message: `"${rule.name}" is already the name of another rate limit of this app`,
          })
        ruleNames.add(rule.name)
      }
    }
  })
  .superRefine((policy, context) => {
    // A route that rewrites its paths onto the app's targets must not land on paths another route
    // takes: that route's rules (access, logins, limits) would judge only the spelling the client sent.
    const targetsOf = (route: { upstream?: { targets?: readonly string[] | undefined } | undefined }) =>
      new Set((route.upstream?.targets ?? policy.upstream.targets).map(serverOf))
    for (const [index, route] of policy.routes.entries()) {
      if (route.stripPrefix === undefined && route.addPrefix === undefined) continue
      // A prefix already refused says nothing about where its rewrites land.
      if (
        ![route.stripPrefix, route.addPrefix].every(
          (prefix) => routePrefix.optional().safeParse(prefix).success,
        )
      )
        continue
      const lands = rewrittenPattern(route.path, route)
      const targets = targetsOf(route)
      for (const [otherIndex, other] of policy.routes.entries()) {
        if (otherIndex === index || ![...targetsOf(other)].some((target) => targets.has(target))) continue
        if (!patternsOverlap(lands, other.path)) continue
        context.addIssue({
          code: 'custom',
          path: ['routes', index, route.stripPrefix !== undefined ? 'stripPrefix' : 'addPrefix'],
          message: `rewrites ${route.path} to ${lands}, onto paths routes[${otherIndex}] (${other.path}) takes on the same targets, whose settings would not judge the rewritten requests; narrow one of the routes, or give this one an upstream of its own`,
        })
      }
    }
  })
  .superRefine((policy, context) => {
    if (policy.tls.mode !== 'acme') return
    for (const [index, host] of policy.hosts.entries()) {
      if (host.startsWith('*.'))
        context.addIssue({
          code: 'custom',
          path: ['hosts', index],
          message:
            'wildcard certificates need the DNS-01 challenge, which tls.mode acme does not support yet; list the names, or use tls.mode manual',
        })
    }
  })
  .describe('One app fronted by Portcullis.')

export type Route = z.output<typeof routeSchema>

/** A policy file as the user writes it (before defaults). */
export type PolicyInput = z.input<typeof policySchema>
/** A validated policy with defaults filled in and durations in milliseconds. */
export type Policy = z.output<typeof policySchema>
