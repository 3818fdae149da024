import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

describe('probes apart from the admin page, and the admin token', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let probePort: number
  const token = 'a-long-admin-token-0123456789'

  beforeAll(async () => {
    echo = await echoUpstream()
    const secrets = await mkdtemp(path.join(tmpdir(), 'pcl-admin-'))
    const tokenFile = path.join(secrets, 'admin-token')
    await writeFile(tokenFile, `${token}\n`)
    gateway = await startGateway({
      policies: { 'api.yaml': policyYaml({ app: 'api', hosts: ['api.test'], target: echo.url }) },
      args: ['--admin-token-file', tokenFile, '--probe-port', '0', '--probe-listen', '127.0.0.1'],
    })
    const listening = await gateway.waitForLog((line) => line.msg === 'gateway listening')
    probePort = Number(listening.probe)
  })

  afterAll(async () => {
    await gateway?.stop()
    await echo?.close()
  })

  const get = (port: number, target: string, authorization?: string) =>
    fetchOnce(`http://127.0.0.1${target}`, { port, headers: authorization ? { authorization } : {} })

  it('serves /health and /ready on the probe listener, and nothing else there', async () => {
    expect(probePort).toBeGreaterThan(0)
    expect((await get(probePort, '/health')).json()).toMatchObject({ status: 'healthy' })
    expect((await get(probePort, '/ready')).status).toBe(200)
    expect((await get(probePort, '/metrics')).status).toBe(404)
    expect((await get(probePort, '/dashboard')).status).toBe(404)
  })

  it('asks for the token on /metrics and the dashboard, as a bearer token or a Basic password', async () => {
    const refused = await get(gateway.ports.admin, '/metrics')
    expect(refused.status).toBe(401)
    expect(refused.headers['www-authenticate']).toMatch(/^Bearer realm="Portcullis admin"/)
    expect(refused.body).not.toContain('portcullis_requests_total')
    expect((await get(gateway.ports.admin, '/dashboard/data', 'Bearer wrong-token-0123456789')).status).toBe(
      401,
    )
    expect((await get(gateway.ports.admin, '/metrics', `Bearer ${token}`)).body).toContain(
      'portcullis_requests_total',
    )
    const basic = `Basic ${Buffer.from(`admin:${token}`).toString('base64')}`
    expect((await get(gateway.ports.admin, '/dashboard', basic)).status).toBe(200)
    // The probes stay open on the admin listener too.
    expect((await get(gateway.ports.admin, '/health')).status).toBe(200)
  })
})
