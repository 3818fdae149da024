import { mkdir, mkdtemp, realpath, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { hashPassword } from '../../src/auth/passwords.js'
import { explain, formatExplanation } from '../../src/gateway/explain.js'
import { compileApp } from '../support/apps.js'

describe('explain: what the gateway answers itself', async () => {
  const dist = path.join(await realpath(await mkdtemp(path.join(tmpdir(), 'pcl-explain-'))), 'dist')
  await mkdir(dist)
  await writeFile(path.join(dist, 'index.html'), '<!doctype html><title>app</title>')
  await writeFile(path.join(dist, 'app.5d41.js'), 'console.log(1)\n')
  await writeFile(path.join(dist, 'app.5d41.js.br'), 'not really brotli')
  const app = await compileApp({
    app: 'sm',
    hosts: ['sm.test'],
    tls: { mode: 'off' },
    healthPath: '/.well-known/portcullis-health',
    static: [
      {
        path: '/build/',
        dir: dist,
        cacheControl: 'public, max-age=31536000, immutable',
        fallback: '/index.html',
      },
    ],
    basicAuth: { users: { admin: await hashPassword('correct horse') }, except: ['/build/**'] },
  })
  const run = (path: string, headers: Record<string, string> = {}, method = 'GET') =>
    explain([app], {
      method,
      url: `http://sm.test${path}`,
      ip: '203.0.113.7',
      headers,
      tlsVersion: 'TLSv1.3',
    })

  it('the health path, before any guard', async () => {
    const explanation = await run('/.well-known/portcullis-health')
    expect(explanation).toMatchObject({ status: 200, rule: 'healthPath', steps: [] })
  })

  it('static files, with their Cache-Control, and nothing for the upstream', async () => {
    const explanation = await run('/build/app.5d41.js')
    expect(explanation.outcome).toBe(`served by the gateway from ${dist}/app.5d41.js`)
    expect(explanation.responseHeaders['cache-control']).toBe('public, max-age=31536000, immutable')
    expect(explanation.responseHeaders.vary).toBe('Accept-Encoding')
    expect(explanation.upstream).toBeUndefined()
  })

  it('the file a static path finds: variant, index, fallback, redirect or none', async () => {
    const br = await run('/build/app.5d41.js', { 'accept-encoding': 'gzip, br' })
    expect(br.outcome).toBe(`served by the gateway from ${dist}/app.5d41.js.br, precompressed (br)`)
    expect(br.responseHeaders['content-encoding']).toBe('br')
    expect(br.responseHeaders['content-type']).toBe('application/javascript; charset=utf-8')
    const index = await run('/build/')
    expect(index.outcome).toBe(`served by the gateway from ${dist}/index.html (the index of the directory)`)
    expect(index.responseHeaders['cache-control']).toBe('no-cache')
    const route = await run('/build/settings/profile')
    expect(route.outcome).toBe(
      `served by the gateway from ${dist}/index.html (the fallback: no file for this path)`,
    )
    expect(route.responseHeaders['cache-control']).toBe('no-cache')
    expect(await run('/build')).toMatchObject({ status: 308, responseHeaders: { location: '/build/' } })
    const missing = await run('/build/app.0000.js')
    expect(missing).toMatchObject({ status: 404, code: 'PCL_NOT_FOUND', rule: 'static' })
    expect(missing.outcome).toBe(`refused: no file ${dist}/app.0000.js under /build/`)
    const post = await run('/build/settings/profile', {}, 'POST')
    expect(post).toMatchObject({ status: 405, code: 'PCL_METHOD_NOT_ALLOWED', rule: 'static' })
    expect(post.responseHeaders.allow).toBe('GET, HEAD')
  })

  it('basic authentication as the last step, with the challenge header', async () => {
    const refused = await run('/admin')
    expect(refused).toMatchObject({ status: 401, code: 'PCL_AUTH_REQUIRED', rule: 'basicAuth' })
    expect(refused.steps.at(-1)?.guard).toBe('basicAuth')
    expect(refused.responseHeaders['www-authenticate']).toMatch(/^Basic realm=/)
    const basic = `Basic ${Buffer.from('admin:correct horse').toString('base64')}`
    expect((await run('/admin', { authorization: basic })).outcome).toMatch(/^proxied to /)
  })
})

describe('explain: the TLS profile', async () => {
  const [shop, strict] = await Promise.all([
    compileApp({ app: 'shop', hosts: ['shop.test'] }),
    compileApp({ app: 'strict', hosts: ['strict.test'], tls: { profile: 'modern', groups: ['X25519'] } }),
  ])
  const run = (url: string) =>
    explain([shop, strict], { method: 'GET', url, ip: '203.0.113.7', headers: {}, tlsVersion: 'TLSv1.3' })

  it('says which profile an app’s connections get, with its versions, groups and suites', async () => {
    expect((await run('https://shop.test/')).tls).toEqual({
      profile: 'intermediate',
      minVersion: 'TLSv1.2',
      groups: 'X25519:P-256:P-384',
      ciphers: expect.stringMatching(/^TLS_AES_128_GCM_SHA256:.*:ECDHE-RSA-CHACHA20-POLY1305$/),
    })
    const strictly = await run('https://strict.test/')
    expect(strictly).toMatchObject({
      outcome: expect.stringMatching(/^proxied to /),
      tls: { profile: 'modern + own groups', minVersion: 'TLSv1.3', groups: 'X25519' },
    })
    expect(formatExplanation(strictly).split('\n')[1]).toBe(
      'tls: profile modern + own groups (TLSv1.3 and later; groups X25519; ciphers TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256)',
    )
    expect((await run('http://shop.test/')).tls).toBeUndefined()
  })
})
