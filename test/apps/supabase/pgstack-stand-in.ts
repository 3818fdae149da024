import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'

/**
 * A stand-in for pgStack's API (PostgREST under /rest/v1, GoTrue under /auth/v1, Storage under
 * /storage/v1, Realtime's Phoenix socket under /realtime/v1), answering what supabase-js v2 asks in the
 * shapes the real services answer, and recording every request as it arrived.
 */
export interface PgStackStandIn {
  url: string
  received: { method: string; url: string; headers: IncomingMessage['headers'] }[]
  /** Stored objects by `bucket/path`. */
  objects: Map<string, { type: string; body: Buffer; metadata: string | undefined }>
  /** Realtime topics joined, with the Origin of the socket. */
  joins: { topic: string; origin: string | undefined }[]
  stop(): Promise<void>
}

export const anonKey = 'anon-key-of-the-test'
const user = { email: 'ada@example.test', password: 'correct horse battery' }

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/** A token shaped like GoTrue's (auth-js reads its claims); nothing here checks its signature. */
function accessToken(sub: string): string {
  const exp = Math.floor(Date.now() / 1000) + 3600
  const claims = { sub, exp, role: 'authenticated', aud: 'authenticated', email: user.email }
  return `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}.c2lnbmF0dXJl`
}

export async function startPgStackStandIn(): Promise<PgStackStandIn> {
  const received: PgStackStandIn['received'] = []
  const objects: PgStackStandIn['objects'] = new Map()
  const joins: PgStackStandIn['joins'] = []
  const userId = randomUUID()
  const token = accessToken(userId)
  const todos = new Map<number, { id: number; title: string }>([
    [1, { id: 1, title: 'milk' }],
    [2, { id: 2, title: 'eggs' }],
  ])

  const json = (
    response: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) =>
    response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))

  const handle = async (request: IncomingMessage, response: ServerResponse, body: Buffer) => {
    const url = new URL(request.url ?? '/', 'http://pgstack')
    if (url.pathname === '/health') return json(response, 200, { status: 'ok', pg_connected: true })
    if (url.pathname.startsWith('/storage/v1/object/public/')) {
      const object = objects.get(url.pathname.slice('/storage/v1/object/public/'.length))
      if (!object)
        return json(response, 404, { statusCode: '404', error: 'not_found', message: 'Object not found' })
      return response.writeHead(200, { 'content-type': object.type }).end(object.body)
    }
    if (request.headers.apikey !== anonKey) return json(response, 401, { message: 'Invalid API key' })
    const signedIn = request.headers.authorization === `Bearer ${token}`

    if (url.pathname === '/auth/v1/token' && url.searchParams.get('grant_type') === 'password') {
      const credentials = JSON.parse(body.toString() || '{}') as { email?: string; password?: string }
      if (credentials.email !== user.email || credentials.password !== user.password)
        return json(response, 400, {
          code: 400,
          error_code: 'invalid_credentials',
          msg: 'Invalid login credentials',
        })
      const now = new Date().toISOString()
      return json(response, 200, {
        access_token: token,
        token_type: 'bearer',
        expires_in: 3600,
        expires_at: Math.floor(Date.now() / 1000) + 3600,
        refresh_token: randomUUID(),
        user: {
          id: userId,
          aud: 'authenticated',
          role: 'authenticated',
          email: user.email,
          app_metadata: { provider: 'email' },
          user_metadata: {},
          identities: [],
          created_at: now,
          updated_at: now,
        },
      })
    }
    if (url.pathname === '/rest/v1/todos' && request.method === 'GET') {
      if (!signedIn) return json(response, 200, [], { 'content-range': '*/0' })
      const rows = [...todos.values()]
      const total = request.headers.prefer?.includes('count=exact') ? String(rows.length) : '*'
      return json(response, 200, rows, { 'content-range': `0-${rows.length - 1}/${total}` })
    }
    if (url.pathname === '/rest/v1/todos' && request.method === 'POST') {
      if (!signedIn)
        return json(response, 401, { code: '42501', message: 'permission denied for table todos' })
      const merge = request.headers.prefer?.includes('resolution=merge-duplicates') ?? false
      const rows = ([] as { id: number; title: string }[]).concat(JSON.parse(body.toString()))
      for (const row of rows) {
        if (todos.has(row.id) && !merge)
          return json(response, 409, {
            code: '23505',
            message: 'duplicate key value violates unique constraint',
          })
        todos.set(row.id, row)
      }
      const representation = request.headers.prefer?.includes('return=representation') ?? false
      return representation ? json(response, 201, rows) : response.writeHead(201).end()
    }
    const upload = /^\/storage\/v1\/object\/([^/]+)\/(.+)$/.exec(url.pathname)
    if (upload && request.method === 'POST') {
      if (!signedIn)
        return json(response, 403, {
          statusCode: '403',
          error: 'Unauthorized',
          message: 'new row violates row-level security policy',
        })
      const key = `${upload[1]}/${upload[2]}`
      if (objects.has(key) && request.headers['x-upsert'] !== 'true')
        return json(response, 400, {
          statusCode: '409',
          error: 'Duplicate',
          message: 'The resource already exists',
        })
      const type = request.headers['content-type'] ?? 'application/octet-stream'
      if (type.startsWith('multipart/form-data')) {
        const form = await new Response(new Uint8Array(body), {
          headers: { 'content-type': type },
        }).formData()
        const file = form.get('') as File
        objects.set(key, {
          type: file.type,
          body: Buffer.from(await file.arrayBuffer()),
          metadata: undefined,
        })
      } else {
        const metadata = request.headers['x-metadata'] as string | undefined
        objects.set(key, { type, body, metadata })
      }
      return json(response, 200, { Id: randomUUID(), Key: key })
    }
    json(response, 404, { message: `no route ${request.method} ${url.pathname}` })
  }

  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      received.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers })
      handle(request, response, Buffer.concat(chunks)).catch((error: Error) =>
        json(response, 500, { message: error.message }),
      )
    })
  })

  // Realtime's Phoenix socket, protocol 2.0.0: [join_ref, ref, topic, event, payload].
  const sockets = new WebSocketServer({ server, path: '/realtime/v1/websocket' })
  sockets.on('connection', (socket, request) => {
    socket.on('message', (data, binary) => {
      if (binary) return
      const [joinRef, ref, topic, event] = JSON.parse(String(data)) as [string | null, string, string, string]
      const reply = (response: object) =>
        socket.send(JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'ok', response }]))
      if (event === 'phx_join') {
        joins.push({ topic, origin: request.headers.origin })
        reply({ postgres_changes: [] })
      } else if (event === 'heartbeat' || event === 'access_token' || event === 'phx_leave') reply({})
    })
  })

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    objects,
    joins,
    stop: () =>
      new Promise((resolve) => {
        for (const client of sockets.clients) client.terminate()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export const credentials = user
