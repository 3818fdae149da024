import { randomBytes } from 'node:crypto'
import { type FSWatcher, watch } from 'node:fs'
import { readFile } from 'node:fs/promises'
import type { AddressInfo, Server as NetServer } from 'node:net'
import path from 'node:path'
import { createSecureContext, type Server as TlsServer } from 'node:tls'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { SharedAcmeState, SharedWebSocketCaps } from '../cluster/clients.js'
import type { MetricsSnapshot, PrimaryLink, WorkerWelcome } from '../cluster/protocol.js'
import { CidrSet, parseCidr } from '../net/ip.js'
import { type ActivitySnapshot, RecentActivity } from '../observe/dashboard.js'
import {
  createAdmin,
  createProbes,
  type HealthCheck,
  type HealthReport,
  overallStatus,
} from '../observe/health.js'
import { GatewayMetrics, unansweredWorkers } from '../observe/metrics.js'
import type { RateLimitStores } from '../pipeline/guard.js'
import type { App, PemPair } from '../policy/compile.js'
import { formatProblem, type PolicyProblem } from '../policy/load.js'
import { compilePolicyTexts, loadPolicySource, type PolicyTexts } from '../policy/source.js'
import type { Settings } from '../settings.js'
import { connectRedis, type RedisClient, whenReady } from '../stores/redis.js'
import { rateLimitCommand } from '../stores/redis-rate-limit.js'
import { acmeTlsAlpnResponder } from '../tls/acme/alpn-responder.js'
import { AcmeManager } from '../tls/acme/manager.js'
import { FileAcmeStorage, RedisAcmeStorage } from '../tls/acme/storage.js'
import { CertificateStore } from '../tls/certificates.js'
import { writeFileAtomic } from '../tls/files.js'
import { InternalCa, selfSigned } from '../tls/internal-ca.js'
import { randomTicketKeys, redisTicketKeys, TicketKeyRotation } from '../tls/ticket-keys.js'
import { TargetResolver } from '../upstreams/discovery.js'
import { UpstreamPools } from '../upstreams/pools.js'
import { admissionProblems, internalLeaves } from './admission.js'
import { ConnectionTracker } from './connections.js'
import { createEdge, type Edge, type EdgeContext } from './edge.js'
import { type Door, frontDoor, tlsDoors } from './front-door.js'
import { HostRouter } from './routing.js'
import { primaryBreaker, rateLimitStore } from './stores.js'
import { WebSocketRelay } from './websocket.js'

/** A generation ready to be put in place: nothing left in it can fail. */
interface Prepared {
  ok: true
  apps: readonly App[]
  /** Internal-CA certificates, issued and written, by app id. */
  leaves: ReadonlyMap<string, PemPair>
  /** Of the policy texts compiled. */
  digest: string
}

interface Refused {
  ok: false
  problems: PolicyProblem[]
}

function refusedBy(file: string, message: string, field = ''): Refused {
  return { ok: false, problems: [{ file, line: 1, column: 1, field, message }] }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

interface Generation {
  apps: readonly App[]
  router: HostRouter
  loadedAt: Date
  /** Where the HTTPS listener hands a connection: without and with TLS-ALPN-01 validations running. */
  doors: { plain: Door; acme: Door }
}

export interface ListeningAddresses {
  http: number
  https: number
  admin: number
  probe?: number
}

/**
 * The running gateway: the edge listeners, the admin listener and the current policy generation.
 * A reload builds a complete new generation and swaps it in one assignment, so a request sees either
 * the old policies or the new ones, never a mix; a bad reload leaves the running generation alone.
 */
export class Gateway {
  private generation: Generation
  private lastReloadError: { at: Date; problems: string[] } | undefined
  private reloading: Promise<boolean> | undefined
  /** The one reload that runs after the current one, however many were asked for meanwhile. */
  private queuedReload:
    | {
        reason: string
        texts: PolicyTexts | undefined
        applied: Promise<boolean>
        resolve(applied: Promise<boolean>): void
      }
    | undefined
  private watcher: FSWatcher | undefined
  private renewTimer: NodeJS.Timeout | undefined
  private fronts: { http: NetServer | undefined; https: NetServer } | undefined
  private shuttingDown: Promise<void> | undefined
  private readonly startedAt = Date.now()
  /** Known once listening; redirects need it on every plain-HTTP request. */
  private httpsPort = 0
  private readonly pools: UpstreamPools
  private readonly relay: WebSocketRelay
  private readonly connections = new ConnectionTracker()
  private readonly http: Edge
  private readonly https: Edge
  private readonly admin: FastifyInstance
  /** `--probe-port`: /health and /ready apart from the admin page. */
  private readonly probes: FastifyInstance | undefined
  private readonly rateLimits: RateLimitStores
  private readonly metrics: GatewayMetrics
  private readonly redis: RedisClient | undefined
  private readonly acme: AcmeManager
  private readonly activity = new RecentActivity()
  private readonly acmeResponder: TlsServer
  private readonly ticketKeys: TicketKeyRotation | undefined

  private constructor(
    private readonly settings: Settings,
    private readonly log: Logger,
    private readonly internalCa: InternalCa,
    private readonly certificates: CertificateStore,
    placeholder: { cert: string; key: string },
    stickySecret: Buffer,
    adminToken: string | undefined,
    /** With workers: this worker's link to the primary, which keeps the state they share. */
    private readonly primary: PrimaryLink | undefined,
    welcome: WorkerWelcome | undefined,
  ) {
    this.pools = new UpstreamPools({
      log,
      stickySecret,
      resolver: new TargetResolver(settings.dnsServers),
      onLookupFailure: (app) => this.metrics.dnsLookupFailed(app),
      probes: welcome?.probe ?? true,
      ...(primary
        ? { onHealthChange: (pool, origin, healthy) => primary.tell('health', { pool, origin, healthy }) }
        : {}),
    })
    if (welcome) this.pools.applyHealth(welcome.health)
    const workers = welcome?.workers ?? 1
    const toPrimary = primary && { link: primary, breaker: primaryBreaker(log), workers }
    this.relay = new WebSocketRelay(
      this.pools,
      toPrimary && new SharedWebSocketCaps(toPrimary.link, settings.redisTimeout, toPrimary.breaker, workers),
    )
    this.redis = settings.redis
      ? connectRedis(settings.redis, settings.redisTimeout, [rateLimitCommand])
      : undefined
    this.redis?.on('error', () => {}) // reported once per state change by the breaker, not per reconnect attempt
    this.rateLimits = {
      store: rateLimitStore({
        settings,
        log,
        ...(this.redis ? { redis: this.redis } : {}),
        ...(toPrimary ? { primary: toPrimary } : {}),
        onError: (store) => this.metrics.storeFailed(store),
      }),
      onDecision: (appId, allowed) => this.metrics.rateLimited(appId, allowed),
    }
    const files = new FileAcmeStorage(settings.stateDir, primary && new SharedAcmeState(primary))
    this.acme = new AcmeManager({
      storage: this.redis ? new RedisAcmeStorage(this.redis, files) : files,
      certificates,
      log,
      retryMs: settings.acmeRetry,
      pollMs: settings.acmePoll,
      onOrder: (appId, success) => this.metrics.acmeOrdered(appId, success),
      ...(primary ? { onStored: (appId) => primary.tell('acme-stored', appId) } : {}),
    })
    this.acmeResponder = acmeTlsAlpnResponder(this.acme, log)
    this.metrics = new GatewayMetrics({
      inFlight: () => this.connections.inFlight,
      websockets: () => this.relay.openByScope(),
      stores: () => this.rateLimits.store.health(),
      certificateExpiry: () => certificates.expiries(),
      upstreams: () => this.pools.status(),
      ...(primary
        ? {
            everyWorker: () =>
              primary.ask('gather', 'metrics').then(
                (snapshots) => snapshots as MetricsSnapshot[],
                // A primary that does not answer: this worker's own figures, and the others counted as missing.
                async () => [
                  await this.metrics.registry.getMetricsAsJSON(),
                  await unansweredWorkers(workers - 1),
                ],
              ),
          }
        : {}),
    })
    const context: EdgeContext = {
      metrics: this.metrics,
      rateLimits: this.rateLimits,
      log,
      listener: settings,
      router: () => this.generation.router,
      httpsPort: () => this.httpsPort,
      pools: this.pools,
      relay: this.relay,
      connections: this.connections,
      acmeHttpChallenge: (token) => this.acme.httpChallenge(token),
      activity: this.activity,
    }
    this.http = createEdge(context)
    this.https = createEdge(context, { certificates, placeholder })
    this.generation = this.generationOf([])
    const probes = { report: () => this.health(), readiness: () => this.readiness() }
    this.admin = createAdmin(
      log,
      probes,
      this.metrics,
      {
        apps: () => this.generation.apps,
        certificates: () => certificates.current(),
        upstreams: () => this.pools.status(),
        activity: primary
          ? () =>
              primary.ask('gather', 'activity').then(
                (snapshots) => RecentActivity.merged(snapshots as ActivitySnapshot[]),
                () => this.activity,
              )
          : async () => this.activity,
        metrics: this.metrics,
      },
      adminToken,
    )
    this.probes = settings.probePort === undefined ? undefined : createProbes(log, probes)
    // Every worker and replica must encrypt tickets with one key, or a client resumes only where it
    // got its ticket: from Redis when configured, else from the primary, else this process's own.
    const applyTicketKey = (key: Buffer) => this.https.setTicketKeys(key)
    this.ticketKeys =
      this.redis || !primary
        ? new TicketKeyRotation({
            periodMs: settings.ticketKeyRotation,
            source: this.redis ? redisTicketKeys(this.redis, settings.ticketKeyRotation) : randomTicketKeys,
            apply: applyTicketKey,
            log,
          })
        : undefined
    if (primary) {
      primary.answer('collect', async (kind) =>
        kind === 'metrics' ? this.metrics.registry.getMetricsAsJSON() : this.activity.snapshot(),
      )
      primary.answer('apply', async ({ reason, policies }) => ({
        applied: await this.reload(reason, policies),
        digest: policies.digest,
        problems: this.lastReloadError?.problems ?? [],
      }))
      primary.listen('probe', (on) => this.pools.setProbing(on))
      primary.listen('health', (reports) => this.pools.applyHealth(reports))
      primary.listen('acme-stored', (appId) => this.acme.pickUp(appId))
      if (!this.ticketKeys) {
        primary.listen('ticket-key', (key) => applyTicketKey(Buffer.from(key, 'base64')))
        if (welcome?.ticketKey) applyTicketKey(Buffer.from(welcome.ticketKey, 'base64'))
      }
    }
  }

  /** Loads the policies (refusing to start on any problem), then opens the listeners. */
  static async start(
    settings: Settings,
    log: Logger,
    worker?: { primary: PrimaryLink; welcome: WorkerWelcome },
  ): Promise<Gateway> {
    const internalCa = await InternalCa.open(settings.stateDir)
    const placeholder = await selfSigned(
      'Portcullis placeholder: no app for this name',
      [],
      3650 * 86_400_000,
    )
    const certificates = new CertificateStore(createSecureContext(placeholder))
    const stickySecret = settings.stickySecret
      ? Buffer.from(settings.stickySecret)
      : await persistentSecret(path.join(settings.stateDir, 'sticky.key'))
    const adminToken = settings.adminTokenFile ? await readAdminToken(settings.adminTokenFile) : undefined
    const gateway = new Gateway(
      settings,
      log,
      internalCa,
      certificates,
      placeholder,
      stickySecret,
      adminToken,
      worker?.primary,
      worker?.welcome,
    )
    // A worker compiles the texts its primary validated, never the files as they may be by now.
    const prepared = await gateway.prepare(worker?.welcome.policies)
    if (!prepared.ok) throw new PolicyError(prepared.problems)
    // Redis first: ACME certificates another replica stored there are served from the start.
    if (gateway.redis && !(await whenReady(gateway.redis, 5000))) {
      log.error(
        { redis: gateway.redis.status },
        'Redis not reachable at start: rate limits use their onStoreError until it is',
      )
    }
    await gateway.commit(prepared)
    await gateway.ticketKeys?.start()
    await gateway.open()
    await gateway.admin.listen({ port: settings.adminPort, host: settings.adminListen })
    if (settings.probePort !== undefined)
      await gateway.probes?.listen({ port: settings.probePort, host: settings.probeListen })
    // With workers the primary watches the files, validates once and tells every worker to reload.
    if (settings.watch && !worker) gateway.watchPolicies()
    gateway.renewInternalCertificates()
    log.info(
      {
        ...gateway.addresses(),
        apps: prepared.apps.map((app) => app.id),
        env: settings.env,
        ...(worker ? { pid: process.pid } : {}),
      },
      worker ? 'worker listening' : 'gateway listening',
    )
    worker?.primary.tell('started', gateway.addresses())
    return gateway
  }

  /** The edge listeners accept through front doors, which read PROXY protocol headers from trusted balancers. */
  private async open(): Promise<void> {
    const { settings } = this
    const options = {
      proxyProtocolFrom: new CidrSet(settings.proxyProtocolFrom.flatMap((text) => parseCidr(text) ?? [])),
      headerTimeoutMs: settings.headersTimeout,
      maxConnections: settings.maxConnections,
      log: this.log,
    }
    await Promise.all([this.http.fastify.ready(), this.https.fastify.ready()])
    const plain: Door = { server: this.http.serverFor() }
    this.fronts = {
      http: settings.httpPort === 'off' ? undefined : frontDoor(() => plain, options),
      https: frontDoor(() => {
        const { doors } = this.generation
        return this.acme.answersTlsAlpn ? doors.acme : doors.plain
      }, options),
    }
    if (this.fronts.http && settings.httpPort !== 'off')
      await listen(this.fronts.http, settings.httpPort, settings.listen)
    await listen(this.fronts.https, settings.httpsPort, settings.listen)
    this.httpsPort = this.addresses().https
  }

  addresses(): ListeningAddresses {
    const portOf = (server: NetServer | undefined) => (server?.address() as AddressInfo | null)?.port ?? 0
    return {
      http: portOf(this.fronts?.http),
      https: portOf(this.fronts?.https),
      admin: portOf(this.admin.server),
      ...(this.probes ? { probe: portOf(this.probes.server) } : {}),
    }
  }

  /**
   * Re-reads the policy directory. Serialised: reloads never interleave. Resolves false when refused:
   * then nothing running has changed, the cause is logged, and later reloads work as before.
   */
  reload(reason: string, texts?: PolicyTexts): Promise<boolean> {
    if (!this.reloading) {
      this.reloading = this.reloadOnce(reason, texts).finally(() => {
        this.reloading = undefined
        const queued = this.queuedReload
        this.queuedReload = undefined
        if (queued) queued.resolve(this.reload(queued.reason, queued.texts))
      })
      return this.reloading
    }
    // Requests that arrive while a reload runs coalesce into one more, with the latest texts.
    if (this.queuedReload) Object.assign(this.queuedReload, { reason, texts })
    else {
      let resolve: (applied: Promise<boolean>) => void = () => {}
      const applied = new Promise<boolean>((done) => {
        resolve = done
      })
      this.queuedReload = { reason, texts, applied, resolve }
    }
    return this.queuedReload.applied
  }

  private async reloadOnce(reason: string, texts: PolicyTexts | undefined): Promise<boolean> {
    let prepared: Prepared | Refused
    try {
      prepared = await this.prepare(texts)
    } catch (error) {
      prepared = refusedBy(this.settings.policies, `the reload failed (${describeError(error)})`)
    }
    if (!prepared.ok) {
      const problems = prepared.problems.map(formatProblem)
      for (const problem of problems) this.log.error({ reason, problem }, `policy reload refused: ${problem}`)
      this.log.error(
        { reason, problems: problems.length },
        'policy reload refused; still serving the last good policies',
      )
      this.lastReloadError = { at: new Date(), problems }
      this.metrics.reloaded(false)
      return false
    }
    await this.commit(prepared)
    this.lastReloadError = undefined
    this.metrics.reloaded(true)
    this.log.info(
      { reason, apps: prepared.apps.map((app) => app.id), digest: prepared.digest },
      'policies reloaded',
    )
    return true
  }

  /**
   * Everything a new generation needs that can fail: the files read, validated and compiled, the
   * production rules, and the internal certificates issued (files written). Nothing running changes
   * here; start-up and reload refuse on the same problems.
   */
  private async prepare(texts?: PolicyTexts): Promise<Prepared | Refused> {
    const loaded = texts ? await compilePolicyTexts(texts) : await loadPolicySource([this.settings.policies])
    if (!loaded.ok) return loaded
    const refusal = admissionProblems(loaded, this.settings, this.log, {
      redis: this.redis !== undefined,
      // With workers, the primary validated these policies and logged their warnings once.
      quiet: this.primary !== undefined,
    })
    if (refusal.length > 0) return { ok: false, problems: refusal }
    const issued = await internalLeaves(loaded.apps, this.internalCa)
    if (!issued.ok) return issued
    return { ok: true, apps: loaded.apps, leaves: issued.leaves, digest: loaded.texts.digest }
  }

  /** Puts a prepared generation in place: certificates, ACME, pools, then the router in one assignment. */
  private async commit({ apps, leaves }: Prepared): Promise<void> {
    for (const app of apps) {
      const pair = app.tls.mode === 'manual' ? app.tls.manual : leaves.get(app.id)
      if (pair) this.certificates.set(app.id, pair)
    }
    await this.acme.update(apps)
    this.certificates.retain(new Set(apps.map((app) => app.id)))
    this.pools.update(apps)
    // Targets named in DNS are looked up before the apps are served (a lookup that fails is logged,
    // retried, and leaves the fixed targets serving), but not for longer than a DNS timeout.
    await Promise.race([this.pools.settled(), sleep(firstLookupWaitMs)])
    this.generation = this.generationOf(apps)
  }

  /** A generation of apps, with the HTTPS doors their TLS profiles need. */
  private generationOf(apps: readonly App[]): Generation {
    const router = new HostRouter(apps)
    const [only, ...others] = router.tlsProfiles
    const doors = tlsDoors({
      sole: others.length === 0 ? this.https.serverFor(only) : undefined,
      serverForName: (servername) => this.https.serverFor(router.tlsProfileFor(servername)),
      acmeResponder: this.acmeResponder,
    })
    return { apps, router, loadedAt: new Date(), doors }
  }

  /** Internal leaves live 30 days and are renewed with a third left, without waiting for a reload. */
  private renewInternalCertificates(): void {
    this.renewTimer = setInterval(() => {
      for (const app of this.generation.apps) {
        if (app.tls.mode !== 'internal') continue
        this.internalCa.leafFor(app.id, app.hosts).then(
          (pair) => this.certificates.set(app.id, pair),
          (error: unknown) =>
            this.log.error(
              { err: error, app: app.id },
              'internal certificate renewal failed; keeping the current one',
            ),
        )
      }
    }, 3_600_000).unref()
  }

  private watchPolicies(): void {
    let timer: NodeJS.Timeout | undefined
    try {
      this.watcher = watch(this.settings.policies, () => {
        clearTimeout(timer)
        // Editors write a file in several steps; wait for them to settle.
        timer = setTimeout(() => void this.reload('file change'), 200)
      })
    } catch (error) {
      this.log.warn({ err: error }, 'cannot watch the policy directory; reload with SIGHUP')
    }
  }

  health(): HealthReport {
    const checks: Record<string, HealthCheck> = {
      policies: this.lastReloadError
        ? {
            status: 'warn',
            apps: this.generation.apps.length,
            loadedAt: this.generation.loadedAt.toISOString(),
            lastReloadError: this.lastReloadError,
          }
        : {
            status: 'pass',
            apps: this.generation.apps.length,
            loadedAt: this.generation.loadedAt.toISOString(),
          },
      ...this.storeChecks(),
      certificates: this.certificateHealth(),
      listeners: this.shuttingDown
        ? { status: 'fail', draining: true, inFlight: this.connections.inFlight, websockets: this.relay.size }
        : { status: 'pass', inFlight: this.connections.inFlight, websockets: this.relay.size },
    }
    return { status: overallStatus(checks), uptime_ms: Date.now() - this.startedAt, checks }
  }

  /**
   * Per remote rate-limit store (`redis`, and `primary` for a worker): a warning while a breaker is not
   * closed, with the state of each failing part (on Cluster, each master by host:port).
   */
  private storeChecks(): Record<string, HealthCheck> {
    const checks: Record<string, HealthCheck> = {}
    for (const { name, state, failing } of this.rateLimits.store.health()) {
      const connection = name === 'redis' && this.redis ? { connection: this.redis.status } : {}
      const nodes = Object.keys(failing).some(Boolean) ? { nodes: failing } : {}
      checks[name] =
        state === 'closed'
          ? { status: 'pass', ...connection }
          : { status: 'warn', ...connection, breaker: state, ...nodes }
    }
    return checks
  }

  /**
   * Whether a load balancer should send this replica traffic: the liveness checks (draining fails) and
   * at least one healthy target per app. Redis only warns: every replica shares it, so taking replicas
   * out for it would turn limits that fall back (onStoreError) into an outage, and a slow event loop
   * that times out a few Redis calls would pull replicas out exactly when they are busy. A placeholder
   * certificate only warns too: the ACME challenge itself must reach the gateway through the balancer.
   */
  readiness(): HealthReport {
    const { checks: live } = this.health()
    const checks: Record<string, HealthCheck> = { ...live }
    const apps: Record<string, { healthy: number; targets: number }> = {}
    let upstreams: HealthCheck['status'] = 'pass'
    for (const [appId, targets] of this.pools.status()) {
      const healthy = targets.filter((target) => target.healthy).length
      apps[appId] = { healthy, targets: targets.length }
      if (healthy === 0) upstreams = 'fail'
    }
    checks.upstreams = { status: upstreams, apps }
    return { status: overallStatus(checks), uptime_ms: Date.now() - this.startedAt, checks }
  }

  /**
   * Each TLS app's certificate: warn while an app waits for its first ACME certificate or has less than
   * a week left (renewal is failing), fail once one has expired.
   */
  private certificateHealth(): HealthCheck {
    const now = Date.now() / 1000
    const apps: Record<string, { expiresAt?: string; placeholder?: true }> = {}
    let status: HealthCheck['status'] = 'pass'
    for (const [appId, served] of this.certificates.current()) {
      if (served.placeholder) {
        apps[appId] = { placeholder: true }
        if (status === 'pass') status = 'warn'
        continue
      }
      apps[appId] = { expiresAt: new Date(served.expiresAt * 1000).toISOString() }
      if (served.expiresAt <= now) status = 'fail'
      else if (served.expiresAt - now < 7 * 86_400 && status === 'pass') status = 'warn'
    }
    return { status, apps }
  }

  /**
   * Stops accepting connections, lets in-flight requests and WebSockets finish for up to the grace
   * period, then closes what is left (WebSockets with 1001) and releases everything.
   */
  shutdown(): Promise<void> {
    this.shuttingDown ??= this.drain()
    return this.shuttingDown
  }

  private async drain(): Promise<void> {
    const { gracePeriod } = this.settings
    this.watcher?.close()
    clearInterval(this.renewTimer)
    this.acme.close()
    this.ticketKeys?.stop()
    this.fronts?.http?.close()
    this.fronts?.https.close()
    // Logged once the listeners are closed: the line is written synchronously, and whoever reads it may
    // connect at once and must be refused, not accepted and then reset.
    this.log.info(
      { inFlight: this.connections.inFlight, websockets: this.relay.size, gracePeriodMs: gracePeriod },
      'shutting down: draining',
    )
    this.connections.startDraining()
    let timer: NodeJS.Timeout | undefined
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), gracePeriod)
    })
    const drained = Promise.all([this.connections.idle(), this.relay.idle()]).then(() => 'drained' as const)
    const result = await Promise.race([drained, graceOver])
    clearTimeout(timer)
    if (result === 'timeout') {
      this.log.warn(
        { inFlight: this.connections.inFlight, websockets: this.relay.size },
        'grace period over: closing what is left',
      )
      this.relay.closeAll('gateway shutting down')
      this.connections.destroyAll()
    }
    // Past the grace period nothing is awaited that a stuck peer could hold: upstream requests still
    // running are cut, and closing the listeners gets a fixed margin, so a stop always ends.
    const closed = Promise.all([
      this.http.fastify.close(),
      this.https.fastify.close(),
      this.pools.close(result === 'timeout' ? 'destroy' : 'close'),
    ])
    let margin: NodeJS.Timeout | undefined
    const stuck = await Promise.race([
      closed.then(() => false),
      new Promise<boolean>((resolve) => {
        margin = setTimeout(() => resolve(true), closeMarginMs)
      }),
    ])
    clearTimeout(margin)
    if (stuck)
      this.log.warn({ marginMs: closeMarginMs }, 'listeners did not close within the margin: exiting anyway')
    this.rateLimits.store.close()
    this.redis?.disconnect()
    await Promise.all([this.admin.close(), this.probes?.close()])
    this.log.info({ result }, 'gateway stopped')
  }
}

/** How long a (re)load waits for the first lookups of targets named in DNS. */
const firstLookupWaitMs = 5000

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

/** How long closing the listeners and pools may take after the drain, before the gateway exits anyway. */
const closeMarginMs = 3000

/** A random key created once and kept (mode 0600), so cookies signed before a restart stay valid. */
export async function persistentSecret(file: string): Promise<Buffer> {
  try {
    return Buffer.from(await readFile(file, 'utf8'), 'base64')
  } catch {
    const secret = randomBytes(32)
    await writeFileAtomic(file, secret.toString('base64'), 0o600)
    return secret
  }
}

function listen(server: NetServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

export class PolicyError extends Error {
  constructor(readonly problems: PolicyProblem[]) {
    super(`${problems.length} problem(s) in the policy files:\n${problems.map(formatProblem).join('\n')}`)
  }
}

/** The admin token: the file's first line; an empty one is refused rather than taken as no token. */
async function readAdminToken(file: string): Promise<string> {
  const token = (await readFile(file, 'utf8')).split(/\r?\n/, 1)[0]?.trim() ?? ''
  if (token.length < 16)
    throw new Error(`--admin-token-file ${file}: the token must be at least 16 characters`)
  return token
}
