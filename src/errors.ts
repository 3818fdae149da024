import type { OutgoingHttpHeaders } from 'node:http'

/**
 * Every rejection the gateway answers has one of these codes. Codes are stable: clients, dashboards and
 * alerts key on them, so a code is never renamed or reused for another meaning.
 */
export const errorCodes = {
  PCL_BAD_REQUEST: { status: 400, message: 'The request is malformed' },
  PCL_ACCESS_DENIED: { status: 403, message: 'Access to this path is restricted' },
  PCL_AUTH_REQUIRED: { status: 401, message: 'Authentication is required' },
  PCL_TOKEN_INVALID: { status: 401, message: 'A valid bearer token is required' },
  PCL_AUTH_UNAVAILABLE: { status: 502, message: 'The authentication service could not be reached' },
  PCL_AUTH_TIMEOUT: { status: 504, message: 'The authentication service did not answer in time' },
  PCL_NOT_FOUND: { status: 404, message: 'Not found' },
  PCL_METHOD_NOT_ALLOWED: { status: 405, message: 'This method is not allowed here' },
  PCL_PRECONDITION_FAILED: { status: 412, message: 'A precondition of the request is not met' },
  PCL_RANGE_NOT_SATISFIABLE: { status: 416, message: 'The requested range is not in the file' },
  PCL_CORS_ORIGIN_DENIED: { status: 403, message: 'This origin is not allowed' },
  PCL_CORS_METHOD_DENIED: { status: 403, message: 'This method is not allowed for cross-origin requests' },
  PCL_CORS_HEADER_DENIED: {
    status: 403,
    message: 'A requested header is not allowed for cross-origin requests',
  },
  PCL_WS_ORIGIN_DENIED: { status: 403, message: 'WebSocket connections from this origin are not allowed' },
  PCL_WS_TOO_MANY_CONNECTIONS: { status: 429, message: 'Too many WebSocket connections' },
  PCL_RATE_LIMITED: { status: 429, message: 'Too many requests' },
  PCL_RATE_LIMIT_UNAVAILABLE: { status: 503, message: 'The rate limit cannot be checked right now' },
  PCL_BODY_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  PCL_URL_TOO_LONG: { status: 414, message: 'The request target is too long' },
  PCL_HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large' },
  PCL_REQUEST_TIMEOUT: { status: 408, message: 'The request was not received in time' },
  PCL_UNKNOWN_HOST: { status: 404, message: 'No app is configured for this host' },
  PCL_MISDIRECTED_REQUEST: { status: 421, message: 'This connection cannot serve the requested host' },
  PCL_TLS_VERSION_TOO_OLD: {
    status: 403,
    message: 'The TLS version of this connection is below the policy minimum',
  },
  PCL_UPSTREAM_UNREACHABLE: { status: 502, message: 'The upstream could not be reached' },
  PCL_NO_HEALTHY_UPSTREAM: { status: 503, message: 'No upstream target is healthy at the moment' },
  PCL_UPSTREAM_BUSY: {
    status: 503,
    message: 'Every connection to the upstream is busy and too many requests are waiting for one',
  },
  PCL_UPSTREAM_BAD_RESPONSE: {
    status: 502,
    message: 'The upstream sent an invalid response or closed the connection',
  },
  PCL_UPSTREAM_CONNECT_TIMEOUT: { status: 504, message: 'Connecting to the upstream timed out' },
  PCL_UPSTREAM_TIMEOUT: { status: 504, message: 'The upstream did not answer in time' },
  PCL_INTERNAL: { status: 500, message: 'Internal gateway error' },
} as const satisfies Record<string, { status: number; message: string }>

export type ErrorCode = keyof typeof errorCodes

/** The JSON body of every rejection. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; requestId: string }
}

export function errorBody(code: ErrorCode, requestId: string, message?: string): ErrorBody {
  return { error: { code, message: message ?? errorCodes[code].message, requestId } }
}

export function errorStatus(code: ErrorCode): number {
  return errorCodes[code].status
}

/**
 * A complete HTTP/1.1 error answer, for sockets the gateway answers outside any request (upgrades, parse
 * errors). `headers` are the policy's response edits for the app, when one is known.
 */
export function rawHttpError(code: ErrorCode, requestId: string, headers: OutgoingHttpHeaders = {}): string {
  const body = JSON.stringify(errorBody(code, requestId))
  return (
    rawHttpHead(errorStatus(code), code, {
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    }) + body
  )
}

/** An HTTP/1.1 status line and headers, written straight to a socket. */
export function rawHttpHead(status: number, reason: string, headers: OutgoingHttpHeaders): string {
  let head = `HTTP/1.1 ${status} ${reason}\r\n`
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    for (const item of Array.isArray(value) ? value : [value]) head += `${name}: ${item}\r\n`
  }
  return `${head}\r\n`
}
