import { readFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { createRequire } from 'node:module'
import path from 'node:path'
import type { Browser } from 'playwright-core'
import { io, type Socket } from 'socket.io-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blankSite, launchAppBrowser, refusals, refusalsOnceLogged } from '../support/app-browser.js'
import { type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { delayedLink, emulateLink } from '../support/link.js'
import { deployable } from '../support/packs.js'
import { type AppProcess, startAppProcess } from '../support/processes.js'
import { type RedisServer, startRedis } from '../support/redis.js'

/**
 * Socket.IO (npm socket.io, two server processes sharing Redis through its Redis adapter) behind the
 * Horizon pack with its own balancing: browsers' dashboards pinned by the sticky cookie, sensors (Node's
 * socket.io-client, which keeps no cookies) by `balance: hash` on their token. Each client starts on
 * HTTP long-polling and upgrades to a WebSocket; every request of one session must reach the replica
 * that holds it, or Socket.IO answers "Session ID unknown".
 */

const host = 'horizon.test'
const replicaScript = path.join(import.meta.dirname, 'socketio/replica.mjs')
const clientBundle = path.join(
  path.dirname(createRequire(import.meta.url).resolve('socket.io/package.json')),
  'client-dist/socket.io.min.js',
)

describe('Socket.IO on two replicas behind the Horizon pack, over a 50 ms link', () => {
  const running: { stop(): Promise<unknown> }[] = []
  let gateway: RunningGateway
  let redis: RedisServer
  const replicas: Record<string, AppProcess> = {}
  let browser: Browser
  let origin: string
  let agent: Agent
  let foreignPort: number

  beforeAll(async () => {
    redis = await startRedis()
    running.push(redis)
    const link = await delayedLink(25)
    running.push({ stop: () => link.close() })
    origin = `https://${host}:${link.port}`
    for (const name of ['a', 'b']) {
      replicas[name] = await startAppProcess(process.execPath, [replicaScript], {
        REPLICA: name,
        REDIS_URL: redis.url,
      })
      running.push(replicas[name])
    }
    const [a, b] = [replicas.a as AppProcess, replicas.b as AppProcess]
    const policy = await deployable('horizon', [a.url, b.url], (doc) => {
      doc.setIn(['hosts'], [host])
      doc.setIn(['tls'], { mode: 'internal' })
      doc.setIn(['cors', 'origins'], [origin])
      doc.setIn(['routes', 0, 'websocket', 'paths', 0, 'allowedOrigins'], [origin])
      doc.setIn(['routes', 2, 'upstream', 'targets'], [a.url])
      doc.setIn(['routes', 3, 'upstream', 'targets'], [b.url])
    })
    gateway = await startGateway({ policies: { 'horizon.yaml': policy } })
    running.push(gateway)
    link.retarget(gateway.ports.https)
    // The sensors trust the gateway's internal CA and find horizon.test on loopback.
    agent = new Agent({
      ca: await readFile(path.join(gateway.stateDir, 'internal/ca.crt'), 'utf8'),
      lookup: (_hostname, options, callback) =>
        (options as { all?: boolean }).all
          ? (callback as (error: null, addresses: { address: string; family: number }[]) => void)(null, [
              { address: '127.0.0.1', family: 4 },
            ])
          : callback(null, '127.0.0.1', 4),
    })
    running.push({ stop: async () => agent.destroy() })
    const bundle = await readFile(clientBundle, 'utf8')
    const foreign = await blankSite({ '/socket.io.min.js': { type: 'text/javascript', body: bundle } })
    running.push(foreign)
    foreignPort = foreign.port
    browser = await launchAppBrowser()
    running.push({ stop: () => browser.close() })
  }, 60_000)

  afterAll(async () => {
    for (const thing of running.reverse()) await thing.stop().catch(() => undefined)
  })

  interface Sensor {
    socket: Socket
    replica: string
    commands: { text: string; from: string }[]
  }

  /** A sensor on the Node client: connected, told its replica, and upgraded from polling to WebSocket. */
  async function sensor(token: string): Promise<Sensor> {
    const socket = io(origin, {
      path: '/ws/sensors/socket.io/',
      extraHeaders: { authorization: `Bearer ${token}` },
      agent: agent as unknown as string,
      reconnection: false,
    })
    const commands: Sensor['commands'] = []
    socket.on('command', (command: Sensor['commands'][number]) => commands.push(command))
    const replica = await new Promise<string>((resolve, reject) => {
      socket.once('welcome', ({ replica }: { replica: string }) => resolve(replica))
      socket.once('connect_error', reject)
    })
    if (socket.io.engine.transport.name !== 'websocket')
      await new Promise((resolve) => socket.io.engine.once('upgrade', resolve))
    return { socket, replica, commands }
  }

  it('a dashboard in Chromium and sensors on the Node client exchange messages across the replicas, each on a WebSocket after polling', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    context.setDefaultTimeout(15_000 * timeoutScale)
    const sensors: Sensor[] = []
    try {
      const page = await context.newPage()
      await emulateLink(page, { latencyMs: 50 })
      await page.goto(`${origin}/dashboard`)
      await page.locator('#transport', { hasText: 'websocket' }).waitFor()
      const near = await page.locator('#replica').innerText()
      expect(['a', 'b']).toContain(near)
      const far = near === 'a' ? 'b' : 'a'

      // Sensors stay where their token hashes; enough of them land on each replica.
      for (let index = 1; index <= 16; index++) {
        if ([near, far].every((replica) => sensors.some((one) => one.replica === replica))) break
        sensors.push(await sensor(`sensor-${index}`))
      }
      const remote = sensors.find((one) => one.replica === far) as Sensor
      const local = sensors.find((one) => one.replica === near) as Sensor
      expect(remote, 'a sensor on the other replica').toBeDefined()
      expect(local, 'a sensor on the dashboard’s replica').toBeDefined()

      const ack = await remote.socket.emitWithAck('reading', '21.5')
      expect(ack).toEqual({ replica: far })
      const token = (remote.socket.io.opts.extraHeaders?.authorization ?? '').replace('Bearer ', '')
      await page.locator('#readings li', { hasText: `${token}: 21.5 (via replica ${far})` }).waitFor()

      await page.getByLabel('Command').fill('recalibrate')
      await page.getByRole('button', { name: 'Send command' }).click()
      await page.locator('#sent', { hasText: `Command "recalibrate" sent through replica ${near}` }).waitFor()
      const received = (one: Sensor) =>
        new Promise<void>((resolve) => {
          if (one.commands.length > 0) resolve()
          else one.socket.once('command', () => resolve())
        })
      await Promise.all([received(remote), received(local)])
      for (const one of [remote, local]) expect(one.commands).toEqual([{ text: 'recalibrate', from: near }])

      // Every request of the dashboard's session (its polls, then its upgrade) reached one replica,
      // which saw the upgrade; the sensors' too.
      const dashboardUpstreams = new Set(
        gateway.logs
          .filter((line) => String(line.path).startsWith('/ws/dashboard/socket.io/') && line.upstream)
          .map((line) => line.upstream),
      )
      expect(dashboardUpstreams).toEqual(new Set([(replicas[near] as AppProcess).url]))
      expect((await context.cookies(origin)).map((cookie) => cookie.name)).toContain('pcl_upstream')
      for (const name of [near, far])
        await (replicas[name] as AppProcess).waitForLine((line) =>
          /^UPGRADE \S+ polling->websocket$/.test(line),
        )
      expect(refusals(gateway)).toEqual([])
    } finally {
      for (const one of sensors) one.socket.disconnect()
      await context.close()
    }
  })

  it('a page on a foreign origin can neither poll with credentials nor open a WebSocket', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    try {
      const page = await context.newPage()
      await emulateLink(page, { latencyMs: 50 })
      await page.goto(`http://evil.test:${foreignPort}/`)
      await page.addScriptTag({ url: '/socket.io.min.js' })
      const attempts = await page.evaluate(async (gateway) => {
        const attempt = (options: Record<string, unknown>) =>
          new Promise<string>((resolve) => {
            // The page's global from the Socket.IO client bundle.
            const { io: connect } = window as unknown as { io: typeof io }
            const socket = connect(gateway, { reconnection: false, ...options })
            socket.on('connect', () => {
              resolve('connected')
              socket.close()
            })
            socket.on('connect_error', (error: Error) => {
              resolve(`refused: ${error.message}`)
              socket.close()
            })
          })
        return [
          await attempt({ path: '/ws/dashboard/socket.io/', withCredentials: true }),
          await attempt({ path: '/ws/dashboard/socket.io/', transports: ['websocket'] }),
          await attempt({ path: '/ws/sensors/socket.io/', transports: ['websocket'] }),
        ]
      }, origin)
      expect(attempts).toEqual([
        'refused: xhr poll error',
        'refused: websocket error',
        'refused: websocket error',
      ])
    } finally {
      await context.close()
    }
    for (const replica of Object.values(replicas))
      expect(
        replica.lines.filter((line) => line.startsWith('CONNECT') && line.includes('evil.test')),
      ).toEqual([])
    expect(await refusalsOnceLogged(gateway, 3)).toEqual([
      expect.objectContaining({
        method: 'GET',
        path: '/ws/dashboard/socket.io/',
        code: 'PCL_CORS_ORIGIN_DENIED',
      }),
      expect.objectContaining({
        method: 'GET',
        path: '/ws/dashboard/socket.io/',
        code: 'PCL_WS_ORIGIN_DENIED',
      }),
      expect.objectContaining({
        method: 'GET',
        path: '/ws/sensors/socket.io/',
        code: 'PCL_WS_ORIGIN_DENIED',
      }),
    ])
  })
})
