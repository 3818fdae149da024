import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type AddressInfo, createServer as createTcpServer, type Server as TcpServer } from 'node:net'
import { type WebSocket, WebSocketServer } from 'ws'
import { createEchoApp, listen } from '../../src/demo/echo-app.js'

export interface Upstream {
  url: string
  port: number
  close(): Promise<void>
}

function closing(server: Server | TcpServer): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if ('closeAllConnections' in server) server.closeAllConnections()
      server.close(() => resolve())
    })
}

/** The demo echo app: answers every request with a JSON echo and echoes WebSocket messages. */
export async function echoUpstream(): Promise<Upstream> {
  const server = createEchoApp()
  const port = await listen(server, 0)
  return { url: `http://127.0.0.1:${port}`, port, close: closing(server) }
}

/** An HTTP upstream driven by a handler, for slow, dropping and oversize behaviour. */
export async function httpUpstream(
  handler: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<Upstream> {
  const server = createServer({ maxHeaderSize: 1024 * 1024 }, handler)
  const port = await listen(server, 0)
  return { url: `http://127.0.0.1:${port}`, port, close: closing(server) }
}

/** A TCP server that accepts connections and does whatever `onSocket` says (e.g. hangs up at once). */
export async function tcpUpstream(onSocket: (socket: import('node:net').Socket) => void): Promise<Upstream> {
  const server = createTcpServer(onSocket)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return { url: `http://127.0.0.1:${port}`, port, close: closing(server) }
}

/** A WebSocket upstream whose connections are handed to `onConnection`. */
export async function wsUpstream(
  onConnection: (socket: WebSocket, request: IncomingMessage) => void,
  options: { handleProtocols?: (protocols: Set<string>) => string | false } = {},
): Promise<Upstream & { sockets: WebSocketServer }> {
  const server = createServer((_request, response) => response.end('plain http'))
  const sockets = new WebSocketServer({
    server,
    ...(options.handleProtocols ? { handleProtocols: options.handleProtocols } : {}),
  })
  sockets.on('connection', onConnection)
  const port = await listen(server, 0)
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    sockets,
    close: async () => {
      for (const client of sockets.clients) client.terminate()
      await closing(server)()
    },
  }
}

/**
 * A port where connections are refused, for targets that are down: port 1 (tcpmux) is privileged and
 * never served on this machine, so no other test can take it the way it can take a released port.
 */
export const refusingPort = 1

/** An HTTP upstream that holds every request until `release()`, and says when one has arrived. */
export async function heldUpstream(
  body: string,
): Promise<Upstream & { arrived(): Promise<void>; release(): void }> {
  const held: (() => void)[] = []
  let waiting: (() => void)[] = []
  const upstream = await httpUpstream((_request, response) => {
    held.push(() => response.end(body))
    for (const resolve of waiting) resolve()
    waiting = []
  })
  return {
    ...upstream,
    arrived: () => (held.length > 0 ? Promise.resolve() : new Promise((resolve) => waiting.push(resolve))),
    release: () => {
      for (const answer of held.splice(0)) answer()
    },
  }
}

/**
 * A free port for a server that must be started on a port chosen beforehand (Redis, pebble): bound,
 * then released. Another process may take it meanwhile, so whoever starts the server checks it got it.
 */
export async function closedPort(): Promise<number> {
  const server = createTcpServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise((resolve) => server.close(resolve))
  return port
}
