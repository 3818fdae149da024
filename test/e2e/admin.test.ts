// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policies name ${VAR} and ${file:path} references in plain strings
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashPassword } from '../../src/auth/passwords.js'
import { fetchOnce } from '../support/clients.js'
import { policyYaml, type RunningGateway, startGateway } from '../support/gateway.js'
import { echoUpstream, type Upstream } from '../support/upstreams.js'

describe('probes apart from the admin page, and the admin token', () => {
  let gateway: RunningGateway
  let echo: Upstream
  let probePort: number
  let hash: string
  const token = 'a-long-admin-token-0123456789'

  beforeAll(async () => {
    echo = await echoUpstream()
    const secrets = await mkdtemp(path.join(tmpdir(), 'pcl-admin-'))
    const tokenFile = path.join(secrets, 'admin-token')
    await writeFile(tokenFile, `${token}\n`)
    // The app's login hash is a mounted secret, named in the policy, never written in it.
    hash = await hashPassword('correct horse battery')
    await writeFile(path.join(secrets, 'admin.hash'), `${hash}\n`)
    gateway = await startGateway({
      policies: {
        'api.yaml': policyYaml({
          app: 'api',
          hosts: ['api.test'],
          target: '"${API_UPSTREAM}"',
          extra: `basicAuth: { paths: [/private/**], users: { admin: "\${file:${path.join(secrets, 'admin.hash')}}" } }`,
        }),
      },
      env: { API_UPSTREAM: echo.url },
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

  it('uses the secrets and variables a policy names, and never logs them', async () => {
    const login = `Basic ${Buffer.from('admin:correct horse battery').toString('base64')}`
    const https = (target: string, authorization?: string) =>
      fetchOnce(`https://api.test${target}`, {
        port: gateway.ports.https,
        headers: authorization ? { authorization } : {},
      })
    expect((await https('/private/x')).status).toBe(401)
    expect((await https('/private/x', login)).status).toBe(200)
    // A reload that names a variable nobody set is refused at its field, and logs no value.
    await gateway.writePolicy(
      'other.yaml',
      policyYaml({ app: 'other', hosts: ['other.test'], target: '"${NOT_SET_ANYWHERE}"' }),
    )
    const refused = await gateway.waitForLog((line) => String(line.msg).startsWith('policy reload refused: '))
    expect(String(refused.msg)).toMatch(
      /other\.yaml:\d+:\d+ upstream\.targets\[0\]: \$\{NOT_SET_ANYWHERE\} is not set/,
    )
    const logged = JSON.stringify(gateway.logs)
    expect(logged).not.toContain(hash.split('$').at(-1))
    expect(logged).not.toContain('correct horse battery')
  })
})
