import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Browser } from 'playwright-core'
import { launchChromium } from './browser.js'
import type { RunningGateway } from './gateway.js'

/** Chromium for the real-apps tests: every `*.test` name is 127.0.0.1, certificates are not judged. */
export function launchAppBrowser(): Promise<Browser> {
  return launchChromium([
    '--disable-quic',
    '--disable-component-update',
    '--disable-sync',
    '--host-resolver-rules=MAP *.test 127.0.0.1',
    // The gateway's internal CA and the stand-in IdP's certificate are not what is tested here.
    '--ignore-certificate-errors',
  ])
}

/** The gateway's own refusals so far: every access line with a `code`, in the fields that tell why. */
export function refusals(gateway: RunningGateway): Record<string, unknown>[] {
  return gateway.logs
    .filter((line) => line.code !== undefined)
    .map(({ method, path, status, code, rule, reason }) => ({ method, path, status, code, rule, reason }))
}

/**
 * The refusals once `count` of them are logged, or what is logged after the wait: a refusal's log line
 * can trail the answer the browser already acted on.
 */
export async function refusalsOnceLogged(
  gateway: RunningGateway,
  count: number,
): Promise<Record<string, unknown>[]> {
  await gateway.waitForLog(() => refusals(gateway).length >= count).catch(() => undefined)
  return refusals(gateway)
}

/**
 * A plain HTTP site for pages of other origins (a foreign site): `files` on their paths, an empty page
 * on every other one.
 */
export async function blankSite(
  files: Record<string, { type: string; body: string }> = {},
): Promise<{ port: number; stop(): Promise<void> }> {
  const server: Server = createServer((request, response) => {
    const file = files[request.url ?? '/']
    if (file) return response.writeHead(200, { 'content-type': file.type }).end(file.body)
    response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>other site</title>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
