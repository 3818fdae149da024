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
    [['check', '--help'], 'Exit codes: 0 valid, 2 invalid files.'],
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
