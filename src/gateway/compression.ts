import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { Transform } from 'node:stream'
import { constants, createBrotliCompress, createGzip } from 'node:zlib'
import type { Policy } from '../policy/schema.js'

export type Encoding = 'br' | 'gzip'

/** Types worth compressing; images, video, archives and fonts other than SVG are compressed already. */
const compressible =
  /^(text\/(?!event-stream)|application\/(json|javascript|xml|x-javascript|ld\+json|manifest\+json|wasm|graphql-response\+json)|image\/svg\+xml|[^;]+\+(json|xml))/i

/**
 * The encodings we make that the client accepts, best first by its Accept-Encoding q-values; brotli
 * wins a tie (it is smaller). Empty when the client asked for neither, or refused both with q=0.
 */
export function acceptedEncodings(acceptEncoding: string | undefined): Encoding[] {
  if (!acceptEncoding) return []
  let wildcard: number | undefined
  const quality = new Map<string, number>()
  for (const part of acceptEncoding.split(',')) {
    const [name = '', ...parameters] = part.trim().toLowerCase().split(';')
    const q = parameters.map((p) => p.trim()).find((p) => p.startsWith('q='))
    const value = q ? Number(q.slice(2)) : 1
    if (name === '*') wildcard = value
    else quality.set(name, Number.isFinite(value) ? value : 0)
  }
  const br = quality.get('br') ?? wildcard ?? 0
  const gzip = quality.get('gzip') ?? wildcard ?? 0
  const accepted: Encoding[] = []
  if (br > 0) accepted.push('br')
  if (gzip > 0) gzip > br ? accepted.unshift('gzip') : accepted.push('gzip')
  return accepted
}

/** The encoding the client prefers among those we make, or undefined (see `acceptedEncodings`). */
export function negotiateEncoding(acceptEncoding: string | undefined): Encoding | undefined {
  return acceptedEncodings(acceptEncoding)[0]
}

/** Whether answers of this Content-Type are worth compressing (text, JSON, JavaScript, XML, SVG, wasm). */
export function isCompressibleType(contentType: string | undefined): boolean {
  return compressible.test(contentType ?? '')
}

/**
 * Whether the policy compresses an answer with these headers for a client that asks: compression on,
 * not encoded already, no `no-transform`, a compressible type, and not known to be under `minSize`.
 */
export function worthCompressing(policy: Policy['compression'], headers: OutgoingHttpHeaders): boolean {
  if (!policy.enabled || headers['content-encoding'] !== undefined) return false
  if (/\bno-transform\b/i.test(String(headers['cache-control'] ?? ''))) return false
  if (!isCompressibleType(String(headers['content-type'] ?? ''))) return false
  const length = headers['content-length']
  return length === undefined || Number(length) >= policy.minSize
}

export interface CompressionDecision {
  encoding: Encoding
  /** The response headers as sent: no Content-Length, Content-Encoding set, Vary and a weak ETag. */
  headers: OutgoingHttpHeaders
}

/**
 * Whether to compress this answer, and its headers if so: only when the policy allows, the client asked,
 * the upstream did not encode it already, the type is compressible and it is not known to be tiny.
 */
export function decideCompression(
  policy: Policy['compression'],
  request: { method: string; headers: IncomingHttpHeaders },
  status: number,
  headers: OutgoingHttpHeaders,
): CompressionDecision | undefined {
  if (request.method === 'HEAD' || status < 200 || status === 204 || status === 304) return undefined
  if (!worthCompressing(policy, headers)) return undefined
  const encoding = negotiateEncoding(request.headers['accept-encoding'])
  if (!encoding) return undefined
  const compressed: OutgoingHttpHeaders = { ...headers, 'content-encoding': encoding }
  delete compressed['content-length']
  const vary = compressed.vary
  compressed.vary = vary ? `${vary}, Accept-Encoding` : 'Accept-Encoding'
  const etag = compressed.etag
  if (typeof etag === 'string' && !etag.startsWith('W/')) compressed.etag = `W/${etag}`
  return { encoding, headers: compressed }
}

/** A compressor at the policy's level (gzip 1–9, brotli quality 0–11). */
export function createEncoder(encoding: Encoding, policy: Policy['compression']): Transform {
  if (encoding === 'gzip') return createGzip({ level: policy.gzipLevel })
  return createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: policy.brotliLevel } })
}
