import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:https'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { SignJWT } from 'jose'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blankSite, launchAppBrowser, refusals, refusalsOnceLogged } from '../support/app-browser.js'
import { type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { delayedLink, emulateLink } from '../support/link.js'
import { deployable } from '../support/packs.js'
import { type AppProcess, startAppProcess } from '../support/processes.js'
import { selfSigned } from '../support/self-signed.js'

/**
 * FastAPI (Debian's python3-fastapi on uvicorn) behind the SM pack, used the way its developers use it:
 * Swagger UI at /docs (swagger-ui-dist from npm, served by the gateway's static /build/), its OAuth2
 * "Authorize" popup to an identity provider on another origin, back to /docs/oauth2-redirect, which
 * hands the code to its opener; Swagger UI then trades it for a token and calls the API with it.
 */

const host = 'sm.test'
const secret = randomBytes(32).toString('hex')
const swaggerDist = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'))

interface Idp {
  origin: string
  /** The token requests it answered: the origin they came from and whether the PKCE proof held. */
  tokenRequests: { origin: string | undefined; verified: boolean }[]
  close(): Promise<void>
}

/**
 * A stand-in identity provider on its own HTTPS origin: a consent page at /authorize (the user clicks
 * Allow), a 302 back to the redirect URI with a code, and /token trading the code and its PKCE verifier
 * for an HS256 JWT, answering Swagger UI's cross-origin fetch with its own CORS headers.
 */
async function startIdp(appOrigin: string): Promise<Idp> {
  const codes = new Map<string, { challenge: string; redirectUri: string; scope: string }>()
  const tokenRequests: Idp['tokenRequests'] = []
  const tls = await selfSigned('idp.test')
  const readForm = (request: IncomingMessage) =>
    new Promise<URLSearchParams>((resolve) => {
      let body = ''
      request.on('data', (chunk: Buffer) => {
        body += chunk
      })
      request.on('end', () => resolve(new URLSearchParams(body)))
    })
  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'https://idp.test')
    const cors = {
      'access-control-allow-origin': appOrigin,
      'access-control-allow-headers': 'content-type, x-requested-with, accept, authorization',
      'access-control-allow-methods': 'POST',
    }
    if (url.pathname === '/authorize' && request.method === 'GET') {
      const hidden = [...url.searchParams]
        .map(
          ([name, value]) => `<input type="hidden" name="${name}" value="${value.replace(/"/g, '&quot;')}">`,
        )
        .join('')
      response.writeHead(200, { 'content-type': 'text/html' })
      return response.end(
        `<!doctype html><title>Stand-in IdP</title><h1>Sign in as ada</h1><form method="post" action="/authorize">${hidden}<button>Allow</button></form>`,
      )
    }
    if (url.pathname === '/authorize' && request.method === 'POST') {
      const form = await readForm(request)
      const redirectUri = form.get('redirect_uri') ?? ''
      if (redirectUri !== `${appOrigin}/docs/oauth2-redirect`)
        return response.writeHead(400).end('redirect_uri')
      const code = randomBytes(12).toString('hex')
      codes.set(code, {
        challenge: form.get('code_challenge') ?? '',
        redirectUri,
        scope: form.get('scope') ?? '',
      })
      const back = new URL(redirectUri)
      back.searchParams.set('code', code)
      back.searchParams.set('state', form.get('state') ?? '')
      return response.writeHead(302, { location: back.href }).end()
    }
    if (url.pathname === '/token' && request.method === 'OPTIONS') return response.writeHead(204, cors).end()
    if (url.pathname === '/token' && request.method === 'POST') {
      const form = await readForm(request)
      const grant = codes.get(form.get('code') ?? '')
      const verifier = form.get('code_verifier') ?? ''
      const verified =
        grant !== undefined &&
        createHash('sha256').update(verifier).digest('base64url') === grant.challenge &&
        form.get('redirect_uri') === grant.redirectUri
      tokenRequests.push({ origin: request.headers.origin, verified })
      if (!grant || !verified) {
        response.writeHead(400, { ...cors, 'content-type': 'application/json' })
        return response.end('{"error":"invalid_grant"}')
      }
      codes.delete(form.get('code') ?? '')
      const token = await new SignJWT({ scope: grant.scope })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('ada')
        .setExpirationTime('10m')
        .sign(new TextEncoder().encode(secret))
      response.writeHead(200, { ...cors, 'content-type': 'application/json' })
      return response.end(JSON.stringify({ access_token: token, token_type: 'bearer', expires_in: 600 }))
    }
    response.writeHead(404).end()
  }
  const server = createServer(tls, (request, response) => void handle(request, response))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    origin: `https://idp.test:${(server.address() as AddressInfo).port}`,
    tokenRequests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

describe('FastAPI with Swagger UI behind the SM pack, in Chromium over a 50 ms link', () => {
  const running: { stop(): Promise<unknown> }[] = []
  let gateway: RunningGateway
  let app: AppProcess
  let idp: Idp
  let browser: Browser
  let origin: string
  let foreignPort: number

  beforeAll(async () => {
    // The browser's origin is the delayed link's port, known before the gateway behind it: the IdP and
    // the pack's CORS origin must name it.
    const link = await delayedLink(25)
    running.push({ stop: () => link.close() })
    origin = `https://${host}:${link.port}`
    idp = await startIdp(origin)
    running.push({ stop: () => idp.close() })
    app = await startAppProcess('/usr/bin/python3', [path.join(import.meta.dirname, 'fastapi/app.py')], {
      IDP_ORIGIN: idp.origin,
      TOKEN_SECRET: secret,
    })
    running.push(app)
    const policy = await deployable('sm', [app.url], (doc) => {
      doc.setIn(['hosts'], [host])
      doc.setIn(['tls'], { mode: 'internal' })
      doc.setIn(['cors', 'origins'], [origin])
      doc.setIn(['static', 0, 'dir'], swaggerDist)
      // This browser is on loopback: the networks the docs are open to include it.
      for (const [index, rule] of (doc.toJSON().access as { path: string; allow?: string[] }[]).entries()) {
        if (['/docs/**', '/redoc/**', '/openapi.json'].includes(rule.path))
          doc.setIn(['access', index, 'allow'], [...(rule.allow ?? []), '127.0.0.0/8'])
      }
    })
    gateway = await startGateway({ policies: { 'sm.yaml': policy } })
    running.push(gateway)
    link.retarget(gateway.ports.https)
    const foreign = await blankSite()
    running.push(foreign)
    foreignPort = foreign.port
    browser = await launchAppBrowser()
    running.push({ stop: () => browser.close() })
  }, 60_000)

  afterAll(async () => {
    for (const thing of running.reverse()) await thing.stop().catch(() => undefined)
  })

  async function docsPage(): Promise<Page> {
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    context.setDefaultTimeout(15_000 * timeoutScale)
    const page = await context.newPage()
    await emulateLink(page, { latencyMs: 50 })
    await page.goto(`${origin}/docs`)
    await page.locator('button.authorize').first().waitFor()
    return page
  }

  it('Authorize opens the IdP in a popup that hands the code back to its opener, and Try it out calls the API with the token', async () => {
    const page = await docsPage()
    await page.locator('button.authorize').first().click()
    const modal = page.locator('.modal-ux')
    const [popup] = await Promise.all([
      page.waitForEvent('popup'),
      modal.locator('.auth-btn-wrapper button.authorize').click(),
    ])
    await popup.getByRole('button', { name: 'Allow' }).waitFor()
    // The redirect page reads window.opener.swaggerUIRedirectOauth2, then closes itself; with the opener
    // severed (COOP) it throws instead and stays open.
    const popupErrors: string[] = []
    popup.on('pageerror', (error) => popupErrors.push(error.message))
    const closed = popup.waitForEvent('close')
    await popup.getByRole('button', { name: 'Allow' }).click()
    const outcome = await Promise.race([
      closed.then(() => 'closed'),
      popup.waitForEvent('pageerror').then((error) => `error on ${popup.url()}: ${error.message}`),
    ])
    expect(outcome).toBe('closed')
    expect(popupErrors).toEqual([])

    // Swagger UI traded the code for a token at the IdP (its PKCE proof held) and shows it is authorized.
    await modal.locator('button', { hasText: 'Logout' }).waitFor()
    expect(idp.tokenRequests).toEqual([{ origin, verified: true }])
    await modal.locator('button', { hasText: 'Close' }).click()

    const operation = page.locator('#operations-default-my_items_items_me_get')
    await operation.locator('.opblock-summary').click()
    await operation.locator('button', { hasText: 'Try it out' }).click()
    await operation.locator('button', { hasText: 'Execute' }).click()
    const live = operation.locator('.live-responses-table')
    const answer = live.locator('tbody tr.response')
    await answer.waitFor()
    expect(await answer.locator('.response-col_status').innerText()).toBe('200')
    expect(await answer.locator('.response-col_description').innerText()).toContain('"owner": "ada"')
    await app.waitForLine((line) => line === 'CALL GET /items/me ada')
    await page.context().close()

    expect(refusals(gateway)).toEqual([])
  })

  it('a page on a foreign origin is refused its credentialed fetch and its form post', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    const page = await context.newPage()
    await emulateLink(page, { latencyMs: 50 })
    await page.goto(`http://evil.test:${foreignPort}/`)
    const fetched = await page.evaluate(async (url) => {
      try {
        const response = await fetch(url, {
          method: 'POST',
          credentials: 'include',
          headers: { 'content-type': 'application/json' },
          body: '{"name":"planted"}',
        })
        return `status ${response.status}`
      } catch (error) {
        return `blocked: ${(error as Error).message}`
      }
    }, `${origin}/items`)
    expect(fetched).toBe('blocked: Failed to fetch')

    await page.setContent(
      `<form method="post" action="${origin}/items"><input name="name" value="planted"><button>go</button></form>`,
    )
    await Promise.all([page.waitForURL(`${origin}/items`), page.click('button')])
    expect(await page.textContent('body')).toContain('PCL_CORS_ORIGIN_DENIED')
    await context.close()

    expect(app.lines.filter((line) => line.includes('evil.test'))).toEqual([])
    expect(await refusalsOnceLogged(gateway, 2)).toEqual([
      expect.objectContaining({ method: 'OPTIONS', path: '/items', code: 'PCL_CORS_ORIGIN_DENIED' }),
      expect.objectContaining({ method: 'POST', path: '/items', code: 'PCL_CORS_ORIGIN_DENIED' }),
    ])
  })
})
