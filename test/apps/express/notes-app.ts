import { createHash, randomBytes } from 'node:crypto'
import type { Server } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import cookieParser from 'cookie-parser'
import { doubleCsrf } from 'csrf-csrf'
import express from 'express'
import session from 'express-session'
import multer from 'multer'

/**
 * A notes app on Express 5 as its authors would write it: express-session's cookie (named `session`,
 * the SM pack's HttpOnly name), csrf-csrf's double-submit token in a script-readable `XSRF-TOKEN`
 * cookie that axios copies into `X-XSRF-TOKEN` on every same-origin write, and multer for uploads.
 */
export interface NotesApp {
  url: string
  port: number
  /** Every request that reached the app: method, path, Origin and the answer's status. */
  received: { method: string; path: string; origin: string | undefined; status: number }[]
  uploads: { name: string; bytes: number; sha256: string }[]
  stop(): Promise<void>
}

/** axios's browser build, served at /build/ (by the gateway's static directory in front of the app). */
export const axiosDist = path.join(path.dirname(createRequire(import.meta.url).resolve('axios')), '..')

function page(user: string | undefined): string {
  const body = user
    ? `<p id="who">Signed in as ${user}</p>
<form id="note"><input name="text" aria-label="Note"><button type="submit" disabled>Save note</button></form>
<ul id="notes"></ul>
<form id="upload"><input type="file" name="file" aria-label="File"><button type="submit" disabled>Upload</button></form>
<p id="uploaded"></p>
<script src="/build/axios.min.js"></script>
<script>
  const $ = (id) => document.getElementById(id)
  const show = (id, error) => {
    $(id).textContent = 'Failed: ' + (error.response ? error.response.status + ' ' + JSON.stringify(error.response.data) : error.message)
  }
  $('note').addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      const { data } = await axios.post('/api/notes', { text: event.target.elements.text.value })
      $('notes').replaceChildren(...data.notes.map((text) => Object.assign(document.createElement('li'), { textContent: text })))
    } catch (error) { show('notes', error) }
  })
  $('upload').addEventListener('submit', async (event) => {
    event.preventDefault()
    const started = performance.now()
    try {
      const { data } = await axios.post('/api/files', new FormData(event.target))
      const ms = Math.round(performance.now() - started)
      $('uploaded').dataset.ms = ms
      $('uploaded').textContent = 'Uploaded ' + data.name + ': ' + data.bytes + ' bytes, sha256 ' + data.sha256
    } catch (error) { show('uploaded', error) }
  })
  // The forms work once this script has run: until then their buttons are disabled.
  for (const button of document.querySelectorAll('button')) button.disabled = false
</script>`
    : `<form method="post" action="/login"><input name="user" aria-label="User"><button type="submit">Sign in</button></form>`
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Notes</title></head><body><h1>Notes</h1>${body}</body></html>`
}

declare module 'express-session' {
  interface SessionData {
    user: string
    notes: string[]
  }
}

export async function startNotesApp(): Promise<NotesApp> {
  const secret = randomBytes(32).toString('hex')
  const received: NotesApp['received'] = []
  const uploads: NotesApp['uploads'] = []
  const { doubleCsrfProtection, generateCsrfToken } = doubleCsrf({
    getSecret: () => secret,
    getSessionIdentifier: (request) => request.session.id,
    cookieName: 'XSRF-TOKEN',
    cookieOptions: { httpOnly: false, sameSite: 'lax', path: '/' },
    getCsrfTokenFromRequest: (request) => request.headers['x-xsrf-token'] as string | undefined,
  })
  const app = express()
  // The gateway in front is on loopback: its X-Forwarded-Proto says whether the client used HTTPS.
  app.set('trust proxy', 'loopback')
  app.use((request, response, next) => {
    response.on('finish', () =>
      received.push({
        method: request.method,
        path: request.path,
        origin: request.headers.origin,
        status: response.statusCode,
      }),
    )
    next()
  })
  app.use('/build', express.static(axiosDist))
  app.use(cookieParser())
  app.use(
    session({
      name: 'session',
      secret,
      resave: false,
      saveUninitialized: false,
      cookie: { secure: 'auto', sameSite: 'lax' },
    }),
  )
  app.get('/health', (_request, response) => {
    response.json({ status: 'ok' })
  })
  app.post('/login', express.urlencoded({ extended: false }), (request, response, next) => {
    request.session.regenerate((error) => {
      if (error) return next(error)
      request.session.user = String(request.body.user ?? '')
      request.session.notes = []
      response.redirect(303, '/')
    })
  })
  app.get('/', (request, response) => {
    if (request.session.user)
      generateCsrfToken(request, response, {
        cookieOptions: { httpOnly: false, sameSite: 'lax', path: '/', secure: request.secure },
      })
    response.type('html').send(page(request.session.user))
  })
  const signedIn: express.RequestHandler = (request, response, next) => {
    if (request.session.user) next()
    else response.status(401).json({ error: 'sign in first' })
  }
  app.post('/api/notes', signedIn, doubleCsrfProtection, express.json(), (request, response) => {
    request.session.notes = [...(request.session.notes ?? []), String(request.body.text)]
    response.status(201).json({ notes: request.session.notes })
  })
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: 16 * 1024 * 1024 } })
  app.post('/api/files', signedIn, doubleCsrfProtection, upload.single('file'), (request, response) => {
    const file = request.file
    if (!file) return void response.status(400).json({ error: 'no file' })
    const stored = {
      name: file.originalname,
      bytes: file.size,
      sha256: createHash('sha256').update(file.buffer).digest('hex'),
    }
    uploads.push(stored)
    response.status(201).json(stored)
  })
  // csrf-csrf's refusal is an http-errors 403 ("invalid csrf token").
  app.use(
    (
      error: Error & { status?: number },
      _request: express.Request,
      response: express.Response,
      _next: express.NextFunction,
    ) => {
      response.status(error.status ?? 500).json({ error: error.message })
    },
  )
  const server = await new Promise<Server>((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    uploads,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
