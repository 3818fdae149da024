import { execFile } from 'node:child_process'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'

export const execFileAsync = promisify(execFile)

export interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  json<T = Record<string, unknown>>(): T
}

/**
 * One HTTP/1.1 request over a fresh connection. `servername` sets SNI apart from the Host header;
 * `port` and `host` choose where to connect, whatever the URL's name says.
 */
export function fetchOnce(
  url: string,
  options: {
    port: number
    method?: string
    headers?: Record<string, string | string[]>
    body?: string
    ca?: string | string[]
    servername?: string
    maxVersion?: 'TLSv1.2' | 'TLSv1.3'
    timeoutMs?: number
    /** Connect from this loopback address, to be another client. */
    localAddress?: string
  },
): Promise<Answer> {
  const target = new URL(url)
  const secure = target.protocol === 'https:'
  return new Promise((resolve, reject) => {
    const send = secure ? httpsRequest : httpRequest
    const request = send(
      {
        host: '127.0.0.1',
        port: options.port,
        method: options.method ?? 'GET',
        path: `${target.pathname}${target.search}`,
        headers: { host: target.host, ...options.headers },
        agent: false,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
        ...(secure
          ? {
              ca: options.ca,
              servername: options.servername ?? target.hostname,
              rejectUnauthorized: options.ca !== undefined,
              ...(options.maxVersion ? { maxVersion: options.maxVersion } : {}),
            }
          : {}),
        timeout: options.timeoutMs ?? 10_000,
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8')
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body,
            json: <T>() => JSON.parse(body) as T,
          })
        })
        response.on('error', reject)
      },
    )
    request.on('timeout', () => request.destroy(new Error('client timeout')))
    request.on('error', reject)
    request.end(options.body)
  })
}

/** curl with `--resolve` so made-up names reach loopback; returns the -w write-out and the body. */
export async function curl(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('curl', ['-sS', '--max-time', '10', ...args])
  return stdout
}

/** The subject and issuer of the certificate a TLS server presents for `servername`. */
export async function presentedCertificate(port: number, servername: string): Promise<string> {
  const { stdout } = await execFileAsync('sh', [
    '-c',
    `echo | openssl s_client -connect 127.0.0.1:${port} -servername ${servername} 2>/dev/null | openssl x509 -noout -subject -ext subjectAltName`,
  ])
  return stdout
}

/** SHA-256 fingerprint of the certificate presented on a new TLS connection for `servername`. */
export function certificateFingerprint(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256)
      socket.end()
    })
    socket.once('error', reject)
  })
}
