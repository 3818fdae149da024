import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { InternalCa } from '../../src/tls/internal-ca.js'

describe('the internal CA', () => {
  it('reuses a current leaf, and issues again when the key on disk is not the certificate’s', async () => {
    const stateDir = await mkdtemp(path.join(tmpdir(), 'pcl-ca-'))
    const ca = await InternalCa.open(stateDir)
    const first = await ca.leafFor('shop', ['shop.test'])
    expect(await ca.leafFor('shop', ['shop.test'])).toEqual(first)
    // Another app's key beside shop's certificate: what two writers cut between the files would leave.
    const other = await ca.leafFor('blog', ['blog.test'])
    const files = path.join(stateDir, 'internal')
    await writeFile(path.join(files, 'shop.key'), other.key)
    const again = await ca.leafFor('shop', ['shop.test'])
    expect(again.cert).not.toEqual(first.cert)
    expect(new X509Certificate(again.cert).checkPrivateKey(createPrivateKey(again.key))).toBe(true)
    expect(await readFile(path.join(files, 'shop.key'), 'utf8')).toBe(again.key)
  })
})
