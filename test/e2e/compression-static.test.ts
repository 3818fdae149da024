import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { type IncomingHttpHeaders, request } from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { curl } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { httpUpstream, type Upstream } from '../support/upstreams.js'

const document = JSON.stringify({
  items: Array.from({ length: 200 }, (_, index) => ({ index, name: `item ${index}` })),
})

/** One request; the body as bytes, so compressed answers can be checked byte for byte. */
function fetchRaw(
  port: number,
  host: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(
      { host: '127.0.0.1', port, path: target, headers: { host, ...headers }, agent: false },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        )
      },
    )
      .on('error', reject)
      .end()
  })
}

describe('compression and static files', () => {
  let upstream: Upstream
  let gateway: RunningGateway
  let assets: string

  beforeAll(async () => {
    upstream = await httpUpstream((incoming, response) => {
      const url = incoming.url ?? '/'
      if (url === '/json')
        response.writeHead(200, { 'content-type': 'application/json', etag: '"v1"' }).end(document)
      else if (url === '/small')
        response.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' }).end('small')
      else if (url === '/png')
        response.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(4096))
      else if (url === '/already')
        response
          .writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' })
          .end(gzipSync(document))
      else if (url === '/events')
        response.writeHead(200, { 'content-type': 'text/event-stream' }).end(document)
      else response.writeHead(404).end()
    })
    const policies = await mkdtemp(path.join(tmpdir(), 'pcl-static-'))
    assets = path.join(policies, 'dist')
    await mkdir(assets)
    await writeFile(path.join(assets, 'app.3f9a.js'), `console.log(${JSON.stringify(document)})`)
    await writeFile(path.join(assets, '.env'), 'SECRET=1')
    await writeFile(path.join(policies, 'secret.txt'), 'outside the directory')
    gateway = await startGateway({
      policies: {
        'site.yaml': [
          'app: site',
          'hosts: [site.test]',
          'tls: { mode: off }',
          `upstream: { targets: [${upstream.url}] }`,
          'compression: { gzipLevel: 6, brotliLevel: 5 }',
          `static: [{ path: /build/, dir: ${assets}, cacheControl: "public, max-age=31536000, immutable" }]`,
        ].join('\n'),
        'plain.yaml': [
          'app: plain',
          'hosts: [plain.test]',
          'tls: { mode: off }',
          `upstream: { targets: [${upstream.url}] }`,
          'compression: { enabled: false }',
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
    await upstream?.close()
  })

  const port = () => gateway.ports.http

  it('compresses with the encoding the client prefers, brotli on a tie', async () => {
    const gzip = await fetchRaw(port(), 'site.test', '/json', { 'accept-encoding': 'gzip' })
    expect(gzip.headers['content-encoding']).toBe('gzip')
    expect(gzip.headers.vary).toMatch(/Accept-Encoding/)
    expect(gzip.headers.etag).toBe('W/"v1"')
    expect(gunzipSync(gzip.body).toString()).toBe(document)
    expect(gzip.body.length).toBeLessThan(document.length / 3)

    const br = await fetchRaw(port(), 'site.test', '/json', { 'accept-encoding': 'gzip, deflate, br' })
    expect(br.headers['content-encoding']).toBe('br')
    expect(brotliDecompressSync(br.body).toString()).toBe(document)
    const preferGzip = await fetchRaw(port(), 'site.test', '/json', { 'accept-encoding': 'br;q=0.5, gzip' })
    expect(preferGzip.headers['content-encoding']).toBe('gzip')
    // A real client decodes it: curl --compressed.
    expect(await curl(['--compressed', '-H', 'host: site.test', `http://127.0.0.1:${port()}/json`])).toBe(
      document,
    )
  })

  it('leaves alone what should not be compressed', async () => {
    const cases: { host: string; target: string; headers: Record<string, string> }[] = [
      { host: 'site.test', target: '/json', headers: {} },
      { host: 'site.test', target: '/json', headers: { 'accept-encoding': 'identity' } },
      { host: 'site.test', target: '/small', headers: { 'accept-encoding': 'gzip' } },
      { host: 'site.test', target: '/png', headers: { 'accept-encoding': 'gzip' } },
      { host: 'site.test', target: '/events', headers: { 'accept-encoding': 'gzip' } },
      { host: 'plain.test', target: '/json', headers: { 'accept-encoding': 'gzip, br' } },
    ]
    for (const { host, target, headers } of cases) {
      const answer = await fetchRaw(port(), host, target, headers)
      expect([target, answer.headers['content-encoding']]).toEqual([target, undefined])
    }
    const already = await fetchRaw(port(), 'site.test', '/already', { 'accept-encoding': 'gzip, br' })
    expect(already.headers['content-encoding']).toBe('gzip')
    expect(gunzipSync(already.body).toString()).toBe(document)
  })

  it('serves static files with immutable caching, ETag/304 and ranges', async () => {
    const file = await fetchRaw(port(), 'site.test', '/build/app.3f9a.js')
    expect(file.status).toBe(200)
    expect(file.headers['cache-control']).toBe('public, max-age=31536000, immutable')
    expect(file.headers['content-type']).toMatch(/javascript/)
    expect(file.headers['x-content-type-options']).toBe('nosniff')
    expect(file.body.toString()).toBe(`console.log(${JSON.stringify(document)})`)
    const etag = String(file.headers.etag)
    const cached = await fetchRaw(port(), 'site.test', '/build/app.3f9a.js', { 'if-none-match': etag })
    expect(cached.status).toBe(304)
    expect(cached.body.length).toBe(0)
    const range = await fetchRaw(port(), 'site.test', '/build/app.3f9a.js', { range: 'bytes=0-10' })
    expect(range.status).toBe(206)
    expect(range.body.toString()).toBe('console.log')
    expect(range.headers['content-range']).toMatch(/^bytes 0-10\/\d+$/)
  })

  it('never serves outside the directory, dotfiles or directories', async () => {
    for (const target of [
      '/build/.env',
      '/build/',
      '/build/missing.js',
      '/build/%2e%2e/secret.txt',
      '/build/..%5csecret.txt',
    ]) {
      const answer = await fetchRaw(port(), 'site.test', target)
      // 400 when the canonical-path check refuses it first, else the static 404.
      expect([400, 404], target).toContain(answer.status)
      expect(answer.body.toString()).not.toContain('outside the directory')
      expect(answer.body.toString()).not.toContain('SECRET')
    }
    const missing = await fetchRaw(port(), 'site.test', '/build/missing.js')
    expect(JSON.parse(missing.body.toString())).toMatchObject({ error: { code: 'PCL_NOT_FOUND' } })
  })
})
