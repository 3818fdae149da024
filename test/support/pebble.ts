import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { Agent, get } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { execFileAsync } from './clients.js'
import { policyYaml } from './gateway.js'
import { closedPort } from './upstreams.js'

export interface Pebble {
  /** The ACME directory URL to put in a policy. */
  directory: string
  /** PEM file of the CA that signed pebble's own HTTPS certificate: give it to the gateway as NODE_EXTRA_CA_CERTS. */
  apiCaFile: string
  /** PEM of the root that signs the certificates pebble issues (a new one every pebble start). */
  issuingRoot(): Promise<string>
  /** Everything pebble printed, for failure messages and for counting orders. */
  output(): string
  stop(): Promise<void>
}

/**
 * The real Let's Encrypt test CA on loopback. Its validator connects to `httpPort` (HTTP-01) and `tlsPort`
 * (TLS-ALPN-01), which the test points at the gateway's listeners; `pebble-challtestsrv` is its DNS and
 * resolves every name to 127.0.0.1, so made-up hosts validate against the gateway.
 */
export async function startPebble(options: {
  httpPort: number
  tlsPort: number
  /** Seconds; short lifetimes drive renewal tests. */
  certificateValidity?: number
  /** The ACME API port, for a test that starts pebble after the gateway. */
  acmePort?: number
  /** From `preparePebbleApi`, when the gateway must trust pebble before it starts. */
  api?: PebbleApi
}): Promise<Pebble> {
  const { directory, apiCaFile } = options.api ?? (await preparePebbleApi())
  const [acmePort, managementPort, dnsPort, dnsManagementPort] = [
    options.acmePort ?? (await closedPort()),
    await closedPort(),
    await closedPort(),
    await closedPort(),
  ]
  await writeFile(
    path.join(directory, 'pebble.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: path.join(directory, 'api.pem'),
        privateKey: path.join(directory, 'api.key'),
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.certificateValidity ? { certificateValidityPeriod: options.certificateValidity } : {}),
      },
    }),
  )
  let output = ''
  const collect = (child: ChildProcess) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk
    })
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk
    })
  }
  const dns = spawn('pebble-challtestsrv', [
    '-defaultIPv4',
    '127.0.0.1',
    '-defaultIPv6',
    '',
    '-dns01',
    `127.0.0.1:${dnsPort}`,
    '-http01',
    '',
    '-https01',
    '',
    '-tlsalpn01',
    '',
    '-management',
    `127.0.0.1:${dnsManagementPort}`,
  ])
  collect(dns)
  const pebble = spawn(
    'pebble',
    ['-config', path.join(directory, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`, '-strict=false'],
    { env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' } },
  )
  collect(pebble)
  const agent = new Agent({ ca: await readFile(apiCaFile, 'utf8') })
  const management = `https://127.0.0.1:${managementPort}`
  const stop = async () => {
    for (const child of [pebble, dns]) {
      if (child.exitCode !== null || child.signalCode !== null) continue
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    }
  }
  for (let attempt = 0; ; attempt++) {
    try {
      await getText(`https://127.0.0.1:${acmePort}/dir`, agent)
      break
    } catch (error) {
      if (attempt > 100) {
        await stop()
        throw new Error(`pebble did not start: ${String(error)}\n${output}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  return {
    directory: `https://127.0.0.1:${acmePort}/dir`,
    apiCaFile,
    issuingRoot: () => getText(`${management}/roots/0`, agent),
    output: () => output,
    stop,
  }
}

export interface PebbleApi {
  directory: string
  apiCaFile: string
}

/** Pebble's package ships no certificate for its own API: a throwaway CA and a leaf for 127.0.0.1. */
export async function preparePebbleApi(): Promise<PebbleApi> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-pebble-'))
  const file = (name: string) => path.join(directory, name)
  const openssl = (...args: string[]) => execFileAsync('openssl', args)
  const newKey = (name: string) => [
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    file(name),
  ]
  await openssl(
    'req',
    '-x509',
    ...newKey('api-ca.key'),
    '-out',
    file('api-ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=pebble API test CA',
  )
  await openssl('req', ...newKey('api.key'), '-out', file('api.csr'), '-subj', '/CN=127.0.0.1')
  await writeFile(file('api.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  await openssl(
    'x509',
    '-req',
    '-in',
    file('api.csr'),
    '-CA',
    file('api-ca.pem'),
    '-CAkey',
    file('api-ca.key'),
    '-CAcreateserial',
    '-out',
    file('api.pem'),
    '-days',
    '2',
    '-extfile',
    file('api.ext'),
  )
  return { directory, apiCaFile: file('api-ca.pem') }
}

function getText(url: string, agent: Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, { agent }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        body += chunk
      })
      response.on('end', () =>
        response.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${response.statusCode}`)),
      )
    }).on('error', reject)
  })
}

/** A policy for one app whose certificate comes from the ACME CA at `directory`. */
export function acmePolicy(
  app: string,
  hosts: string[],
  target: string,
  directory: string,
  challenge = 'http-01',
): string {
  return policyYaml({
    app,
    hosts,
    target,
    tls: `  mode: acme\n  acme: { email: ops@example.com, directory: "${directory}", challenge: ${challenge} }`,
  })
}

/** The gateway's HTTP and HTTPS ports must be known before pebble starts: its validator connects to them. */
export async function gatewayPorts(): Promise<{ http: number; https: number }> {
  return { http: await closedPort(), https: await closedPort() }
}

/** Gateway flags for ACME tests: the chosen ports and quick polling and retries. */
export function acmeArgs(ports: { http: number; https: number }, extra: string[] = []): string[] {
  return [
    '--http-port',
    String(ports.http),
    '--https-port',
    String(ports.https),
    '--acme-poll',
    '50ms',
    '--acme-retry',
    '300ms',
    ...extra,
  ]
}
