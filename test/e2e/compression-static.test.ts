import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises'
import { type IncomingHttpHeaders, request } from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync, gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { curl } from '../support/clients.js'
import { type RunningGateway, startGateway } from '../support/gateway.js'
import { httpUpstream, type Upstream } from '../support/upstreams.js'

const document = JSON.stringify({
  items: Array.from({ length: 200 }, (_, index) => ({ index, name: `item ${index}` })),
})

/** A bundle as a build makes it: big enough to compress, with its brotli and gzip made as a build would. */
const bundle = `export const items = ${document};\nconsole.log(items.items.length)\n`
const brotliOfBundle = brotliCompressSync(bundle, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } })
const gzipOfBundle = gzipSync(bundle, { level: 9 })
const vendor = `export const vendor = ${JSON.stringify({ rows: Array.from({ length: 300 }, (_, i) => `row ${i}`) })}\n`

/** One request; the body as bytes, so compressed answers can be checked byte for byte. */
function fetchRaw(
  port: number,
  host: string,
  target: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(
      { host: '127.0.0.1', port, method, path: target, headers: { host, ...headers }, agent: false },
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
    await buildLikeDirectory(assets)
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
          `static: [{ path: /static/, dir: ${assets} }]`,
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

  it('answers a directory URL with its index, and redirects one without its slash', async () => {
    const index = await fetchRaw(port(), 'site.test', '/build/')
    expect(index.status).toBe(200)
    expect(index.body.toString()).toBe(indexHtml)
    expect(index.headers['content-type']).toBe('text/html; charset=utf-8')
    // The entry caches hashed assets for a year; its HTML is revalidated, so a deploy shows at once.
    expect(index.headers['cache-control']).toBe('no-cache')
    expect(index.headers.etag).toMatch(/^W\/"/)
    expect((await fetchRaw(port(), 'site.test', '/build/index.html')).headers['cache-control']).toBe(
      'no-cache',
    )
    const docs = await fetchRaw(port(), 'site.test', '/build/docs/')
    expect([docs.status, docs.body.toString()]).toEqual([200, '<!doctype html><title>docs</title>'])
    for (const [target, location] of [
      ['/build', '/build/'],
      ['/build?v=2', '/build/?v=2'],
      ['/build/docs', '/build/docs/'],
      ['/build/docs?page=1', '/build/docs/?page=1'],
    ]) {
      const redirect = await fetchRaw(port(), 'site.test', target as string)
      expect([target, redirect.status, redirect.headers.location]).toEqual([target, 308, location])
    }
    // Without a fallback, a directory without an index is a 404 like a missing file.
    const noIndex = await fetchRaw(port(), 'site.test', '/build/assets/')
    expect(noIndex.status).toBe(404)
  })

  it('serves the precompressed .br or .gz the client accepts, with the original type', async () => {
    const identity = await fetchRaw(port(), 'site.test', '/build/assets/app.3f2a.js')
    expect(identity.body.toString()).toBe(bundle)
    expect(identity.headers['content-encoding']).toBeUndefined()
    // Answers of one URL differ by Accept-Encoding, so even the plain one says so to caches.
    expect(identity.headers.vary).toMatch(/Accept-Encoding/)

    const br = await fetchRaw(port(), 'site.test', '/build/assets/app.3f2a.js', {
      'accept-encoding': 'gzip, br',
    })
    expect(br.status).toBe(200)
    expect(br.headers['content-encoding']).toBe('br')
    expect(br.headers['content-type']).toBe('application/javascript; charset=utf-8')
    expect(br.headers.vary).toMatch(/Accept-Encoding/)
    expect(br.headers['cache-control']).toBe('public, max-age=31536000, immutable')
    expect(Number(br.headers['content-length'])).toBe(brotliOfBundle.length)
    // The build's own file, byte for byte: not compressed again on the fly.
    expect(br.body.equals(brotliOfBundle)).toBe(true)

    const gzip = await fetchRaw(port(), 'site.test', '/build/assets/app.3f2a.js', {
      'accept-encoding': 'br;q=0.5, gzip',
    })
    expect(gzip.headers['content-encoding']).toBe('gzip')
    expect(gzip.body.equals(gzipOfBundle)).toBe(true)
    expect(new Set([identity.headers.etag, br.headers.etag, gzip.headers.etag]).size).toBe(3)

    // Only a .gz beside it: the client that prefers brotli gets the build's gzip, not a brotli made now.
    const onlyGzip = await fetchRaw(port(), 'site.test', '/build/assets/only-gzip.5e1b.js', {
      'accept-encoding': 'br, gzip',
    })
    expect(onlyGzip.headers['content-encoding']).toBe('gzip')
    expect(onlyGzip.body.equals(gzipOfBundle)).toBe(true)

    // curl --compressed asks for what its build decodes (brotli here), and gets the bundle back.
    const target = `http://127.0.0.1:${port()}/build/assets/app.3f2a.js`
    const decoded = await curl(['--compressed', '-H', 'host: site.test', target])
    expect(decoded).toBe(bundle)
    const written = await curl([
      '--compressed',
      '-H',
      'host: site.test',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %header{content-encoding} %header{content-type} %header{vary}',
      target,
    ])
    expect(written).toBe('200 br application/javascript; charset=utf-8 Accept-Encoding')
    const plainCurl = await curl(['-H', 'host: site.test', '-w', '\n%header{content-encoding}.', target])
    expect(plainCurl).toBe(`${bundle}\n.`)
  })

  it('revalidates and serves ranges of each encoding by its own ETag', async () => {
    const url = '/build/assets/app.3f2a.js'
    const br = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'br' })
    const etag = String(br.headers.etag)
    const cached = await fetchRaw(port(), 'site.test', url, {
      'accept-encoding': 'br',
      'if-none-match': etag,
    })
    expect([cached.status, cached.headers.etag, cached.body.length]).toEqual([304, etag, 0])
    expect(cached.headers.vary).toMatch(/Accept-Encoding/)
    // A brotli ETag is no validator of the gzip answer, nor of the plain one.
    const gzip = await fetchRaw(port(), 'site.test', url, {
      'accept-encoding': 'gzip',
      'if-none-match': etag,
    })
    expect([gzip.status, gzip.headers['content-encoding']]).toEqual([200, 'gzip'])
    const plain = await fetchRaw(port(), 'site.test', url, { 'if-none-match': etag })
    expect([plain.status, plain.body.toString()]).toEqual([200, bundle])
    const plainCached = await fetchRaw(port(), 'site.test', url, {
      'if-none-match': String(plain.headers.etag),
    })
    expect(plainCached.status).toBe(304)
    // A range of a precompressed answer is of its encoded bytes (RFC 9110 §14).
    const range = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'br', range: 'bytes=0-9' })
    expect([range.status, range.headers['content-encoding']]).toEqual([206, 'br'])
    expect(range.headers['content-range']).toBe(`bytes 0-9/${brotliOfBundle.length}`)
    expect(range.body.equals(brotliOfBundle.subarray(0, 10))).toBe(true)
    const head = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'br' }, 'HEAD')
    expect([head.status, head.headers['content-encoding'], head.headers.etag]).toEqual([200, 'br', etag])
    expect(Number(head.headers['content-length'])).toBe(brotliOfBundle.length)
    const outOfRange = await fetchRaw(port(), 'site.test', url, { range: 'bytes=999999-' })
    expect(outOfRange.status).toBe(416)
    expect(outOfRange.headers['content-range']).toBe(`bytes */${bundle.length}`)
  })

  it('compresses a large static file on the fly when the build made no variant', async () => {
    const url = '/build/assets/vendor.77aa.js'
    const gzip = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'gzip' })
    expect(gzip.headers['content-encoding']).toBe('gzip')
    expect(gzip.headers['content-length']).toBeUndefined()
    expect(gzip.headers.vary).toMatch(/Accept-Encoding/)
    expect(gzip.headers['accept-ranges']).toBeUndefined()
    expect(gunzipSync(gzip.body).toString()).toBe(vendor)
    expect(gzip.body.length).toBeLessThan(vendor.length / 3)
    const br = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'br' })
    expect(brotliDecompressSync(br.body).toString()).toBe(vendor)
    expect(new Set([gzip.headers.etag, br.headers.etag]).size).toBe(2)
    const cached = await fetchRaw(port(), 'site.test', url, {
      'accept-encoding': 'gzip',
      'if-none-match': String(gzip.headers.etag),
    })
    expect(cached.status).toBe(304)
    // A range is of the file's own bytes: sent as they are.
    const range = await fetchRaw(port(), 'site.test', url, { 'accept-encoding': 'gzip', range: 'bytes=7-12' })
    expect([range.status, range.headers['content-encoding'], range.body.toString()]).toEqual([
      206,
      undefined,
      vendor.slice(7, 13),
    ])
    // Under compression.minSize, or compression off for the app: as it is (a build's variant still is used).
    const tiny = await fetchRaw(port(), 'site.test', '/build/assets/tiny.js', { 'accept-encoding': 'gzip' })
    expect([tiny.headers['content-encoding'], tiny.body.toString()]).toEqual([undefined, 'export {}\n'])
    const off = await fetchRaw(port(), 'plain.test', '/static/assets/vendor.77aa.js', {
      'accept-encoding': 'gzip, br',
    })
    expect([off.headers['content-encoding'], off.body.toString()]).toEqual([undefined, vendor])
    const offPrecompressed = await fetchRaw(port(), 'plain.test', '/static/assets/app.3f2a.js', {
      'accept-encoding': 'gzip, br',
    })
    expect(offPrecompressed.headers['content-encoding']).toBe('br')
  })

  it('answers only GET and HEAD on static paths', async () => {
    for (const target of ['/build/app.3f9a.js', '/build/', '/build/missing.js']) {
      const post = await fetchRaw(port(), 'site.test', target, {}, 'POST')
      expect([target, post.status, post.headers.allow]).toEqual([target, 405, 'GET, HEAD'])
      expect(JSON.parse(post.body.toString())).toMatchObject({ error: { code: 'PCL_METHOD_NOT_ALLOWED' } })
    }
  })

  it('never serves outside the directory, dotfiles, or a variant without its file', async () => {
    for (const target of [
      '/build/.env',
      '/build/%2eenv',
      '/build/missing.js',
      '/build/%2e%2e/secret.txt',
      '/build/%2E%2E/%2e%2e/secret.txt',
      '/build/..%5csecret.txt',
      '/build/..%2fsecret.txt',
      '/build/leak.txt',
      '/build/linked/secret.txt',
      '/build/hidden/key.txt',
    ]) {
      const answer = await fetchRaw(port(), 'site.test', target, { 'accept-encoding': 'gzip, br' })
      // 400 when the canonical-path check refuses it first, else the static 404.
      expect([400, 404], target).toContain(answer.status)
      expect(answer.body.toString()).not.toContain('outside the directory')
      expect(answer.body.toString()).not.toContain('SECRET')
    }
    const missing = await fetchRaw(port(), 'site.test', '/build/missing.js')
    expect(JSON.parse(missing.body.toString())).toMatchObject({ error: { code: 'PCL_NOT_FOUND' } })
    // orphan.js.br exists, orphan.js does not: nothing is served for /orphan.js.
    const orphan = await fetchRaw(port(), 'site.test', '/build/orphan.js', { 'accept-encoding': 'br' })
    expect([orphan.status, orphan.headers['content-encoding']]).toEqual([404, undefined])
    // A variant that is a symlink out of the directory is not used: the file itself is sent.
    const planted = await fetchRaw(port(), 'site.test', '/build/planted.js', { 'accept-encoding': 'br' })
    expect([planted.status, planted.headers['content-encoding'], planted.body.toString()]).toEqual([
      200,
      undefined,
      'export const planted = 1\n',
    ])
    // A symlink that stays inside the directory is followed.
    const alias = await fetchRaw(port(), 'site.test', '/build/alias.js')
    expect([alias.status, alias.body.toString()]).toEqual([200, bundle])
  })
})

describe('a single-page app from static files, with a history fallback', () => {
  let gateway: RunningGateway

  beforeAll(async () => {
    const policies = await mkdtemp(path.join(tmpdir(), 'pcl-spa-'))
    const root = path.join(policies, 'dist')
    await mkdir(root)
    await writeFile(path.join(policies, 'secret.txt'), 'outside the directory')
    await buildLikeDirectory(root)
    gateway = await startGateway({
      policies: {
        'spa.yaml': [
          'app: spa',
          'hosts: [spa.test]',
          'tls: { mode: off }',
          'upstream: { targets: [http://127.0.0.1:9] }',
          'static:',
          `  - { path: /, dir: ${root}, cacheControl: "public, max-age=31536000, immutable", fallback: /index.html }`,
        ].join('\n'),
      },
    })
  })

  afterAll(async () => {
    await gateway?.stop()
  })

  const port = () => gateway.ports.http

  it('answers client-side routes with the fallback, revalidated rather than cached for a year', async () => {
    for (const target of ['/settings/profile', '/settings/', '/orders/42?tab=items', '/v1.2/settings']) {
      const route = await fetchRaw(port(), 'spa.test', target)
      expect([target, route.status, route.body.toString()]).toEqual([target, 200, indexHtml])
      expect(route.headers['content-type']).toBe('text/html; charset=utf-8')
      expect(route.headers['cache-control']).toBe('no-cache')
    }
    const first = await fetchRaw(port(), 'spa.test', '/settings/profile')
    const again = await fetchRaw(port(), 'spa.test', '/settings/profile', {
      'if-none-match': String(first.headers.etag),
    })
    expect(again.status).toBe(304)
    const head = await fetchRaw(port(), 'spa.test', '/settings/profile', {}, 'HEAD')
    expect([head.status, head.headers['content-type'], head.body.length]).toEqual([
      200,
      'text/html; charset=utf-8',
      0,
    ])
    // The fallback's own precompressed variant, as for any file.
    const br = await fetchRaw(port(), 'spa.test', '/settings/profile', { 'accept-encoding': 'br' })
    expect(br.headers['content-encoding']).toBe('br')
    expect(brotliDecompressSync(br.body).toString()).toBe(indexHtml)
    // Files still answer as themselves, with the entry's caching.
    const asset = await fetchRaw(port(), 'spa.test', '/assets/app.3f2a.js')
    expect([asset.body.toString(), asset.headers['cache-control']]).toEqual([
      bundle,
      'public, max-age=31536000, immutable',
    ])
    expect((await fetchRaw(port(), 'spa.test', '/docs')).headers.location).toBe('/docs/')
  })

  it('leaves a missing asset with an extension a 404, never the HTML', async () => {
    for (const target of ['/assets/app.0000.js', '/assets/app.0000.css', '/users/jane.doe', '/favicon.ico']) {
      const missing = await fetchRaw(port(), 'spa.test', target, { accept: 'text/html' })
      expect([target, missing.status]).toEqual([target, 404])
      expect(JSON.parse(missing.body.toString())).toMatchObject({ error: { code: 'PCL_NOT_FOUND' } })
    }
  })

  it('does not answer a POST to a client-side route with the fallback', async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const post = await fetchRaw(port(), 'spa.test', '/settings/profile', {}, method)
      expect([method, post.status, post.headers.allow]).toEqual([method, 405, 'GET, HEAD'])
      expect(post.body.toString()).not.toContain('<!doctype html>')
    }
  })

  it('refuses traversal and symlinks out of the directory, fallback or not', async () => {
    for (const target of [
      '/%2e%2e/secret.txt',
      '/%2E%2E/%2e%2e/secret.txt',
      '/..%5csecret.txt',
      '/leak.txt',
      '/linked/secret.txt',
      '/linked',
      '/hidden/key.txt',
      '/.env',
      '/orphan.js',
    ]) {
      const answer = await fetchRaw(port(), 'spa.test', target, { 'accept-encoding': 'br, gzip' })
      expect([400, 404, 200], target).toContain(answer.status)
      // What answers, if anything, is the app's own HTML: nothing from outside, no dotfile.
      if (answer.status === 200) expect(brotliDecompressSync(answer.body).toString()).toBe(indexHtml)
      expect(answer.body.toString()).not.toContain('outside the directory')
      expect(answer.body.toString()).not.toContain('SECRET')
    }
  })
})

const indexHtml =
  '<!doctype html><html><head><title>spa</title><script type="module" src="/assets/app.3f2a.js"></script></head><body><main id="view"></main></body></html>'

/**
 * A directory as a bundler leaves it: index.html, hashed assets with their .br and .gz beside them,
 * one asset with only a .gz, one without any, a subdirectory with its own index; plus what must never
 * be served: a dotfile, a .br without its file, symlinks out of the directory.
 */
async function buildLikeDirectory(root: string): Promise<void> {
  const outside = path.dirname(root)
  await mkdir(path.join(root, 'assets'), { recursive: true })
  await mkdir(path.join(root, 'docs'))
  await mkdir(path.join(root, '.hidden'))
  await writeFile(path.join(root, 'index.html'), indexHtml)
  await writeFile(path.join(root, 'index.html.br'), brotliCompressSync(indexHtml))
  await writeFile(path.join(root, 'docs', 'index.html'), '<!doctype html><title>docs</title>')
  await writeFile(path.join(root, 'assets', 'app.3f2a.js'), bundle)
  await writeFile(path.join(root, 'assets', 'app.3f2a.js.br'), brotliOfBundle)
  await writeFile(path.join(root, 'assets', 'app.3f2a.js.gz'), gzipOfBundle)
  await writeFile(path.join(root, 'assets', 'only-gzip.5e1b.js'), bundle)
  await writeFile(path.join(root, 'assets', 'only-gzip.5e1b.js.gz'), gzipOfBundle)
  await writeFile(path.join(root, 'assets', 'vendor.77aa.js'), vendor)
  await writeFile(path.join(root, 'assets', 'tiny.js'), 'export {}\n')
  await writeFile(path.join(root, 'orphan.js.br'), brotliOfBundle)
  await writeFile(path.join(root, 'planted.js'), 'export const planted = 1\n')
  await writeFile(path.join(root, '.hidden', 'key.txt'), 'SECRET=2')
  await symlink(path.join(outside, 'secret.txt'), path.join(root, 'planted.js.br'))
  await symlink(path.join(outside, 'secret.txt'), path.join(root, 'leak.txt'))
  await symlink(outside, path.join(root, 'linked'))
  await symlink(path.join(root, '.hidden'), path.join(root, 'hidden'))
  await symlink(path.join(root, 'assets', 'app.3f2a.js'), path.join(root, 'alias.js'))
}
