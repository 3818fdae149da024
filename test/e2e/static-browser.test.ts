import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { brotliCompressSync } from 'node:zlib'
import type { Browser, Response } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/browser.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'

const indexHtml = [
  '<!doctype html><html><head><title>spa</title>',
  '<script type="module" src="/assets/app.3f2a.js"></script></head>',
  '<body><nav><a id="to-profile" href="/settings/profile">profile</a></nav><main id="view">no script</main></body></html>',
].join('')

/** A client-side router, as a bundler would hash it: renders the path, follows links with pushState. */
const appJs = `${'// '.padEnd(2048, 'padding so the bundle is worth compressing ')}
const render = () => {
  document.querySelector('#view').textContent = 'route ' + location.pathname
}
document.addEventListener('click', (event) => {
  const link = event.target.closest('a')
  if (!link) return
  event.preventDefault()
  history.pushState({}, '', link.getAttribute('href'))
  render()
})
addEventListener('popstate', render)
render()
`

/**
 * A single-page app as Chromium uses it from a `static` entry with a fallback: its hashed module script
 * (precompressed, so only the right Content-Type makes it run), a client-side navigation, and a reload
 * of the client route, which only the fallback can answer.
 */
describe('a single-page app from static files, in a real browser (Chromium)', () => {
  let gateway: RunningGateway
  let browser: Browser

  beforeAll(async () => {
    const root = path.join(await mkdtemp(path.join(tmpdir(), 'pcl-spa-browser-')), 'dist')
    await mkdir(path.join(root, 'assets'), { recursive: true })
    await writeFile(path.join(root, 'index.html'), indexHtml)
    await writeFile(path.join(root, 'assets', 'app.3f2a.js'), appJs)
    await writeFile(path.join(root, 'assets', 'app.3f2a.js.br'), brotliCompressSync(appJs))
    gateway = await startGateway({
      policies: {
        'spa.yaml': [
          'app: spa',
          'hosts: [spa.test]',
          'upstream: { targets: [http://127.0.0.1:9] }',
          'static:',
          `  - { path: /, dir: ${root}, cacheControl: "public, max-age=31536000, immutable", fallback: /index.html }`,
        ].join('\n'),
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
  })

  it('loads its hashed script, navigates a client route and reloads it through the fallback', async () => {
    const page = await browser.newPage()
    const origin = `https://spa.test:${gateway.ports.https}`
    const script = page.waitForResponse((response) => response.url().endsWith('/assets/app.3f2a.js'))
    const home = (await page.goto(`${origin}/`)) as Response
    expect(home.status()).toBe(200)
    await page.waitForFunction(() => document.querySelector('#view')?.textContent === 'route /')
    const scriptHeaders = await (await script).allHeaders()
    expect(scriptHeaders['content-encoding']).toBe('br')
    expect(scriptHeaders['content-type']).toBe('application/javascript; charset=utf-8')

    await page.click('#to-profile')
    await page.waitForFunction(
      () => document.querySelector('#view')?.textContent === 'route /settings/profile',
    )
    expect(page.url()).toBe(`${origin}/settings/profile`)

    const reloaded = (await page.reload()) as Response
    expect(reloaded.status()).toBe(200)
    expect((await reloaded.allHeaders())['cache-control']).toBe('no-cache')
    await page.waitForFunction(
      () => document.querySelector('#view')?.textContent === 'route /settings/profile',
    )

    // A missing hashed asset is a 404 for the browser too, never the HTML.
    const missing = await page.evaluate(async () => {
      const response = await fetch('/assets/app.0000.js')
      return `${response.status} ${response.headers.get('content-type')}`
    })
    expect(missing).toBe('404 application/json; charset=utf-8')
    await page.close()
  })
})
