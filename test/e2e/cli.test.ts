import { describe, expect, it } from 'vitest'
import { makePolicyDir, runCli } from '../support/gateway.js'

describe('portcullis check', () => {
  it('exits 0 for valid files and directories', async () => {
    const result = await runCli(['check', 'policies', 'test/fixtures/valid/minimal.yaml'])
    expect(result).toMatchObject({ code: 0, stdout: '2 policy file(s) valid\n' })
  })

  it('exits 2 and prints file:line:col field: reason for invalid files', async () => {
    const result = await runCli(['check', 'test/fixtures/invalid/unknown-field.yaml'])
    expect(result.code).toBe(2)
    expect(result.stdout).toBe(
      'test/fixtures/invalid/unknown-field.yaml:5:28 upstream.timeouts.raed: unknown field\n' +
        'test/fixtures/invalid/unknown-field.yaml:8:3 tls.min_version: unknown field\n' +
        '2 problem(s) in 1 file(s)\n',
    )
  })

  it('reports a YAML alias bomb as a located problem, without a stack trace', async () => {
    const aliases = Array.from({ length: 120 }, (_, index) => `    x-${index}: *v`).join('\n')
    const directory = await makePolicyDir({
      'bomb.yaml': `app: a\nhosts: [x.test]\nupstream: { targets: ["http://127.0.0.1:1"] }\nheaders:\n  set:\n    x: &v "1"\n${aliases}\n`,
    })
    const result = await runCli(['check', directory])
    expect(result.code).toBe(2)
    expect(result.stdout).toMatch(/bomb\.yaml:1:1 invalid YAML: Excessive alias count/)
    expect(result.stderr).toBe('')
  })

  it('checks a directory as serve would load it, conflicts included', async () => {
    const directory = await makePolicyDir({
      'a.yaml': 'app: a\nhosts: [x.test]\nupstream: { targets: ["http://127.0.0.1:1"] }\n',
      'b.yml': 'app: b\nhosts: [x.test]\nupstream: { targets: ["http://127.0.0.1:1"] }\n',
      'notes.txt': 'not a policy',
    })
    const result = await runCli(['check', directory])
    expect(result.code).toBe(2)
    expect(result.stdout).toContain(
      `${directory}/b.yml:2:9 hosts[0]: host "x.test" is already claimed by ${directory}/a.yaml (app a)`,
    )
  })
})

describe('portcullis --help', () => {
  it.each([
    [['--help'], 'Usage: portcullis <command>'],
    [['serve', '--help'], 'PORTCULLIS_HTTPS_PORT'],
    [
      ['check', '--help'],
      'Exit codes: 0 valid (warnings allowed), 1 production rule errors, 2 invalid files.',
    ],
  ])('%j', async (args, text) => {
    const result = await runCli(args)
    expect(result.code).toBe(0)
    expect(result.stdout).toContain(text)
  })

  it('rejects an unknown command with usage and exit 2', async () => {
    const result = await runCli(['serv'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('Unknown command "serv"')
  })

  it('names the flag and variable of a bad setting', async () => {
    const result = await runCli(['serve', '--http-port', 'eighty'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('--http-port (PORTCULLIS_HTTP_PORT)')
  })
})

describe('portcullis check --production', () => {
  const hardened = [
    'app: shop',
    'hosts: [shop.example.com]',
    'upstream: { targets: ["http://127.0.0.1:1"] }',
    'tls: { mode: "off" }',
    'clientIp: { trustedProxies: [10.0.0.0/8] }',
    'cors: { origins: [https://shop.example.com] }',
    'access: [{ path: /**, deny: [192.0.2.0/24] }]',
    'headers: { crossOriginOpenerPolicy: same-origin, crossOriginResourcePolicy: same-origin }',
    '',
  ].join('\n')

  it('exits 0 for a hardened policy and 1 with file:line:col RULE-ID lines for an unsafe one', async () => {
    const good = await makePolicyDir({ 'shop.yaml': hardened })
    expect(await runCli(['check', '--production', good])).toMatchObject({
      code: 0,
      stdout: '1 policy file(s) valid\n',
    })

    const bad = await makePolicyDir({
      'shop.yaml': hardened.replace('https://shop.example.com', '"*"').replace('10.0.0.0/8', '0.0.0.0/0'),
    })
    const result = await runCli(['check', '--production', bad])
    expect(result.code).toBe(1)
    expect(result.stdout).toContain(
      `${bad}/shop.yaml:5:30 PCL-PROXY-TRUST-ALL error: 0.0.0.0/0 trusts everyone`,
    )
    expect(result.stdout).toContain(
      `${bad}/shop.yaml:6:19 PCL-CORS-WILDCARD error: CORS origin "*" lets any site call this app`,
    )
    expect(result.stdout).toContain('2 production error(s), 0 warning(s)')
    // Without --production only the schema is checked.
    expect((await runCli(['check', bad])).code).toBe(0)
  })

  it('prints JSON with --format json', async () => {
    const bad = await makePolicyDir({
      'shop.yaml': hardened.replace('tls: { mode: "off" }', 'mode: report-only\ntls: { mode: "off" }'),
    })
    const result = await runCli(['check', '--production', '--format', 'json', bad])
    expect(result.code).toBe(1)
    const report = JSON.parse(result.stdout) as {
      valid: boolean
      findings: { rule: string; severity: string; line: number }[]
    }
    expect(report.valid).toBe(true)
    expect(report.findings).toEqual([
      expect.objectContaining({ rule: 'PCL-REPORT-ONLY', severity: 'error', line: 4 }),
    ])
  })

  it('serve --env production refuses to start on a production error, listing every problem', async () => {
    const bad = await makePolicyDir({
      'shop.yaml': hardened.replace('https://shop.example.com', '"*"').replace('10.0.0.0/8', '0.0.0.0/0'),
    })
    const result = await runCli([
      'serve',
      '--policies',
      bad,
      '--env',
      'production',
      '--http-port',
      '0',
      '--https-port',
      '0',
      '--admin-port',
      '0',
      '--state-dir',
      `${bad}/state`,
    ])
    expect(result.code).toBe(2)
    expect(result.stdout).toContain('PCL-PROXY-TRUST-ALL')
    expect(result.stdout).toContain('PCL-CORS-WILDCARD')
    expect(result.stdout).toContain('refusing to start')
  })
})
