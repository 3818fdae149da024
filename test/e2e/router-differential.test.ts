import type { ClientHttp2Session } from 'node:http2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { http2Session, type RawAnswer, rawHttp1, rawHttp2 } from '../support/raw-requests.js'
import { expressApp, type FrameworkApp, fastapiApp, fastifyApp, goApp } from '../support/routers.js'

/**
 * The differential test of the canonical path: a corpus of request targets, each built to make some
 * common router resolve a restricted path that a naive gateway judges as another, sent through the
 * gateway to real frameworks (Fastify with every router normalisation on, Express 5, FastAPI on
 * uvicorn, Go's ServeMux) over HTTP/1.1 and HTTP/2. No restricted handler may ever run, and a login
 * limit of 3 may never admit a fourth login. The same corpus sent straight to the frameworks shows
 * that it bites: there, restricted handlers do run.
 */
const restrictedBases = ['/admin', '/admin/x', '/internal', '/sql']

/** Encodes a string's UTF-8 bytes as latin1 characters: what a raw byte on the wire looks like. */
const wireBytes = (text: string) => Buffer.from(text, 'utf8').toString('latin1')

function mutations(base: string): string[] {
  const rest = base.slice(1)
  const first = rest.charAt(0)
  const hex = first.charCodeAt(0).toString(16)
  return [
    base,
    // fragments: Express, Fastify and uvicorn cut the path at '#'
    `${base}#`,
    `${base}#x`,
    `${base}/#`,
    `${base}?#`,
    `${base}?a=1#b`,
    `${base}#/../../public`,
    `/public#/..${base}`,
    // ';' parameters: Tomcat-style servers drop them before resolving dots; Fastify can cut there
    `${base};`,
    `${base};x=1`,
    `${base};/`,
    `/x/..;${base}`,
    `/.;${base}`,
    `/;${base}`,
    `/public/..;${base}`,
    `/x/%2e%2e;${base}`,
    `${base.replace(/\/([^/]+)$/, '/$1;jsessionid=1')}`,
    // dot segments, literal and encoded
    `/.${base}`,
    `/x/..${base}`,
    `/public/..${base}`,
    `/x/%2e%2e${base}`,
    `/x/.%2e${base}`,
    `/x/%2E.${base}`,
    `/%2e${base}`,
    `${base}/.`,
    `${base}/x/..`,
    `${base}/%2e`,
    // slashes
    `/${base}`,
    `//${base}`,
    `${base}//`,
    `${base}/`,
    `/%2f${rest}`,
    `${base}%2f`,
    `${base}%2F`,
    `/%5c${rest}`,
    `/\\${rest}`,
    `${base}\\`,
    // case
    base.toUpperCase(),
    `/${first.toUpperCase()}${rest.slice(1)}`,
    // percent-encoding
    `/%${hex}${rest.slice(1)}`,
    `/%${hex.toUpperCase()}${rest.slice(1)}`,
    `/%25${hex}${rest.slice(1)}`,
    `${base}%00`,
    `${base}%20`,
    `${base}%09`,
    `${base}%0a`,
    `${base}.`,
    `${base}%2e`,
    `${base}~`,
    `/%c0%af${rest}`,
    `${base}%c0%ae`,
    `${base}%ff`,
    `/%EF%BD%81${rest.slice(1)}`,
    wireBytes(`/ａ${rest.slice(1)}`),
    wireBytes(`${base}é`),
    // queries and what only the target line can carry
    `${base}?`,
    `${base}?x=/../public`,
    `/public/..${base}?x`,
    `${base} HTTP/1.1\r\nX: y`,
    `${base}\t`,
    `http://x.test${base}`,
    `*`,
  ]
}

const corpus = [...new Set(restrictedBases.flatMap(mutations))]

const loginCorpus = [
  '/login#',
  '/login#x',
  '/login;',
  '/login;x',
  '/x/..;/login',
  '/LOGIN',
  '/Login',
  '/login/',
  '//login',
  '/./login',
  '/x/../login',
  '/%6cogin',
  '/login?x',
  '/login/.',
  '/login',
  '/login',
  '/login',
  '/login',
]

const frameworks = [fastifyApp, expressApp, fastapiApp, goApp]

describe('router differential: restricted handlers of real frameworks never run through the gateway', () => {
  let apps: FrameworkApp[] = []
  let gateway: RunningGateway
  const sessions = new Map<string, ClientHttp2Session>()

  const policy = (app: FrameworkApp) => `
app: ${app.name}
hosts: [${app.name}.test]
upstream: { targets: ["${app.url}"] }
access:
  - { path: /admin/**, deny: all }
  - { path: /internal, deny: all, respond: 404 }
  - { path: /sql, deny: all }
rateLimits:
  - { name: login, match: { path: /login, methods: [POST] }, key: ip, limit: 3, window: 1h }
`

  beforeAll(async () => {
    // Whatever started is stopped in afterAll, even when another framework failed to start.
    const started = await Promise.allSettled(frameworks.map((start) => start()))
    apps = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))
    const failed = started.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
    gateway = await startGateway({
      policies: Object.fromEntries(apps.map((app) => [`${app.name}.yaml`, policy(app)])),
    })
  }, 120_000)

  afterAll(async () => {
    for (const session of sessions.values()) session.destroy()
    await gateway?.stop()
    await Promise.all(apps.map((app) => app.close()))
  })

  /**
   * The app's HTTP/2 session, opened when first needed and again once the gateway has closed it, as a
   * browser does: a session that opens no stream within --headers-timeout, or then idles for
   * --keep-alive-timeout, is closed, which a slow (loaded) run reaches between tests.
   */
  async function sessionFor(app: FrameworkApp): Promise<ClientHttp2Session> {
    const current = sessions.get(app.name)
    if (current) return current
    const session = await http2Session(gateway.ports.https, `${app.name}.test`)
    const forget = () => {
      if (sessions.get(app.name) === session) sessions.delete(app.name)
    }
    session.once('goaway', forget)
    session.once('close', forget)
    sessions.set(app.name, session)
    return session
  }

  const throughGateway = async (app: FrameworkApp, protocol: 'h1' | 'h2', target: string, method = 'GET') =>
    protocol === 'h1'
      ? rawHttp1(gateway.ports.https, {
          method,
          target,
          host: `${app.name}.test`,
          servername: `${app.name}.test`,
        })
      : rawHttp2(await sessionFor(app), { method, target, host: `${app.name}.test` })

  it('the corpus bites: sent straight to the frameworks, it runs their restricted handlers', async () => {
    const ran: Record<string, string[]> = {}
    for (const app of apps) {
      app.hits.length = 0
      const port = Number(new URL(app.url).port)
      for (const target of corpus) {
        const answer = await rawHttp1(port, { target, host: 'direct.test' })
        if (answer.body.includes('"handler":"restricted"') && !restrictedBases.includes(target)) {
          ran[app.name] = [...(ran[app.name] ?? []), target]
        }
      }
    }
    // What the issue found, among others: Express and Fastify cut at '#', Fastify at ';', and every
    // framework runs the handler of a path spelt with another case, encoding or slash.
    expect(ran.express).toContain('/admin#')
    expect(ran.fastify).toContain('/admin#')
    expect(ran.fastify).toContain('/admin;x=1')
    for (const app of apps) expect(ran[app.name]?.length ?? 0).toBeGreaterThan(3)
  }, 60_000)

  it.each(['h1', 'h2'] as const)(
    'over %s, no target of the corpus runs a restricted handler',
    async (protocol) => {
      const leaks: string[] = []
      let refused = 0
      for (const app of apps) {
        app.hits.length = 0
        for (const target of corpus) {
          const answer: RawAnswer = await throughGateway(app, protocol, target)
          if (answer.body.includes('"handler":"restricted"'))
            leaks.push(`${app.name} ${JSON.stringify(target)}`)
          if (answer.status === 0 || /"code":"PCL_/.test(answer.body)) refused += 1
        }
        for (const hit of app.hits)
          if (hit.kind === 'restricted') leaks.push(`${app.name} ran its handler for ${hit.path}`)
      }
      expect(leaks).toEqual([])
      expect(refused).toBeGreaterThan(corpus.length)
    },
    90_000,
  )

  it('a login limit of 3 admits at most 3 logins, however the path is spelt and over either protocol', async () => {
    for (const app of apps) {
      app.hits.length = 0
      let limited = 0
      for (const protocol of ['h1', 'h2'] as const) {
        for (const target of loginCorpus) {
          const answer = await throughGateway(app, protocol, target, 'POST')
          if (answer.status === 429) limited += 1
        }
      }
      await app.flush()
      // Spellings the app itself does not route (/LOGIN on a case-sensitive router) spend budget too.
      const logins = app.hits.filter((hit) => hit.kind === 'login').length
      expect({ app: app.name, logins: Math.min(logins, 4) }).toEqual({
        app: app.name,
        logins: Math.min(logins, 3),
      })
      expect(limited).toBeGreaterThan(loginCorpus.length)
    }
  }, 60_000)

  it('HTTP/2 requests that could mean something else upstream are refused with a JSON answer', async () => {
    const app = apps[0] as FrameworkApp
    const session = await sessionFor(app)
    const send = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve) => {
        const stream = session.request(headers, { endStream: true })
        let status = 0
        let body = ''
        stream.on('response', (head) => {
          status = Number(head[':status'])
        })
        stream.on('data', (chunk: Buffer) => {
          body += chunk
        })
        stream.on('error', () => undefined)
        stream.once('close', () => resolve({ status, body }))
      })
    const host = `${app.name}.test`
    const answers = [
      await send({ ':method': 'GET', ':path': '/admin', ':authority': 'other.test', host }),
      await send({ ':method': 'GET', ':path': '/public', ':authority': host, host: 'other.test' }),
      await send({ ':method': 'get', ':path': '/admin', ':authority': host }),
      await send({ ':method': 'CONNECT', ':authority': host }),
    ]
    for (const answer of answers) {
      expect(answer.status).toBe(400)
      expect(answer.body).toContain('"code":"PCL_BAD_REQUEST"')
    }
    await app.flush()
    expect(app.hits.filter((hit) => hit.kind === 'restricted')).toEqual([])
  })

  it.each(['h1', 'h2'] as const)('over %s, public paths still reach every framework', async (protocol) => {
    for (const app of apps) {
      for (const target of ['/public', '/public/a/b?x=1', '/public/caf%C3%A9', '/public/a|b']) {
        const answer = await throughGateway(app, protocol, target)
        expect({ app: app.name, target, status: answer.status }).toEqual({
          app: app.name,
          target,
          status: 200,
        })
        expect(answer.body).toContain('"handler":"public"')
      }
    }
  })
})
