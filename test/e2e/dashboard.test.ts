import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/browser.js'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

const screenshotDir = path.resolve(import.meta.dirname, '../../test-results')

/** Sums a counter over the samples whose labels match. */
function total(metricsText: string, name: string, labels: Record<string, string>): number {
  const family = parsePrometheusTextFormat(metricsText).find((entry) => entry.name === name)
  return (family?.metrics ?? [])
    .filter((sample) => Object.entries(labels).every(([key, value]) => sample.labels?.[key] === value))
    .reduce((sum, sample) => sum + Number(sample.value), 0)
}

describe('admin dashboard in Chromium', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let browser: Browser

  beforeAll(async () => {
    echo = await echoUpstream()
    gateway = await startGateway({
      policies: {
        'api.yaml': policyYaml({
          app: 'api',
          hosts: ['api.test'],
          target: echo.url,
          tls: '  mode: off',
          extra: 'access: [{ path: /admin/**, deny: all }]\n',
        }),
        'trial.yaml': policyYaml({
          app: 'trial',
          hosts: ['trial.test'],
          target: echo.url,
          tls: '  mode: off',
          extra: 'mode: report-only\naccess: [{ path: /admin/**, deny: all }]\n',
        }),
      },
    })
    const http = (url: string) => fetchOnce(url, { port: gateway.ports.http })
    for (let index = 0; index < 5; index++) await http('http://api.test/ok')
    for (let index = 0; index < 3; index++) await http('http://api.test/admin/x')
    for (let index = 0; index < 2; index++) await http('http://trial.test/admin/x')
    browser = await launchChromium()
  })

  afterAll(async () => {
    await browser?.close()
    await gateway?.stop()
    await echo?.close()
  })

  it('renders every app with the numbers /metrics reports, loads nothing from elsewhere, and is screenshotted', async () => {
    const origin = `http://127.0.0.1:${gateway.ports.admin}`
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } })
    const foreign: string[] = []
    const errors: string[] = []
    page.on('request', (request) => {
      if (!request.url().startsWith(origin)) foreign.push(request.url())
    })
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text())
    })
    page.on('pageerror', (error) => errors.push(error.message))
    await page.goto(`${origin}/dashboard`)
    await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 }).catch(async (error: Error) => {
      const status = await page.textContent('#updated')
      throw new Error(`${error.message}\nstatus: ${status}\npage errors: ${errors.join('\n')}`)
    })

    const metrics = (await fetchOnce(`${origin}/metrics`, { port: gateway.ports.admin })).body
    const shown = async (app: string, field: string) =>
      page.textContent(`[data-app="${app}"] [data-field="${field}"]`)
    // The dashboard refreshes on its own; the page's numbers are read after /metrics, and no request
    // was made in between.
    expect(Number(await shown('api', 'requests'))).toBe(
      total(metrics, 'portcullis_requests_total', { app: 'api' }),
    )
    expect(Number(await shown('api', 'requests'))).toBe(8)
    expect(Number(await shown('api', 'refusals'))).toBe(
      total(metrics, 'portcullis_refusals_total', { app: 'api', enforced: 'true' }),
    )
    expect(Number(await shown('api', 'refusals'))).toBe(3)
    expect(await shown('trial', 'mode')).toBe('report-only')
    expect(await shown('api', 'targets')).toBe('1 / 1')
    expect(await page.textContent('[data-app="api"] tr[data-rule="access[0] /admin/**"]')).toContain('3')

    const recent = await page.locator('#recent tbody tr').allTextContents()
    expect(
      recent.filter((row) => row.includes('PCL_ACCESS_DENIED') && row.includes('GET /admin/x')),
    ).toHaveLength(5)
    expect(recent.filter((row) => row.includes('(report-only)'))).toHaveLength(2)
    expect(await page.locator('[data-app="api"] svg rect').count()).toBeGreaterThan(0)

    expect(foreign).toEqual([])
    expect(errors).toEqual([])
    await mkdir(screenshotDir, { recursive: true })
    const file = path.join(screenshotDir, 'dashboard.png')
    await page.screenshot({ path: file, fullPage: true })
    console.log(`dashboard screenshot: ${file}`)
  })
})
