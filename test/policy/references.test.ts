// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the ${...} references in plain strings are what these tests are about
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { hashPassword } from '../../src/auth/passwords.js'
import { explain, formatExplanation } from '../../src/gateway/explain.js'
import { compilePolicies } from '../../src/policy/compile.js'
import { formatProblem, parsePolicy } from '../../src/policy/load.js'

const set: string[] = []
function setEnv(name: string, value: string) {
  process.env[name] = value
  set.push(name)
}
afterEach(() => {
  for (const name of set.splice(0)) delete process.env[name]
})

describe('${VAR} and ${file:path} in policy files', () => {
  it('uses environment variables and mounted secret files, resolved at load', async () => {
    const directory = await mkdtemp(path.join(tmpdir(), 'pcl-secrets-'))
    const hash = await hashPassword('correct horse battery')
    await writeFile(path.join(directory, 'admin.hash'), `${hash}\n`)
    setEnv('PCL_TEST_UPSTREAM', 'http://127.0.0.1:8080')
    setEnv('PCL_TEST_DOMAIN', 'example.com')
    const file = path.join(directory, 'app.yaml')
    const parsed = parsePolicy(
      file,
      [
        'app: app',
        'hosts: ["app.${PCL_TEST_DOMAIN}"]',
        'upstream: { targets: ["${PCL_TEST_UPSTREAM}"] }',
        'basicAuth: { users: { admin: "${file:admin.hash}" } }',
        'headers: { set: { x-template: "$${kept}" } }',
      ].join('\n'),
    )
    if (!parsed.ok) throw new Error(parsed.problems.map(formatProblem).join('\n'))
    expect(parsed.loaded.policy).toMatchObject({
      hosts: ['app.example.com'],
      upstream: { targets: ['http://127.0.0.1:8080'] },
      basicAuth: { users: { admin: hash } },
      headers: { set: { 'x-template': '${kept}' } },
    })
    // The secret is used, and nothing explain prints shows it.
    const compiled = await compilePolicies([parsed.loaded])
    if (!compiled.ok) throw new Error('compile failed')
    const report = await explain(compiled.apps, {
      method: 'GET',
      url: 'https://app.example.com/',
      ip: '203.0.113.1',
      headers: { authorization: `Basic ${Buffer.from('admin:correct horse battery').toString('base64')}` },
      tlsVersion: 'TLSv1.3',
    })
    expect(report.outcome).toMatch(/^proxied/)
    expect(`${JSON.stringify(report)}${formatExplanation(report)}`).not.toContain(hash.split('$').at(-1))
  })

  it('refuses a missing variable or secret file at the field that names it, without any value', () => {
    setEnv('PCL_TEST_PRESENT', 'not-to-be-printed')
    const parsed = parsePolicy(
      '/nowhere/app.yaml',
      [
        'app: app',
        'hosts: [app.test]',
        'upstream:',
        '  targets: ["${PCL_TEST_ABSENT}"]',
        'basicAuth:',
        '  users: { admin: "${file:missing.hash}" }',
        'headers: { set: { x-a: "${PCL_TEST_PRESENT}${not a name}" } }',
      ].join('\n'),
    )
    expect(parsed.ok).toBe(false)
    const problems = parsed.ok ? [] : parsed.problems.map(formatProblem)
    expect(problems).toEqual([
      '/nowhere/app.yaml:4:13 upstream.targets[0]: ${PCL_TEST_ABSENT} is not set in the environment',
      '/nowhere/app.yaml:6:19 basicAuth.users.admin: cannot read the secret file of ${file:missing.hash} (ENOENT)',
      '/nowhere/app.yaml:7:24 headers.set.x-a: ${not a name} is neither ${NAME} nor ${file:path} (write $${ for a literal ${)',
    ])
    expect(problems.join('\n')).not.toContain('not-to-be-printed')
  })
})
