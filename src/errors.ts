import type { OutgoingHttpHeaders } from 'node:http'

/**
 * Every rejection the gateway answers has one of these codes. Codes are stable: clients, dashboards and
 * alerts key on them, so a code is never renamed or reused for another meaning. `when` is the text of docs/errors.md (npm run docs).
 */
export const errorCodes = {
  PCL_BAD_REQUEST: {
    status: 400,
    message: 'The request is malformed',
    when: 'The request target is not a path (`*`, absolute-form), the path is refused by canonicalisation, or the request cannot be parsed.',
  },
  PCL_ACCESS_DENIED: {
    status: 403,
    message: 'Access to this path is restricted',
    when: 'An `access` rule refuses this client.',
  },
  PCL_AUTH_REQUIRED: {
    status: 401,
    message: 'Authentication is required',
    when: '`basicAuth` covers the path and the credentials are missing or wrong; `WWW-Authenticate` asks for them.',
  },
  PCL_TOKEN_INVALID: {
    status: 401,
    message: 'A valid bearer token is required',
    when: '`jwt.paths` cover the path and the bearer token is missing or not valid; `WWW-Authenticate: Bearer error=...`.',
  },
  PCL_AUTH_UNAVAILABLE: {
    status: 502,
    message: 'The authentication service could not be reached',
    when: 'The `forwardAuth` service could not be reached.',
  },
  PCL_AUTH_TIMEOUT: {
    status: 504,
    message: 'The authentication service did not answer in time',
    when: 'The `forwardAuth` service did not answer within its `timeout`.',
  },
  PCL_NOT_FOUND: {
    status: 404,
    message: 'Not found',
    when: 'An `access` rule with `respond: 404` refuses this client, or a `static` path names no file (and no `fallback` answers it).',
  },
  PCL_METHOD_NOT_ALLOWED: {
    status: 405,
    message: 'This method is not allowed here',
    when: 'A method other than GET or HEAD on a `static` path; `Allow: GET, HEAD`.',
  },
  PCL_PRECONDITION_FAILED: {
    status: 412,
    message: 'A precondition of the request is not met',
    when: "A static file's `If-Match` or `If-Unmodified-Since` does not hold.",
  },
  PCL_RANGE_NOT_SATISFIABLE: {
    status: 416,
    message: 'The requested range is not in the file',
    when: 'A `Range` wholly past the end of a static file; `Content-Range: bytes */<size>`.',
  },
  PCL_CORS_ORIGIN_DENIED: {
    status: 403,
    message: 'This origin is not allowed',
    when: 'The Origin is not in `cors.origins`.',
  },
  PCL_CORS_METHOD_DENIED: {
    status: 403,
    message: 'This method is not allowed for cross-origin requests',
    when: 'A preflight asks for a method not in `cors.methods`.',
  },
  PCL_CORS_HEADER_DENIED: {
    status: 403,
    message: 'A requested header is not allowed for cross-origin requests',
    when: 'A preflight asks for a header not in `cors.allowedHeaders`.',
  },
  PCL_WS_ORIGIN_DENIED: {
    status: 403,
    message: 'WebSocket connections from this origin are not allowed',
    when: 'A WebSocket upgrade from an origin not allowed on that path, or without a required Origin.',
  },
  PCL_WS_TOO_MANY_CONNECTIONS: {
    status: 429,
    message: 'Too many WebSocket connections',
    when: '`websocket.maxConnections` or `maxConnectionsPerIp` reached.',
  },
  PCL_RATE_LIMITED: {
    status: 429,
    message: 'Too many requests',
    when: 'A rate limit is spent; `Retry-After` says when to try again.',
  },
  PCL_RATE_LIMIT_UNAVAILABLE: {
    status: 503,
    message: 'The rate limit cannot be checked right now',
    when: 'Redis cannot answer and the rule says `onStoreError: deny`.',
  },
  PCL_BODY_TOO_LARGE: {
    status: 413,
    message: 'The request body is too large',
    when: "The body is over `limits.maxBodySize` or its path's `limits.bodySizes` entry.",
  },
  PCL_URL_TOO_LONG: {
    status: 414,
    message: 'The request target is too long',
    when: 'The request target is over `limits.maxUrlLength`.',
  },
  PCL_HEADERS_TOO_LARGE: {
    status: 431,
    message: 'The request headers are too large',
    when: "The headers are over `limits.maxHeaderSize` (or Node's 16 KiB).",
  },
  PCL_REQUEST_TIMEOUT: {
    status: 408,
    message: 'The request was not received in time',
    when: 'The request head did not arrive within `--headers-timeout`, or its body not within `upstream.timeouts.upload`.',
  },
  PCL_UNKNOWN_HOST: {
    status: 404,
    message: 'No app is configured for this host',
    when: 'No app claims the Host.',
  },
  PCL_MISDIRECTED_REQUEST: {
    status: 421,
    message: 'This connection cannot serve the requested host',
    when: "The Host belongs to another app than the TLS connection's SNI, or a `tls.mode: off` app is asked for over TLS.",
  },
  PCL_TLS_VERSION_TOO_OLD: {
    status: 403,
    message: 'The TLS version of this connection is below the policy minimum',
    when: "The connection's TLS version is below the app's `tls.minVersion`.",
  },
  PCL_UPSTREAM_UNREACHABLE: {
    status: 502,
    message: 'The upstream could not be reached',
    when: "Connection refused, or the target's name does not resolve.",
  },
  PCL_NO_HEALTHY_UPSTREAM: {
    status: 503,
    message: 'No upstream target is healthy at the moment',
    when: 'Every target of the app is out of rotation (health checks or passive failures); answered at once.',
  },
  PCL_UPSTREAM_BUSY: {
    status: 503,
    message: 'Every connection to the upstream is busy and too many requests are waiting for one',
    when: 'Every connection to the target is busy (`upstream.maxConnections`) and its queue is full (`upstream.maxQueue`), or this client has `upstream.maxPerClient` requests in flight already.',
  },
  PCL_UPSTREAM_BAD_RESPONSE: {
    status: 502,
    message: 'The upstream sent an invalid response or closed the connection',
    when: 'The upstream hung up, or sent a response that cannot be parsed (oversize headers included).',
  },
  PCL_UPSTREAM_CONNECT_TIMEOUT: {
    status: 504,
    message: 'Connecting to the upstream timed out',
    when: '`upstream.timeouts.connect` ran out.',
  },
  PCL_UPSTREAM_TIMEOUT: {
    status: 504,
    message: 'The upstream did not answer in time',
    when: '`upstream.timeouts.headers` or `upstream.timeouts.idle` ran out before the response started.',
  },
  PCL_INTERNAL: {
    status: 500,
    message: 'Internal gateway error',
    when: 'A bug in the gateway; the log line has the stack.',
  },
} as const satisfies Record<string, { status: number; message: string; when: string }>

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
