import { spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'

/**
 * Python's own WSGI server (wsgiref), which folds `X_User` and `X-User` into one environ key
 * (`HTTP_X_USER`), as gunicorn before 22 did and Django or Flask behind them read it. Each answer is
 * the request's `HTTP_*` environ as JSON: what a WSGI app believes the headers were.
 */
const wsgiSource = `
import json
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, WSGIRequestHandler, make_server

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True

def app(environ, start_response):
    seen = {key: value for key, value in environ.items() if key.startswith("HTTP_")}
    seen["PATH_INFO"] = environ.get("PATH_INFO", "")
    body = json.dumps(seen).encode()
    start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))])
    return [body]

server = make_server("127.0.0.1", 0, app, server_class=Threaded, handler_class=Quiet)
print(f"PORT {server.server_port}", flush=True)
server.serve_forever()
`

export interface WsgiApp {
  url: string
  close(): Promise<void>
}

export async function wsgiEchoApp(): Promise<WsgiApp> {
  const directory = await mkdtemp(path.join(tmpdir(), 'pcl-wsgi-'))
  const script = path.join(directory, 'app.py')
  await writeFile(script, wsgiSource)
  const child = spawn('/usr/bin/python3', [script], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const output: string[] = []
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stderr }).on('line', (line) => output.push(line))
    createInterface({ input: child.stdout }).on('line', (line) => {
      const port = /^PORT (\d+)$/.exec(line)?.[1]
      if (port)
        resolve({
          url: `http://127.0.0.1:${port}`,
          close: async () => {
            child.kill('SIGKILL')
            await exited
          },
        })
    })
    void exited.then(() => reject(new Error(`the WSGI app exited before listening:\n${output.join('\n')}`)))
  })
}
