import { mkdtemp } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Browser, BrowserContext } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { hashPassword } from '../../src/auth/passwords.js'
import { listen } from '../../src/demo/echo-app.js'
import { launchChromium } from '../support/browser.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { deployable, healthOf, hostOf, type Pack, packs } from '../support/packs.js'

/**
 * What a user of each app does in its browser, on the app's real routes (from the seeds, and from the
 * public source of Superposition and Appstrate): the page it loads, a form it posts, a fetch with the
 * app's own client headers, its WebSockets and its event streams.
 */
interface Flow {
  /** Where the app's pages come from: its own host, or (pgStack) a front end on another origin. */
  frontEnd: 'own' | 'separate'
  page: string
  form: string
  fetch: { method: string; path: string; headers: Record<string, string> }
  websockets: string[]
  streams: string[]
}

const flows: Record<Pack, Flow> = {
  // The Leptos UI lives under /admin; its API calls name the org and workspace in headers.
  superposition: {
    frontEnd: 'own',
    page: '/admin/localorg/dev/default-config',
    form: '/admin/localorg/workspaces',
    fetch: { method: 'PUT', path: '/context', headers: { 'x-tenant': 'dev', 'x-org-id': 'localorg' } },
    websockets: [],
    streams: [],
  },
  // A supabase-js front end on its own origin: PostgREST with apikey/prefer, GoTrue, Realtime.
  pgstack: {
    frontEnd: 'separate',
    page: '/',
    form: '/auth/v1/token?grant_type=password',
    fetch: {
      method: 'POST',
      path: '/rest/v1/todos',
      headers: {
        apikey: 'anon-key',
        authorization: 'Bearer anon-key',
        'x-client-info': 'supabase-js/2.45.0',
        prefer: 'return=representation',
        'accept-profile': 'public',
      },
    },
    websockets: ['/realtime/v1/websocket?apikey=anon-key&vsn=1.0.0'],
    streams: [],
  },
  // The dashboard: Better Auth sign-in, inline runs with an API key, live updates over SSE.
  appstrate: {
    frontEnd: 'own',
    page: '/',
    form: '/api/auth/sign-in/email',
    fetch: { method: 'POST', path: '/api/runs/inline', headers: { 'x-api-key': 'ask_test' } },
    websockets: [],
    streams: ['/api/realtime/runs', '/api/runs/run_1/logs'],
  },
  horizon: {
    frontEnd: 'own',
    page: '/dashboard',
    form: '/api/login',
    fetch: { method: 'POST', path: '/api/fleet/commands', headers: { authorization: 'Bearer token' } },
    websockets: ['/ws/dashboard/live'],
    streams: [],
  },
  // FastAPI with server-rendered pages: a login form, a JSON API with a CSRF header.
  sm: {
    frontEnd: 'own',
    page: '/',
    form: '/auth/login',
    fetch: { method: 'POST', path: '/api/items', headers: { 'x-csrf-token': 'token' } },
    websockets: [],
    streams: [],
  },
}

/** Every configured upstream timeout in the test copies of the packs: a stream outlasts them all. */
const timeoutMs = 1000
const streamTicks = 8
const tickMs = 400

interface StandIn {
  url: string
  received: string[]
  close(): Promise<void>
}

/** A page with one form posting to `action`. */
function formPage(action: string): string {
  return `<!doctype html><title>app</title><form method="post" action="${action}"><input name="user" value="ada"><button>send</button></form>`
}

/** A stand-in for one app: its health answer, its pages, an echo of what reaches it, SSE and WebSockets. */
async function standIn(pack: Pack): Promise<StandIn> {
  const received: string[] = []
  const flow = flows[pack]
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const url = request.url ?? '/'
    if (url === '/health')
      return response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify(healthOf[pack]))
    if (flow.streams.includes(url)) {
      response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      let sent = 0
      const timer = setInterval(() => {
        response.write(`data: tick ${++sent}\n\n`)
        if (sent === streamTicks) {
          clearInterval(timer)
          response.end()
        }
      }, tickMs)
      response.on('close', () => clearInterval(timer))
      return
    }
    if (request.method === 'GET')
      return response.writeHead(200, { 'content-type': 'text/html' }).end(formPage(flow.form))
    let body = ''
    request.on('data', (chunk: Buffer) => {
      body += chunk
    })
    request.on('end', () => {
      received.push(`${request.method} ${url} ${body}`)
      response
        .writeHead(200, { 'content-type': 'text/plain', 'content-range': '0-0/1' })
        .end(`received ${body}`)
    })
  })
  new WebSocketServer({ server }).on('connection', (socket) => socket.send('welcome'))
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

describe('each pack in front of its app, used from a real browser (Chromium)', () => {
  let gateway: RunningGateway
  let browser: Browser
  /** Pages on other origins: pgStack's front end, and a foreign site. */
  let pages: Server
  let pagePort: number
  const standIns = new Map<Pack, StandIn>()
  const password = 'correct horse battery'

  beforeAll(async () => {
    pages = createServer((request, response) => {
      const action = new URL(request.url ?? '/', 'http://x').searchParams.get('action') ?? '/'
      response.writeHead(200, { 'content-type': 'text/html' }).end(formPage(action))
    })
    pagePort = await listen(pages, 0)
    const hash = await hashPassword(password)
    const assets = await mkdtemp(path.join(tmpdir(), 'pcl-assets-'))
    const policies: Record<string, string> = {}
    for (const pack of packs) {
      const app = await standIn(pack)
      standIns.set(pack, app)
      policies[`${pack}.yaml`] = await deployable(pack, [app.url], (doc) => {
        // Certificates are not what is tested here: the browser ignores certificate errors.
        doc.setIn(['tls'], { mode: 'internal' })
        const every = `${timeoutMs}ms`
        const timeouts = { connect: every, headers: every, idle: every }
        doc.setIn(['upstream', 'timeouts'], timeouts)
        if (pack === 'appstrate') doc.setIn(['routes', 0, 'upstream', 'timeouts'], timeouts)
        if (pack === 'superposition') doc.setIn(['basicAuth', 'users'], { admin: hash })
        if (pack === 'sm') doc.setIn(['static', 0, 'dir'], assets)
        if (pack === 'horizon') {
          for (const route of [2, 3]) doc.setIn(['routes', route, 'upstream', 'targets'], [app.url])
        }
        // The front end's origin as the browser sees it here (a port of its own).
        if (pack === 'pgstack') doc.setIn(['cors', 'origins'], [`http://app.example.com:${pagePort}`])
      })
    }
    gateway = await startGateway({ policies })
    browser = await launchChromium([
      '--disable-quic',
      '--disable-component-update',
      '--disable-sync',
      '--host-resolver-rules=MAP *.example.com 127.0.0.1, MAP *.example 127.0.0.1',
      '--ignore-certificate-errors',
    ])
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    await gateway?.stop()
    for (const app of standIns.values()) await app.close()
    await new Promise((resolve) => pages?.close(resolve))
  })

  const origin = (pack: Pack) => `https://${hostOf[pack]}:${gateway.ports.https}`

  async function contextFor(pack: Pack): Promise<BrowserContext> {
    return browser.newContext({
      ignoreHTTPSErrors: true,
      ...(pack === 'superposition' ? { httpCredentials: { username: 'admin', password } } : {}),
    })
  }

  it.each(packs)(
    '%s: the form post, the fetch, the WebSockets and the streams all reach the app',
    async (pack) => {
      const flow = flows[pack]
      const app = standIns.get(pack) as StandIn
      const context = await contextFor(pack)
      const page = await context.newPage()
      const pageUrl =
        flow.frontEnd === 'own'
          ? `${origin(pack)}${flow.page}`
          : `http://app.example.com:${pagePort}/?action=${encodeURIComponent(`${origin(pack)}${flow.form}`)}`
      await page.goto(pageUrl)

      await Promise.all([
        page.waitForURL((url) => url.pathname === flow.form.split('?')[0]),
        page.click('button'),
      ])
      expect(await page.textContent('body')).toBe('received user=ada')

      await page.goto(pageUrl)
      const api = flow.frontEnd === 'own' ? '' : origin(pack)
      const fetched = await page.evaluate(
        async ({ url, method, headers }) => {
          const response = await fetch(url, {
            method,
            headers: { 'content-type': 'application/json', ...headers },
            body: '{"n":1}',
            credentials: 'include',
          })
          return `${response.status} ${response.headers.get('content-range')} ${await response.text()}`
        },
        { url: `${api}${flow.fetch.path}`, method: flow.fetch.method, headers: flow.fetch.headers },
      )
      expect(fetched).toBe('200 0-0/1 received {"n":1}')

      for (const socketPath of flow.websockets) {
        const opened = await page.evaluate(
          (url) =>
            new Promise<string>((resolve) => {
              const socket = new WebSocket(url)
              socket.onmessage = (event) => resolve(`message: ${event.data}`)
              socket.onerror = () => resolve('error')
            }),
          `wss://${hostOf[pack]}:${gateway.ports.https}${socketPath}`,
        )
        expect(opened).toBe('message: welcome')
      }

      for (const stream of flow.streams) {
        const ticks = await page.evaluate(
          (url) =>
            new Promise<string[]>((resolve) => {
              const seen: string[] = []
              const source = new EventSource(url)
              source.onmessage = (event) => seen.push(event.data)
              // The stand-in ends the stream after its last tick; EventSource then reports an error.
              source.onerror = () => {
                source.close()
                resolve(seen)
              }
            }),
          `${api}${stream}`,
        )
        // The stream lasts streamTicks × tickMs (3.2 s), several times every timeout: all of it arrives.
        expect(ticks).toEqual(Array.from({ length: streamTicks }, (_, index) => `tick ${index + 1}`))
      }
      await context.close()

      expect(app.received).toEqual(
        expect.arrayContaining([
          `POST ${flow.form} user=ada`,
          `${flow.fetch.method} ${flow.fetch.path} {"n":1}`,
        ]),
      )
      const stuck = gateway.logs.filter((line) => line.app === pack && line.code === 'PCL_UPSTREAM_TIMEOUT')
      expect(stuck).toEqual([])
    },
  )

  it.each(packs)('%s: a page on a foreign origin is refused its cross-site form post', async (pack) => {
    const app = standIns.get(pack) as StandIn
    const before = app.received.length
    const context = await contextFor(pack)
    const page = await context.newPage()
    const action = `${origin(pack)}${flows[pack].form}`
    await page.goto(`http://evil.example:${pagePort}/?action=${encodeURIComponent(action)}`)
    await Promise.all([page.waitForURL((url) => url.host.startsWith(hostOf[pack])), page.click('button')])
    expect(await page.textContent('body')).toContain('PCL_CORS_ORIGIN_DENIED')
    expect(app.received.length).toBe(before)
    await context.close()
  })
})
