import { CidrSet, parseCidr } from '../net/ip.js'
import { compilePathPattern, patternsOverlap, rewrittenPattern } from '../net/path-pattern.js'
import { isLoopbackHost } from '../net/servers.js'
import { cipherWeakness, groupWeakness } from '../net/tls-profiles.js'

import type { FieldPath, LoadedPolicy, PolicyProblem } from './load.js'
import type { Policy } from './schema.js'

/** What `check --production` and `serve --env production` know besides the policy files. */
export interface ProductionContext {
  /** Whether a Redis is configured (`--redis`). */
  redis: boolean
  /** Gateway replicas serving the same apps (`--replicas`). */
  replicas: number
}

/** A note suggests a hardening the policy has not decided on; it never fails a check. */
export type Severity = 'error' | 'warning' | 'note'

export interface Finding extends PolicyProblem {
  rule: string
  severity: Severity
  fix: string
}

interface Rule {
  id: string
  severity: Severity
  /** Checked on every load (serve, check), not only in production: a mistake whatever the environment. */
  always?: true
  fix: string
  /** Each hit: the field it is about and the one-line reason. */
  check(policy: Policy, context: ProductionContext): { field: FieldPath; reason: string }[]
}

const halfYearSeconds = 15_552_000

/** Paths that are admin consoles, metrics or debug endpoints in common apps (and in the seeds). */
const adminLookingPaths = [
  '/admin',
  '/studio',
  '/metrics',
  '/debug',
  '/_debug',
  '/actuator',
  '/internal',
  '/phpmyadmin',
]

/** Private, loopback, link-local and CGNAT space: where a trusted proxy is expected to live. */
const privateNetworks = [
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '127.0.0.0/8',
  '100.64.0.0/10',
  '169.254.0.0/16',
  'fc00::/7',
  'fe80::/10',
  '::1/128',
]

export const productionRules: readonly Rule[] = [
  {
    id: 'PCL-ROUTE-SHADOWED',
    severity: 'warning',
    always: true,
    fix: 'Move the route above the one that takes its requests, or narrow that one’s path or methods.',
    check: (policy) =>
      policy.routes.flatMap((route, index) => {
        const earlier = policy.routes.slice(0, index).findIndex((other) => takesAllOf(other, route))
        if (earlier < 0) return []
        const by = policy.routes[earlier]
        return [
          {
            field: ['routes', index, 'path'],
            reason: `no request can reach this route: routes[${earlier}] (${by?.path}) takes every request it matches`,
          },
        ]
      }),
  },
  {
    id: 'PCL-ROUTE-REWRITE-RESTRICTED',
    severity: 'warning',
    always: true,
    fix: 'Nothing to do if that is meant; else narrow the route or the rule. Refusals name the rule and the route.',
    check: (policy) =>
      policy.routes.flatMap((route, index) => {
        if (route.stripPrefix === undefined && route.addPrefix === undefined) return []
        const upstreamPath = rewrittenPattern(route.path, route)
        const field = ['routes', index, route.stripPrefix !== undefined ? 'stripPrefix' : 'addPrefix']
        const rules = [
          ...policy.access.map((rule, at) => ({ rule, name: `access[${at}]` })),
          ...(route.access ?? []).map((rule, at) => ({ rule, name: `routes[${index}].access[${at}]` })),
        ]
        // Another route's rules judge only its own requests. Where both name one server the load
        // refuses the rewrite; targets spelled apart (a DNS name and its address) may still be one.
        const elsewhere = policy.routes.flatMap((other, otherIndex) =>
          otherIndex === index || !patternsOverlap(upstreamPath, other.path)
            ? []
            : (other.access ?? [])
                .filter((rule) => patternsOverlap(upstreamPath, rule.path))
                .map((rule, at) => ({
                  field,
                  reason: `the route rewrites ${route.path} to ${upstreamPath}, where routes[${otherIndex}].access[${at}] (${rule.path}) restricts requests to routes[${otherIndex}] only: if their targets are one server, its rule is walked past`,
                })),
        )
        // A route whose own paths some rule already judges was thought about; one whose paths no rule
        // names, but whose rewrites land on restricted ones, is the surprise worth a warning.
        if (rules.some(({ rule }) => patternsOverlap(route.path, rule.path))) return elsewhere
        return [
          ...rules
            .filter(({ rule }) => patternsOverlap(upstreamPath, rule.path))
            .map(({ rule, name }) => ({
              field,
              reason: `the route rewrites ${route.path}, which no access rule names, to ${upstreamPath}, which ${name} (${rule.path}) restricts: its requests are judged on both paths`,
            })),
          ...elsewhere,
        ]
      }),
  },
  {
    id: 'PCL-CORS-WILDCARD',
    severity: 'error',
    fix: 'List the exact origins of your front ends, e.g. https://app.example.com.',
    check: (policy) =>
      (policy.cors?.origins ?? []).flatMap((origin, index) =>
        origin === '*' || origin === 'null'
          ? [
              {
                field: ['cors', 'origins', index],
                reason: `CORS origin "${origin}" lets any site call this app`,
              },
            ]
          : [],
      ),
  },
  {
    id: 'PCL-CORS-CREDENTIALS-PATTERN',
    severity: 'warning',
    fix: 'List exact origins when credentials are on, or make sure every subdomain is yours and trusted.',
    check: (policy) =>
      policy.cors?.credentials
        ? policy.cors.origins.flatMap((origin, index) =>
            origin.includes('://*.')
              ? [
                  {
                    field: ['cors', 'origins', index],
                    reason: `credentials are sent to every subdomain matching ${origin}`,
                  },
                ]
              : [],
          )
        : [],
  },
  {
    id: 'PCL-TLS-OFF-UNTRUSTED',
    severity: 'error',
    fix: 'Set clientIp.trustedProxies to the TLS terminator in front, or use tls.mode internal/manual.',
    check: (policy) =>
      policy.tls.mode === 'off' && policy.clientIp.trustedProxies.length === 0
        ? [
            {
              field: ['tls', 'mode'],
              reason: 'TLS is off but no trusted proxy is named: nothing in front is known to encrypt',
            },
          ]
        : [],
  },
  {
    id: 'PCL-TLS-INTERNAL',
    severity: 'error',
    fix: "Use tls.mode acme (Let's Encrypt) or manual with a certificate browsers trust (or put a TLS terminator in front and use off).",
    check: (policy) =>
      policy.tls.mode === 'internal'
        ? [{ field: ['tls', 'mode'], reason: 'the internal CA is for development: browsers do not trust it' }]
        : [],
  },
  {
    id: 'PCL-ACME-STAGING',
    severity: 'error',
    fix: "Once the staging certificate works, set tls.acme.directory to letsencrypt (or your CA's production directory).",
    check: (policy) =>
      policy.tls.acme && /staging|test/i.test(policy.tls.acme.directory)
        ? [
            {
              field: ['tls', 'acme', 'directory'],
              reason: `${policy.tls.acme.directory} is a staging CA: browsers do not trust its certificates`,
            },
          ]
        : [],
  },
  {
    id: 'PCL-TLS-WEAK-CIPHER',
    severity: 'error',
    fix: "Remove tls.ciphers to get the profile's suites, or list only ECDHE suites with GCM or CHACHA20-POLY1305 (and TLS_* suites).",
    check: (policy) =>
      (policy.tls.ciphers ?? []).flatMap((suite, index) => {
        const weakness = cipherWeakness(suite)
        return weakness ? [{ field: ['tls', 'ciphers', index], reason: `${suite} is weak: ${weakness}` }] : []
      }),
  },
  {
    id: 'PCL-TLS-WEAK-GROUP',
    severity: 'error',
    fix: 'Remove tls.groups to get X25519, P-256 and P-384, or list only elliptic-curve groups.',
    check: (policy) =>
      (policy.tls.groups ?? []).flatMap((group, index) => {
        const weakness = groupWeakness(group)
        return weakness ? [{ field: ['tls', 'groups', index], reason: `${group} is ${weakness}` }] : []
      }),
  },
  {
    id: 'PCL-TLS-GROUPS-RETRY',
    severity: 'warning',
    always: true,
    fix: 'Keep X25519 in tls.groups, next to the groups you need.',
    check: (policy) =>
      policy.tls.groups && !policy.tls.groups.includes('X25519')
        ? [
            {
              field: ['tls', 'groups'],
              reason:
                'browsers and most clients send an X25519 key share: without X25519 they must retry the handshake, and Node then negotiates neither HTTP/2 nor session resumption on those connections',
            },
          ]
        : [],
  },
  {
    id: 'PCL-HSTS-SHORT',
    severity: 'error',
    fix: `Set hsts.maxAge to at least ${halfYearSeconds} (180 days); 31536000 is usual.`,
    check: (policy) =>
      policy.tls.mode !== 'off' && policy.hsts.maxAge < halfYearSeconds
        ? [{ field: ['hsts', 'maxAge'], reason: `HSTS max-age ${policy.hsts.maxAge} s is under 180 days` }]
        : [],
  },
  {
    id: 'PCL-PROXY-TRUST-ALL',
    severity: 'error',
    fix: 'Name only your load balancers or ingress networks, not the whole Internet.',
    check: (policy) =>
      policy.clientIp.trustedProxies.flatMap((text, index) =>
        parseCidr(text)?.prefix === 0
          ? [
              {
                field: ['clientIp', 'trustedProxies', index],
                reason: `${text} trusts everyone: any client can choose its own IP`,
              },
            ]
          : [],
      ),
  },
  {
    id: 'PCL-PROXY-TRUST-PUBLIC',
    severity: 'warning',
    fix: 'Check that this public network really is your load balancer; prefer its exact addresses.',
    check: (policy) =>
      policy.clientIp.trustedProxies.flatMap((text, index) => {
        const cidr = parseCidr(text)
        if (!cidr || cidr.prefix === 0 || isPrivate(cidr.address)) return []
        return [{ field: ['clientIp', 'trustedProxies', index], reason: `${text} is public address space` }]
      }),
  },
  {
    id: 'PCL-RATELIMIT-NO-REDIS',
    severity: 'error',
    fix: 'Run with --redis (PORTCULLIS_REDIS): without it, each replica counts on its own.',
    check: (policy, context) =>
      policy.rateLimits.length > 0 && !context.redis && context.replicas > 1
        ? [
            {
              field: ['rateLimits'],
              reason: `rate limits without Redis over ${context.replicas} replicas let each replica admit the whole limit`,
            },
          ]
        : [],
  },
  {
    id: 'PCL-RATELIMIT-LOCAL',
    severity: 'warning',
    fix: 'Add --redis (PORTCULLIS_REDIS) before running a second replica.',
    check: (policy, context) =>
      policy.rateLimits.length > 0 && !context.redis && context.replicas === 1
        ? [
            {
              field: ['rateLimits'],
              reason: 'rate limits without Redis are counted in this one process and start over on restart',
            },
          ]
        : [],
  },
  {
    id: 'PCL-ADMIN-UNRESTRICTED',
    severity: 'warning',
    fix: 'Add an access rule, e.g. { path: /admin/**, allow: [10.0.0.0/8] }, or { path: /admin/**, deny: all }, or put the path behind basicAuth.',
    check: (policy) => {
      const patterns = policy.access.map((rule) => compilePathPattern(rule.path, rule.caseInsensitive))
      // A path behind the edge login is not open to anyone either.
      const login = policy.basicAuth
        ? {
            paths: policy.basicAuth.paths.map((path) => compilePathPattern(path, true)),
            except: policy.basicAuth.except.map((path) => compilePathPattern(path, true)),
          }
        : undefined
      const behindLogin = (path: string) =>
        (login?.paths.some((pattern) => pattern.test(path)) ?? false) &&
        !login?.except.some((pattern) => pattern.test(path))
      const open = adminLookingPaths.filter(
        (path) => !patterns.some((pattern) => pattern.test(path)) && !behindLogin(path),
      )
      return open.length > 0
        ? [{ field: ['access'], reason: `no access rule covers ${open.join(', ')}: anyone could reach them` }]
        : []
    },
  },
  {
    id: 'PCL-WEBSOCKET-NO-ORIGIN',
    severity: 'error',
    fix: 'Set cors.origins or websocket.paths[].allowedOrigins to your front ends’ origins.',
    check: (policy) => {
      const corsOrigins = policy.cors?.origins ?? []
      const hits: { field: FieldPath; reason: string }[] = policy.websocket.paths.flatMap((rule, index) => {
        const origins = rule.allowedOrigins ?? corsOrigins
        return origins.length === 0 || origins.includes('*')
          ? [
              {
                field: ['websocket', 'paths', index],
                reason: `WebSocket upgrades to ${rule.path} are not origin-checked`,
              },
            ]
          : []
      })
      if (corsOrigins.length === 0 && policy.websocket.paths.length === 0) {
        hits.push({
          field: ['websocket'],
          reason: 'WebSocket upgrades are not origin-checked (no cors.origins, no websocket.paths)',
        })
      }
      return hits
    },
  },
  {
    id: 'PCL-FORWARDAUTH-PLAINTEXT',
    severity: 'warning',
    fix: 'Use https:// for the auth service, or run it beside the gateway on a loopback address.',
    check: (policy) => {
      const url = policy.forwardAuth?.url
      if (!url) return []
      const { protocol, hostname } = new URL(url)
      return protocol === 'http:' && !isLoopbackHost(hostname)
        ? [{ field: ['forwardAuth', 'url'], reason: 'cookies and tokens go to the auth service unencrypted' }]
        : []
    },
  },
  {
    id: 'PCL-ISOLATION-UNDECIDED',
    severity: 'note',
    fix: 'Set it where the app allows (same-origin, or cross-origin for an API other sites use), with a route turning it off on the paths that need otherwise (an OAuth popup’s return page); consider crossOriginEmbedderPolicy and contentSecurityPolicy too.',
    check: (policy) => {
      const decided = (setting: 'crossOriginOpenerPolicy' | 'crossOriginResourcePolicy') =>
        policy.headers[setting] !== 'off'
      return [
        decided('crossOriginOpenerPolicy')
          ? undefined
          : {
              field: ['headers', 'crossOriginOpenerPolicy'],
              reason: 'no Cross-Origin-Opener-Policy: other sites can keep a handle on the app’s windows',
            },
        decided('crossOriginResourcePolicy')
          ? undefined
          : {
              field: ['headers', 'crossOriginResourcePolicy'],
              reason: 'no Cross-Origin-Resource-Policy: any site can embed the app’s resources',
            },
      ].filter((finding) => finding !== undefined)
    },
  },
  {
    id: 'PCL-REPORT-ONLY',
    severity: 'error',
    fix: 'Set mode: enforce once the report-only logs show no false positives.',
    check: (policy) =>
      policy.mode === 'report-only' ? [{ field: ['mode'], reason: 'report-only mode blocks nothing' }] : [],
  },
]

/** Runs every production rule on every policy; findings in file order. */
export function checkProduction(policies: readonly LoadedPolicy[], context: ProductionContext): Finding[] {
  return findings(productionRules, policies, context)
}

/** The rules that hold in every environment (a route no request can reach): for `check` and `serve`. */
export function checkAlways(policies: readonly LoadedPolicy[]): Finding[] {
  return findings(
    productionRules.filter((rule) => rule.always),
    policies,
    { redis: true, replicas: 1 },
  )
}

function findings(
  rules: readonly Rule[],
  policies: readonly LoadedPolicy[],
  context: ProductionContext,
): Finding[] {
  return policies.flatMap((loaded) =>
    rules.flatMap((rule) => {
      const finding = (field: FieldPath, reason: string): Finding => ({
        ...loaded.locate(field, reason),
        rule: rule.id,
        severity: rule.severity,
        fix: rule.fix,
      })
      const own = rule.check(loaded.policy, context).map(({ field, reason }) => finding(field, reason))
      // A route's merged settings are held to the same rules, for what the route itself sets (the
      // rest is the app's, checked above). Its access and rate-limit rules add to the app's, so rules
      // about those lists are judged on the app's alone. A route that sets aside what a note suggests
      // (an OAuth return page without COOP) does so on purpose.
      if (rule.severity === 'note') return own
      const routes = loaded.routes.flatMap(({ policy, sets }, index) =>
        rule
          .check(policy, context)
          .filter(({ field }) => {
            const setting = field[0]
            return setting !== 'access' && setting !== 'rateLimits' && sets.some((name) => name === setting)
          })
          .map(({ field, reason }) => finding(['routes', index, ...field], `routes[${index}]: ${reason}`)),
      )
      return [...own, ...routes]
    }),
  )
}

export function formatFinding(finding: Finding): string {
  return `${finding.file}:${finding.line}:${finding.column} ${finding.rule} ${finding.severity}: ${finding.message} (${finding.field}). Fix: ${finding.fix}`
}

const privateSpace = new CidrSet(privateNetworks.flatMap((text) => parseCidr(text) ?? []))

function isPrivate(address: string): boolean {
  return privateSpace.has(address)
}

type RouteSection = Policy['routes'][number]

/**
 * Whether route `first` takes every request `later` would match: its methods include the later one's,
 * and its pattern matches every path of the later one's (tried on a path standing for each: a
 * segment no literal pattern names for `*`, and for a final `/**` the prefix itself and two deeper
 * segments).
 */
function takesAllOf(first: RouteSection, later: RouteSection): boolean {
  const methods = first.methods
  if (methods && !(later.methods ?? []).every((method) => methods.includes(method))) return false
  if (methods && !later.methods) return false
  const pattern = compilePathPattern(first.path, true)
  const anySegment = '\u0000any'
  const standIn = (path: string) =>
    path
      .split('/')
      .map((segment) => (segment === '*' ? anySegment : segment))
      .join('/')
  const paths = later.path.endsWith('/**')
    ? [later.path.slice(0, -3) || '/', `${later.path.slice(0, -3)}/${anySegment}/${anySegment}`]
    : [later.path]
  return paths.every((path) => pattern.test(standIn(path)))
}
