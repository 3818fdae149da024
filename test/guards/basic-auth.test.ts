import { describe, expect, it } from 'vitest'
import { hashPassword, verifyPassword } from '../../src/auth/passwords.js'
import { BasicAuthGuard } from '../../src/guards/basic-auth.js'
import { policySchema } from '../../src/policy/schema.js'

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

describe('password hashes', () => {
  it('verifies the right password only, with a fresh salt each time', async () => {
    const first = await hashPassword('correct horse')
    const second = await hashPassword('correct horse')
    expect(first).toMatch(/^scrypt\$16384\$8\$1\$/)
    expect(first).not.toBe(second)
    expect(await verifyPassword('correct horse', first)).toBe(true)
    expect(await verifyPassword('correct horse!', first)).toBe(false)
    expect(await verifyPassword('correct horse', 'plain-text')).toBe(false)
  })
})

describe('BasicAuthGuard', async () => {
  const users = { admin: await hashPassword('correct horse'), 'ops:x': 'unused' }
  const guard = new BasicAuthGuard({
    realm: 'Superposition "admin"',
    users: { admin: users.admin },
    paths: ['/**'],
    except: ['/health'],
  })
  const check = (authorization: string | undefined) =>
    guard.check({ headers: authorization === undefined ? {} : { authorization } })

  it('asks for credentials with a 401 challenge, and lets the right ones through', async () => {
    expect(await check(undefined)).toMatchObject({
      kind: 'deny',
      code: 'PCL_AUTH_REQUIRED',
      rule: 'basicAuth',
      headers: { 'www-authenticate': 'Basic realm="Superposition admin", charset="UTF-8"' },
    })
    expect(await check(basic('admin', 'correct horse'))).toEqual({ kind: 'allow' })
    expect(await check(basic('admin', 'correct horse'))).toEqual({ kind: 'allow' })
    expect((await check(basic('admin', 'wrong'))).kind).toBe('deny')
    expect((await check(basic('nobody', 'correct horse'))).kind).toBe('deny')
    expect((await check('Bearer abc')).kind).toBe('deny')
    expect((await check('Basic !!!not-base64')).kind).toBe('deny')
  })

  it('leaves the excepted paths open', async () => {
    expect(guard.applies({ path: '/workspaces', rewritten: undefined })).toBe(true)
    expect(guard.applies({ path: '/health', rewritten: undefined })).toBe(false)
  })

  it('the schema refuses plain passwords and user names with a colon', () => {
    const parsed = policySchema.safeParse({
      app: 'a',
      hosts: ['a.test'],
      upstream: { targets: ['http://127.0.0.1:1'] },
      basicAuth: { users: { admin: 'hunter22', 'ops:x': users.admin } },
    })
    expect(parsed.success).toBe(false)
    const messages = parsed.error?.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`) ?? []
    expect(messages.join('\n')).toMatch(
      /basicAuth\.users\.admin: must be a hash from `portcullis hash-password`/,
    )
    expect(messages.join('\n')).toMatch(/must not contain ":"/)
  })
})
