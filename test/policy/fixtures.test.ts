import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { compilePolicies } from '../../src/policy/compile.js'
import { formatProblem, loadPolicySet, parsePolicy } from '../../src/policy/load.js'

const invalidDir = 'test/fixtures/invalid'

/** Loads files as `serve` and `check` do and renders their problems as the user reads them. */
async function problemsOf(files: string[]): Promise<string> {
  const set = await loadPolicySet(files)
  const compiled = set.problems.length === 0 ? await compilePolicies(set.policies) : undefined
  const problems = compiled && !compiled.ok ? compiled.problems : set.problems
  return problems.map(formatProblem).join('\n')
}

describe('policy files with errors (golden files: <name>.yaml beside <name>.expected)', async () => {
  const fixtures = (await readdir(invalidDir)).filter((name) => name.endsWith('.yaml'))
  it.each(fixtures)('%s', async (name) => {
    const expected = await readFile(path.join(invalidDir, name.replace(/\.yaml$/, '.expected')), 'utf8')
    expect(await problemsOf([path.join(invalidDir, name)])).toBe(expected.trimEnd())
  })
})

describe('conflicts across files', () => {
  it('names both files when two claim the same host or app id', async () => {
    expect(await problemsOf(['test/fixtures/conflict/a.yaml', 'test/fixtures/conflict/b.yaml'])).toBe(
      [
        'test/fixtures/conflict/b.yaml:1:6 app: app id "shop" is already used by test/fixtures/conflict/a.yaml',
        'test/fixtures/conflict/b.yaml:2:9 hosts[0]: host "shop.example.com" is already claimed by test/fixtures/conflict/a.yaml (app shop)',
        'test/fixtures/conflict/b.yaml:2:45 hosts[2]: host "beta.example.com" is listed twice',
      ].join('\n'),
    )
  })
})

describe('valid policies', () => {
  it('the bundled example loads with its defaults filled in', async () => {
    const set = await loadPolicySet(['policies/example.yaml'])
    expect(set.problems).toEqual([])
    expect(set.policies[0]?.policy).toMatchObject({
      app: 'demo',
      upstream: { timeouts: { connect: 2000, headers: 30_000, idle: 60_000 } },
      tls: { mode: 'internal', minVersion: 'TLSv1.2', profile: 'intermediate' },
      hsts: { maxAge: 31_536_000, includeSubDomains: false, preload: false },
    })
  })

  it('understands the former names of the headers and idle timeouts, but not both names at once', () => {
    const timeouts = (given: Record<string, string>) =>
      parsePolicy(
        't.yaml',
        JSON.stringify({
          app: 't',
          hosts: ['t.test'],
          upstream: { targets: ['http://127.0.0.1:1'], timeouts: given },
        }),
      )
    expect(timeouts({ read: '5s', write: '2m' })).toMatchObject({
      ok: true,
      loaded: { policy: { upstream: { timeouts: { headers: 5000, idle: 120_000 } } } },
    })
    expect(timeouts({ read: '5s', headers: '6s' })).toMatchObject({
      ok: false,
      problems: [
        { field: 'upstream.timeouts.read', message: 'is the former name of headers: set only headers' },
      ],
    })
  })

  it('fills defaults for a minimal file and folds host case', async () => {
    const set = await loadPolicySet(['test/fixtures/valid/minimal.yaml'])
    expect(set.problems).toEqual([])
    expect(set.policies[0]?.policy).toMatchObject({
      app: 'minimal',
      hosts: ['minimal.example.com', '*.minimal.example.com'],
      upstream: {
        targets: ['http://127.0.0.1:8080'],
        timeouts: { connect: 5000, headers: 30_000, idle: 60_000 },
      },
      tls: { mode: 'internal', minVersion: 'TLSv1.2', profile: 'intermediate' },
      hsts: { maxAge: 31_536_000, includeSubDomains: false, preload: false },
    })
  })
})
