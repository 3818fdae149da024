import { describe, expect, it } from 'vitest'
import { AccessGuard } from '../../src/guards/access.js'
import { canonicalPath } from '../../src/net/canonical-path.js'
import { accessRuleSchema } from '../../src/policy/schema.js'

const guard = new AccessGuard(
  [
    { path: '/studio/**', allow: ['10.0.0.0/8'] },
    { path: '/sql', deny: 'all', respond: 404 },
    { path: '/workspaces/*/db/migrate', methods: ['POST'], allow: ['192.168.0.0/16'] },
    { path: '/metrics', deny: ['203.0.113.0/24'] },
    { path: '/CaseSensitive', deny: 'all', caseInsensitive: false },
    { path: '/reports/**', methods: ['GET'], allow: ['10.0.0.0/8'] },
  ].map((rule) => accessRuleSchema.parse(rule)),
)

function check(method: string, rawPath: string, clientIp: string) {
  const canonical = canonicalPath(rawPath)
  if (!canonical.ok) throw new Error(canonical.reason)
  return guard.check({
    method,
    claims: undefined,
    path: canonical.path,
    rewritten: undefined,
    identity: { ip: clientIp, via: 'peer', chain: [clientIp], peerTrusted: false },
  })
}

describe('access rules', () => {
  it.each([
    ['GET', '/studio', '10.1.1.1', 'allow'],
    ['GET', '/studio/tables', '10.1.1.1', 'allow'],
    ['GET', '/studio', '198.51.100.1', 'PCL_ACCESS_DENIED'],
    ['GET', '/studio/', '198.51.100.1', 'PCL_ACCESS_DENIED'],
    ['GET', '/Studio/x', '198.51.100.1', 'PCL_ACCESS_DENIED'],
    ['GET', '/studios', '198.51.100.1', 'allow'],
    ['GET', '/sql', '10.1.1.1', 'PCL_NOT_FOUND'],
    ['POST', '/SQL/', '10.1.1.1', 'PCL_NOT_FOUND'],
    ['POST', '/workspaces/42/db/migrate', '198.51.100.1', 'PCL_ACCESS_DENIED'],
    ['POST', '/workspaces/42/db/migrate', '192.168.3.3', 'allow'],
    ['GET', '/workspaces/42/db/migrate', '198.51.100.1', 'allow'],
    ['POST', '/workspaces/42/43/db/migrate', '198.51.100.1', 'allow'],
    ['GET', '/metrics', '203.0.113.9', 'PCL_ACCESS_DENIED'],
    ['GET', '/metrics', '198.51.100.1', 'allow'],
    ['GET', '/CaseSensitive', '1.1.1.1', 'PCL_ACCESS_DENIED'],
    ['GET', '/casesensitive', '1.1.1.1', 'allow'],
    ['GET', '/other', '1.1.1.1', 'allow'],
    // Routers run a GET handler for HEAD: a rule on GET covers HEAD.
    ['GET', '/reports/q3', '1.1.1.1', 'PCL_ACCESS_DENIED'],
    ['HEAD', '/reports/q3', '1.1.1.1', 'PCL_ACCESS_DENIED'],
    ['POST', '/reports/q3', '1.1.1.1', 'allow'],
  ])('%s %s from %s → %s', (method, path, ip, expected) => {
    const decision = check(method, path, ip)
    expect(decision.kind === 'deny' ? decision.code : decision.kind).toBe(expected)
  })

  it('names the rule that decided', () => {
    expect(check('GET', '/studio/x', '1.1.1.1')).toMatchObject({ rule: 'access[0] /studio/**' })
  })
})
