import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blankSite, launchAppBrowser, refusals } from '../support/app-browser.js'
import { type RunningGateway, startGateway, timeoutScale } from '../support/gateway.js'
import { delayedLink, emulateLink } from '../support/link.js'
import { deployable } from '../support/packs.js'
import {
  anonKey,
  credentials,
  type PgStackStandIn,
  startPgStackStandIn,
} from './supabase/pgstack-stand-in.js'

/**
 * supabase-js v2 (its UMD build from npm, in the page) on a front end of its own origin, calling pgStack
 * behind the pgStack pack across origins: every preflight carries exactly the headers the real client
 * sends. The user signs in, lists todos with their count, saves one (an upsert), uploads an avatar and
 * sees it (an image of the API's origin on the front end's), stores a settings file and goes live on a
 * Realtime channel.
 */

const host = 'db.test'
const bundle = path.join(
  path.dirname(createRequire(import.meta.url).resolve('@supabase/supabase-js/package.json')),
  'dist/umd/supabase.js',
)
// A 1×1 PNG.
const png = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
  'base64',
)

describe('supabase-js on another origin calling pgStack behind the pgStack pack, over a 50 ms link', () => {
  const running: { stop(): Promise<unknown> }[] = []
  let gateway: RunningGateway
  let api: PgStackStandIn
  let browser: Browser
  let apiOrigin: string
  let frontEnd: string
  let foreign: string

  beforeAll(async () => {
    api = await startPgStackStandIn()
    running.push(api)
    const link = await delayedLink(25)
    running.push({ stop: () => link.close() })
    apiOrigin = `https://${host}:${link.port}`
    const html = (await readFile(path.join(import.meta.dirname, 'supabase/front-end.html'), 'utf8'))
      .replace('__API__', apiOrigin)
      .replace('__ANON_KEY__', anonKey)
    const files = {
      '/': { type: 'text/html; charset=utf-8', body: html },
      '/supabase.js': { type: 'text/javascript', body: await readFile(bundle, 'utf8') },
    }
    // The app's front end, and a foreign site serving a copy of it.
    const site = await blankSite(files)
    running.push(site)
    frontEnd = `http://app.test:${site.port}`
    const copy = await blankSite(files)
    running.push(copy)
    foreign = `http://evil.test:${copy.port}`
    const policy = await deployable('pgstack', [api.url], (doc) => {
      doc.setIn(['hosts'], [host])
      doc.setIn(['tls'], { mode: 'internal' })
      doc.setIn(['cors', 'origins'], [frontEnd])
    })
    gateway = await startGateway({
      policies: { 'pgstack.yaml': policy },
      args: ['--log-headers', 'origin,access-control-request-headers,access-control-request-method'],
    })
    running.push(gateway)
    link.retarget(gateway.ports.https)
    browser = await launchAppBrowser()
    running.push({ stop: () => browser.close() })
  }, 60_000)

  afterAll(async () => {
    for (const thing of running.reverse()) await thing.stop().catch(() => undefined)
  })

  async function openFrontEnd(page: Page, origin: string): Promise<void> {
    await emulateLink(page, { latencyMs: 50 })
    await page.goto(`${origin}/`)
    await page.getByLabel('Email').fill(credentials.email)
    await page.getByLabel('Password').fill(credentials.password)
    await page.getByRole('button', { name: 'Sign in' }).click()
  }

  /** What the browser asked in its preflights, and the gateway's answer. */
  const preflights = () =>
    gateway.logs
      .filter((line) => line.method === 'OPTIONS')
      .map((line) => {
        const headers = line.headers as Record<string, string>
        return `${headers['access-control-request-method']} ${line.path} [${headers['access-control-request-headers'] ?? ''}] ${line.status}`
      })

  it('sign-in, a select with its count, an upsert, two storage uploads, the avatar shown and a Realtime channel all work', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    context.setDefaultTimeout(15_000 * timeoutScale)
    try {
      const page = await context.newPage()
      await openFrontEnd(page, frontEnd)
      await page.locator('#user:not(:empty)').waitFor()
      expect(await page.locator('#user').innerText()).toBe(`Signed in as ${credentials.email}`)

      await page.getByRole('button', { name: 'Load todos' }).click()
      await page.locator('#todos:not(:empty)').waitFor()
      expect(await page.locator('#todos').innerText()).toBe('2 todos: milk, eggs')

      await page.getByLabel('Todo').fill('bread')
      await page.getByRole('button', { name: 'Save todo' }).click()
      await page.locator('#saved:not(:empty)').waitFor()
      expect(await page.locator('#saved').innerText()).toBe('Saved #3 bread')

      await page.getByLabel('Avatar').setInputFiles({ name: 'ada.png', mimeType: 'image/png', buffer: png })
      await page.getByRole('button', { name: 'Upload avatar' }).click()
      await page.locator('#uploaded:not(:empty)').waitFor()
      // The image is the API's, shown on the front end's origin: Cross-Origin-Resource-Policy must allow it.
      expect(await page.locator('#uploaded').innerText()).toBe('Avatar avatars/ada.png: 1×1')

      await page.getByRole('button', { name: 'Save settings' }).click()
      await page.locator('#stored:not(:empty)').waitFor()
      expect(await page.locator('#stored').innerText()).toBe('Settings stored at avatars/ada/settings.json')

      await page.getByRole('button', { name: 'Go live' }).click()
      await page.locator('#channel', { hasText: 'SUBSCRIBED' }).waitFor()
    } finally {
      await context.close()
    }

    // What pgStack received: the client's own headers, the signed-in user's token, the stored objects.
    const seen = (method: string, prefix: string) =>
      api.received.find((request) => request.method === method && request.url.startsWith(prefix))?.headers
    expect(seen('POST', '/auth/v1/token')).toMatchObject({
      apikey: anonKey,
      'x-supabase-api-version': expect.any(String),
      'x-client-info': expect.stringMatching(/^supabase-js\/2\./),
    })
    expect(seen('GET', '/rest/v1/todos')).toMatchObject({
      prefer: 'count=exact',
      authorization: expect.stringMatching(/^Bearer /),
    })
    expect(seen('POST', '/rest/v1/todos')?.prefer).toContain('resolution=merge-duplicates')
    expect(seen('POST', '/storage/v1/object/avatars/ada.png')).toMatchObject({ 'x-upsert': 'true' })
    expect(seen('POST', '/storage/v1/object/avatars/ada/settings.json')).toMatchObject({
      'cache-control': 'max-age=3600',
      'x-metadata': expect.any(String),
    })
    expect(api.objects.get('avatars/ada.png')?.body).toEqual(png)
    expect(api.joins).toEqual([{ topic: 'realtime:room:lobby', origin: frontEnd }])

    // Every preflight was answered 204 by the gateway, whatever headers supabase-js asked for.
    expect(preflights().length).toBeGreaterThanOrEqual(5)
    expect(preflights().filter((line) => !line.endsWith(' 204'))).toEqual([])
    expect(refusals(gateway)).toEqual([])
  })

  it('the same front end copied to a foreign origin can neither sign in, write, upload nor go live', async () => {
    const before = api.received.length
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    context.setDefaultTimeout(15_000 * timeoutScale)
    try {
      const page = await context.newPage()
      await openFrontEnd(page, foreign)
      await page.locator('#user:not(:empty)').waitFor()
      expect(await page.locator('#user').innerText()).toMatch(/^Failed: AuthRetryableFetchError: /)

      await page.getByLabel('Todo').fill('planted')
      await page.getByRole('button', { name: 'Save todo' }).click()
      await page.locator('#saved:not(:empty)').waitFor()
      expect(await page.locator('#saved').innerText()).toMatch(/^Failed: /)

      await page.getByRole('button', { name: 'Save settings' }).click()
      await page.locator('#stored:not(:empty)').waitFor()
      expect(await page.locator('#stored').innerText()).toMatch(/^Failed: /)

      await page.getByRole('button', { name: 'Go live' }).click()
      await page.locator('#channel:not(:empty)').waitFor()
      expect(await page.locator('#channel').innerText()).not.toBe('SUBSCRIBED')
    } finally {
      await context.close()
    }
    expect(api.received.slice(before).filter((request) => request.method !== 'GET')).toEqual([])
    expect(api.joins.filter((join) => join.origin === foreign)).toEqual([])
    // Only refusals of the foreign origin, and each kind of attempt refused (the WebSocket's line can
    // trail the error the page saw).
    await gateway.waitForLog((line) => line.code === 'PCL_WS_ORIGIN_DENIED')
    const kinds = new Set(refusals(gateway).map((line) => `${line.method} ${line.path} ${line.code}`))
    expect(kinds).toEqual(
      new Set([
        'OPTIONS /auth/v1/token PCL_CORS_ORIGIN_DENIED',
        'OPTIONS /rest/v1/todos PCL_CORS_ORIGIN_DENIED',
        'OPTIONS /storage/v1/object/avatars/ada/settings.json PCL_CORS_ORIGIN_DENIED',
        'GET /realtime/v1/websocket PCL_WS_ORIGIN_DENIED',
      ]),
    )
    expect(refusals(gateway).every((line) => String(line.reason).includes(foreign))).toBe(true)
  })
})
