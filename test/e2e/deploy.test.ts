import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { runCli } from '../support/gateway.js'

const run = promisify(execFile)
const root = path.resolve(import.meta.dirname, '../..')

interface K8sObject {
  apiVersion: string
  kind: string
  metadata: { name: string }
  data?: Record<string, string>
  spec?: Record<string, unknown>
}

/** The kubernetes-models class for an object: its schema is the Kubernetes OpenAPI one. */
async function validatorFor(object: K8sObject): Promise<(value: K8sObject) => void> {
  const [group, version] = object.apiVersion.includes('/')
    ? (object.apiVersion.split('/') as [string, string])
    : ['', object.apiVersion]
  const module = `kubernetes-models/${group ? `${group}/` : ''}${version}`
  const models = (await import(module)) as Record<string, new (value: K8sObject) => { validate(): void }>
  const Model = models[object.kind]
  if (!Model) throw new Error(`no schema for ${object.apiVersion} ${object.kind}`)
  return (value) => new Model(value).validate()
}

describe('deploy/kubernetes', () => {
  it('renders with kubectl kustomize into objects that the Kubernetes schemas accept', async () => {
    const { stdout } = await run('kubectl', [
      'kustomize',
      path.join(root, 'deploy/kubernetes/overlays/example'),
    ])
    const objects = parseAllDocuments(stdout).map((document) => document.toJS() as K8sObject)
    expect(objects.map((object) => object.kind).sort()).toEqual([
      'ConfigMap',
      'Deployment',
      'Deployment',
      'Namespace',
      'PodDisruptionBudget',
      'Secret',
      'Secret',
      'Service',
      'Service',
    ])
    for (const object of objects) {
      // kustomize wraps long base64 values over lines, which the API server's decoder skips.
      const data = object.kind === 'Secret' && object.data
      if (data) for (const key of Object.keys(data)) data[key] = (data[key] ?? '').replace(/\s/g, '')
      ;(await validatorFor(object))(object)
    }

    const gateway = objects.find(
      (object) => object.kind === 'Deployment' && object.metadata.name === 'portcullis',
    )
    const spec = gateway?.spec as {
      replicas: number
      template: {
        spec: {
          containers: {
            env: { name: string; value?: string }[]
            readinessProbe: unknown
            livenessProbe: unknown
          }[]
        }
      }
    }
    const [container] = spec.template.spec.containers
    const env = Object.fromEntries((container?.env ?? []).map((entry) => [entry.name, entry.value]))
    // The local fallback of the rate limits divides by the replica count: they must agree.
    expect(Number(env.PORTCULLIS_REPLICAS)).toBe(spec.replicas)
    expect(container?.readinessProbe).toMatchObject({ httpGet: { path: '/ready', port: 'probes' } })
    expect(container?.livenessProbe).toMatchObject({ httpGet: { path: '/health', port: 'probes' } })
    const service = objects.find(
      (object) => object.kind === 'Service' && object.metadata.name === 'portcullis',
    )
    expect(service?.spec).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local' })
  })

  it('ships policies that pass check --production as the pods will read them, secrets beside them', async () => {
    const { stdout } = await run('kubectl', [
      'kustomize',
      path.join(root, 'deploy/kubernetes/overlays/example'),
    ])
    const objects = parseAllDocuments(stdout).map((document) => document.toJS() as K8sObject)
    const policies = await mkdtemp(path.join(tmpdir(), 'pcl-k8s-'))
    await mkdir(path.join(policies, 'secrets'))
    const configMap = objects.find((object) => object.kind === 'ConfigMap')
    for (const [name, text] of Object.entries(configMap?.data ?? {}))
      await writeFile(path.join(policies, name), text)
    const secret = objects.find((object) => object.metadata.name.startsWith('portcullis-policy-secrets'))
    for (const [name, encoded] of Object.entries(secret?.data ?? {}))
      await writeFile(path.join(policies, 'secrets', name), Buffer.from(encoded, 'base64'))
    const checked = await runCli([
      'check',
      '--production',
      '--redis',
      'redis://portcullis-redis:6379',
      '--replicas',
      '3',
      policies,
    ])
    expect(checked.stdout).toMatch(/policy file\(s\) valid/)
    expect(checked.code).toBe(0)
  })
})

describe('deploy/compose', () => {
  it('parses, and its gateway serves policies that pass check with the variables it sets', async () => {
    const compose = parseYaml(await readFile(path.join(root, 'deploy/compose/compose.yaml'), 'utf8')) as {
      services: Record<string, { environment?: Record<string, string>; volumes?: string[]; build?: string }>
    }
    expect(Object.keys(compose.services).sort()).toEqual(['app', 'gateway', 'redis'])
    const gateway = compose.services.gateway
    expect(gateway?.build).toBe('../..')
    const mount = gateway?.volumes?.find((volume) => volume.endsWith(':/etc/portcullis/policies:ro'))
    expect(gateway?.environment?.PORTCULLIS_POLICIES).toBe('/etc/portcullis/policies')
    const source = path.resolve(root, 'deploy/compose', mount?.split(':')[0] ?? 'missing')
    const checked = await runCli(['check', source], gateway?.environment)
    expect(checked.stdout).toMatch(/1 policy file\(s\) valid/)
  })
})
