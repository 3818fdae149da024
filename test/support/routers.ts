import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import express from 'express'
import Fastify from 'fastify'

/**
 * Real app frameworks as upstreams, each with the same handlers: `restricted` behind `/admin`,
 * `/admin/...`, `/internal` and `/sql`; `login` on `POST /login`; `public` on `/public` and below.
 * A handler answers `{"handler": kind, "path": ...}` and reports itself, so a test can tell whether
 * a restricted handler ran, whatever the gateway made of the answer.
 */
export interface FrameworkApp {
  name: string
  url: string
  /** Every handler run so far: kind and the path the framework routed. */
  hits: { kind: HandlerKind; path: string }[]
  /** Resolves once every handler run before the call is in `hits` (another process reports late). */
  flush(): Promise<void>
  close(): Promise<void>
}

let flushes = 0

/** Asks the app for a marker path and waits until its report arrives, after every earlier one. */
async function flushThrough(url: string, hits: FrameworkApp['hits'], reported: () => Promise<void>) {
  const marker = `/public/flush-${++flushes}`
  await fetch(`${url}${marker}`).then((answer) => answer.arrayBuffer())
  while (!hits.some((hit) => hit.path === marker)) await reported()
}

export type HandlerKind = 'restricted' | 'login' | 'public'

const restrictedRoutes = ['/admin', '/admin/*', '/internal', '/sql']

/** Fastify with its most permissive router settings: every normalisation find-my-way can do is on. */
export async function fastifyApp(): Promise<FrameworkApp> {
  const hits: FrameworkApp['hits'] = []
  // Fastify validates useSemicolonDelimiter in routerOptions but leaves it out of the type there.
  const routerOptions = {
    ignoreTrailingSlash: true,
    ignoreDuplicateSlashes: true,
    caseSensitive: false,
    useSemicolonDelimiter: true,
  }
  const app = Fastify({ routerOptions })
  const handler = (kind: HandlerKind) => async (request: { url: string; routeOptions: { url?: string } }) => {
    const routed = request.url.split(/[?#;]/, 1)[0] ?? ''
    hits.push({ kind, path: routed })
    return { handler: kind, path: routed }
  }
  for (const route of restrictedRoutes) app.all(route, handler('restricted'))
  app.post('/login', handler('login'))
  app.all('/public', handler('public'))
  app.all('/public/*', handler('public'))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return {
    name: 'fastify',
    url: `http://127.0.0.1:${port}`,
    hits,
    flush: async () => undefined,
    close: () => app.close(),
  }
}

/** Express 5 with its defaults: case-insensitive, non-strict routing. */
export async function expressApp(): Promise<FrameworkApp> {
  const hits: FrameworkApp['hits'] = []
  const app = express()
  const handler = (kind: HandlerKind) => (request: express.Request, response: express.Response) => {
    hits.push({ kind, path: request.path })
    response.json({ handler: kind, path: request.path })
  }
  for (const route of ['/admin', '/admin/*rest', '/internal', '/sql']) app.all(route, handler('restricted'))
  app.post('/login', handler('login'))
  app.all('/public', handler('public'))
  app.all('/public/*rest', handler('public'))
  const server = await new Promise<Server>((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
  })
  const { port } = server.address() as AddressInfo
  return {
    name: 'express',
    url: `http://127.0.0.1:${port}`,
    hits,
    flush: async () => undefined,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

const fastapiSource = `
import socket, sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

def handler(kind):
    async def run(request: Request):
        print(f"HIT {kind} {request.url.path}", flush=True)
        return JSONResponse({"handler": kind, "path": request.url.path})
    return run

for route in ["/admin", "/admin/{rest:path}", "/internal", "/sql"]:
    app.add_api_route(route, handler("restricted"), methods=methods)
app.add_api_route("/login", handler("login"), methods=["POST"])
app.add_api_route("/public", handler("public"), methods=methods)
app.add_api_route("/public/{rest:path}", handler("public"), methods=methods)

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(f"PORT {listener.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listener])
`

const goSource = `package main

import (
	"fmt"
	"net"
	"net/http"
)

func handler(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("HIT %s %s\\n", kind, r.URL.Path)
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, "{\\"handler\\":%q,\\"path\\":%q}", kind, r.URL.Path)
	}
}

func main() {
	mux := http.NewServeMux()
	for _, route := range []string{"/admin", "/admin/", "/internal", "/sql"} {
		mux.HandleFunc(route, handler("restricted"))
	}
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		handler("login")(w, r)
	})
	mux.HandleFunc("/public", handler("public"))
	mux.HandleFunc("/public/", handler("public"))
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("PORT %d\\n", listener.Addr().(*net.TCPAddr).Port)
	panic(http.Serve(listener, mux))
}
`

/** FastAPI on uvicorn, from Debian's python3-fastapi and uvicorn: the SM pack's own framework. */
export async function fastapiApp(): Promise<FrameworkApp> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-fastapi-'))
  const script = path.join(directory, 'app.py')
  await writeFile(script, fastapiSource)
  return processApp('fastapi', spawn('/usr/bin/python3', [script], { stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** Go's net/http ServeMux, from Debian's golang-go: built once per run into a temporary folder. */
export async function goApp(): Promise<FrameworkApp> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-go-'))
  await writeFile(path.join(directory, 'main.go'), goSource)
  const binary = path.join(directory, 'app')
  const env = {
    ...process.env,
    GOCACHE: path.join(tmpdir(), 'pcl-go-cache'),
    GO111MODULE: 'off',
    HOME: directory,
  }
  await promisify(execFile)('go', ['build', '-o', binary, 'main.go'], { cwd: directory, env })
  return processApp('go', spawn(binary, [], { stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** An app in another process: it prints `PORT n` once listening and `HIT kind path` per handler run. */
function processApp(name: string, child: ChildProcess): Promise<FrameworkApp> {
  const hits: FrameworkApp['hits'] = []
  const output: string[] = []
  let waiting: (() => void)[] = []
  const reported = () => new Promise<void>((resolve) => waiting.push(resolve))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => {
      output.push(line)
      const hit = /^HIT (\w+) (.*)$/.exec(line)
      if (hit) {
        hits.push({ kind: hit[1] as HandlerKind, path: hit[2] as string })
        for (const resolve of waiting) resolve()
        waiting = []
      }
      const port = /^PORT (\d+)$/.exec(line)
      if (port) {
        resolve({
          name,
          url: `http://127.0.0.1:${port[1]}`,
          hits,
          flush: () => flushThrough(`http://127.0.0.1:${port[1]}`, hits, reported),
          close: async () => {
            child.kill('SIGKILL')
            await exited
          },
        })
      }
    }
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', onLine)
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => output.push(line))
    void exited.then(() => reject(new Error(`${name} app exited before listening:\n${output.join('\n')}`)))
  })
}
