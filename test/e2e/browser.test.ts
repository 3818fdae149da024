import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { launchChromium } from '../support/browser.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

/**
 * CORS and WebSocket Origin as a browser enforces them: headless Chromium loads a page from an allowed
 * origin and from a foreign one (made-up names mapped to 127.0.0.1), and each page tries a credentialed
 * fetch and a WebSocket to the API behind the gateway.
 */
describe('in a real browser (Chromium)', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let pages: Server
  let pagePort: number
  let browser: Browser

  beforeAll(async () => {
    echo = await echoUpstream()
    pages = createServer((_request, response) => {
      response.setHeader('content-type', 'text/html')
      response.end('<!doctype html><title>page</title><p>test page</p>')
    })
    await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve))
    pagePort = (pages.address() as AddressInfo).port
    gateway = await startGateway({
      policies: {
        'api.yaml': policyYaml({
          app: 'api',
          hosts: ['api.test'],
          target: echo.url,
          extra: `cors:\n  origins: ["http://allowed.test:${pagePort}"]\n  credentials: true\n`,
        }),
      },
    })
    browser = await launchChromium([
      '--disable-quic',
      '--disable-component-update',
      '--disable-sync',
      '--host-resolver-rules=MAP *.test 127.0.0.1',
      // The gateway's internal CA is not in Chromium's store; certificates are not what is tested here.
      '--ignore-certificate-errors',
    ])
  })

  afterAll(async () => {
    await browser?.close()
    await gateway?.stop()
    await echo?.close()
    await new Promise((resolve) => pages?.close(resolve))
  })

  async function pageOn(origin: string): Promise<Page> {
    const page = await browser.newPage()
    await page.goto(`http://${origin}:${pagePort}/`)
    return page
  }

  const api = () => `https://api.test:${gateway.ports.https}`

  function credentialedFetch(page: Page, url: string): Promise<string> {
    return page.evaluate(async (target) => {
      try {
        const response = await fetch(target, { credentials: 'include', method: 'POST', body: 'hi' })
        return `status ${response.status}: ${(await response.text()).slice(0, 30)}`
      } catch (error) {
        return `blocked: ${(error as Error).message}`
      }
    }, url)
  }

  function openWebSocket(page: Page, url: string): Promise<string> {
    return page.evaluate(
      (target) =>
        new Promise<string>((resolve) => {
          const socket = new WebSocket(target)
          socket.onmessage = (event) => {
            resolve(`message: ${String(event.data).slice(0, 30)}`)
            socket.close()
          }
          socket.onerror = () => resolve('error')
        }),
      url,
    )
  }

  it('lets the allowed origin make a credentialed fetch and open a WebSocket', async () => {
    const page = await pageOn('allowed.test')
    expect(await credentialedFetch(page, `${api()}/data`)).toMatch(/^status 200: \{"method":"POST"/)
    expect(await openWebSocket(page, `wss://api.test:${gateway.ports.https}/ws`)).toMatch(
      /^message: \{"hello"/,
    )
    await page.close()
  })

  it('blocks both for a foreign origin, and the gateway says why', async () => {
    const page = await pageOn('evil.test')
    expect(await credentialedFetch(page, `${api()}/data`)).toMatch(/^blocked/)
    expect(await openWebSocket(page, `wss://api.test:${gateway.ports.https}/ws`)).toBe('error')
    await page.close()
    const fetchLine = await gateway.waitForLog((l) => l.code === 'PCL_CORS_ORIGIN_DENIED')
    expect(fetchLine).toMatchObject({ status: 403, rule: 'cors.origins', app: 'api' })
    const wsLine = await gateway.waitForLog((l) => l.code === 'PCL_WS_ORIGIN_DENIED')
    expect(wsLine).toMatchObject({ status: 403, app: 'api' })
  })

  describe("the app's own pages, whose origin is not in cors.origins", () => {
    let site: Server
    let sockets: WebSocketServer
    const received: string[] = []

    beforeAll(async () => {
      site = createServer((request, response) => {
        if (request.method === 'GET' && request.url === '/') {
          response.setHeader('content-type', 'text/html')
          response.end(
            '<!doctype html><title>app</title><form method="post" action="/submit">' +
              '<input name="note" value="hello"><button>send</button></form>',
          )
          return
        }
        let body = ''
        request.on('data', (chunk: Buffer) => {
          body += chunk
        })
        request.on('end', () => {
          received.push(`${request.method} ${request.url} origin=${request.headers.origin} ${body}`)
          response.setHeader('content-type', 'text/plain')
          response.end(`received ${body}`)
        })
      })
      sockets = new WebSocketServer({ server: site })
      sockets.on('connection', (socket) => socket.send('welcome'))
      await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve))
      const target = `http://127.0.0.1:${(site.address() as AddressInfo).port}`
      const policy = (app: string, extra = '') =>
        policyYaml({
          app,
          hosts: [`${app}.test`],
          target,
          extra: `cors:\n  origins: ["https://partner.example"]\n${extra}`,
        })
      // The callback an identity provider posts to from its own site: open to cross-site posts alone.
      await gateway.writePolicy(
        'site.yaml',
        policy(
          'site',
          'routes:\n  - { path: /auth/callback, methods: [POST], cors: { onDisallowed: omit } }\n',
        ),
      )
      await gateway.writePolicy('strict.yaml', policy('strict', 'headers: { referrerPolicy: no-referrer }\n'))
      gateway.process.kill('SIGHUP')
      await gateway.waitForLog(
        (line) => line.msg === 'policies reloaded' && String(line.apps).includes('strict'),
      )
    })

    afterAll(async () => {
      for (const client of sockets?.clients ?? []) client.terminate()
      site?.closeAllConnections()
      await new Promise((resolve) => site?.close(resolve))
    })

    // With Referrer-Policy: no-referrer, browsers send Origin: null on the form post (Sec-Fetch-Site
    // still says same-origin): the default policy used to refuse both with 403.
    it.each(['site', 'strict'])(
      '%s: a form post, a fetch POST and a WebSocket all reach the app',
      async (app) => {
        const page = await browser.newPage()
        const origin = `https://${app}.test:${gateway.ports.https}`
        await page.goto(`${origin}/`)
        await Promise.all([page.waitForURL(`${origin}/submit`), page.click('button')])
        expect(await page.textContent('body')).toBe('received note=hello')
        await page.goto(`${origin}/`)
        const fetched = await page.evaluate(async () => {
          const response = await fetch('/api/items', { method: 'POST', body: 'from fetch' })
          return `${response.status} ${await response.text()}`
        })
        expect(fetched).toBe('200 received from fetch')
        expect(await openWebSocket(page, `wss://${app}.test:${gateway.ports.https}/live`)).toBe(
          'message: welcome',
        )
        await page.close()
        expect(received.filter((line) => line.startsWith('POST'))).toHaveLength(app === 'site' ? 2 : 4)
      },
    )

    it('a foreign page is still refused its cross-site form post', async () => {
      const posts = () => received.filter((line) => line.startsWith('POST')).length
      const before = posts()
      const page = await pageOn('evil.test')
      await page.setContent(
        `<form method="post" action="https://site.test:${gateway.ports.https}/submit"><input name="x" value="1"><button>go</button></form>`,
      )
      await Promise.all([page.waitForURL(/\/submit$/), page.click('button')])
      expect(await page.textContent('body')).toContain('PCL_CORS_ORIGIN_DENIED')
      expect(posts()).toBe(before)
      await page.close()
    })

    it('a route lets a cross-site post reach its callback path alone (OIDC form_post)', async () => {
      const page = await pageOn('idp.test')
      await page.setContent(
        `<form method="post" action="https://site.test:${gateway.ports.https}/auth/callback"><input name="code" value="c0de"><button>go</button></form>`,
      )
      await Promise.all([page.waitForURL(/\/auth\/callback$/), page.click('button')])
      expect(await page.textContent('body')).toBe('received code=c0de')
      expect(received).toContain(`POST /auth/callback origin=http://idp.test:${pagePort} code=c0de`)
      await page.close()
    })
  })

  it('blocks a look-alike origin', async () => {
    const page = await pageOn('allowed.test.evil.test')
    expect(await credentialedFetch(page, `${api()}/data`)).toMatch(/^blocked/)
    await page.close()
  })
})
