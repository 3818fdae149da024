import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createEchoApp, listen } from './echo-app.js'

/**
 * `npm run demo`: the demo app on 127.0.0.1:3000 and the gateway in front of it with
 * policies/example.yaml, in development mode with internal TLS on unprivileged ports.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const ports = { app: 3000, http: 8080, https: 8443, admin: 9090 }

await listen(createEchoApp(), ports.app)
const gateway = spawn(
  process.execPath,
  [
    path.join(root, 'dist/cli.js'),
    'serve',
    '--policies',
    path.join(root, 'policies'),
    '--env',
    'development',
    '--listen',
    '127.0.0.1',
    '--http-port',
    String(ports.http),
    '--https-port',
    String(ports.https),
    '--admin-port',
    String(ports.admin),
    '--state-dir',
    path.join(root, '.state'),
  ],
  { stdio: ['ignore', 'inherit', 'inherit'] },
)
const ca = path.join(root, '.state/internal/ca.crt')
console.log(`
Portcullis demo: the echo app on http://127.0.0.1:${ports.app}, the gateway in front of it.
Try, in another terminal:
  curl --cacert ${ca} https://localhost:${ports.https}/hello?x=1           # proxied, HSTS set
  curl --cacert ${ca} --http2 -sI https://localhost:${ports.https}/       # HTTP/2
  curl -i http://localhost:${ports.http}/some/path                        # 308 to HTTPS
  curl -k -i https://127.0.0.1:${ports.https}/ -H 'Host: unknown.test'    # 404 PCL_UNKNOWN_HOST
  curl http://127.0.0.1:${ports.admin}/health                              # admin health
  node -e "const w=new (require('ws'))('wss://localhost:${ports.https}/ws',{ca:require('fs').readFileSync('${ca}')});w.on('message',m=>{console.log(String(m));w.close()})"
Edit policies/example.yaml and the gateway reloads it. Ctrl-C stops both.
`)
const stop = () => gateway.kill('SIGTERM')
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
gateway.once('exit', (code) => process.exit(code ?? 0))
