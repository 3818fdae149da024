import { execFile } from 'node:child_process'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

/** A self-signed P-256 certificate for `host`, made with openssl, for a server outside the gateway. */
export async function selfSigned(host: string): Promise<{ cert: string; key: string }> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-cert-'))
  const cert = path.join(directory, 'cert.pem')
  const key = path.join(directory, 'key.pem')
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '1',
    '-subj',
    `/CN=${host}`,
    '-addext',
    `subjectAltName=DNS:${host}`,
  ])
  return { cert: await readFile(cert, 'utf8'), key: await readFile(key, 'utf8') }
}
