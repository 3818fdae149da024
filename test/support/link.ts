import { type AddressInfo, createServer, Socket } from 'node:net'
import type { Page } from 'playwright-core'

/** A loopback TCP relay that delays every chunk, both ways: a link with real round trips. */
export interface DelayedLink {
  port: number
  /** Where new connections go (the relay can listen before what is behind it knows its own port). */
  retarget(port: number): void
  close(): Promise<void>
}

/**
 * Forwards each connection to `127.0.0.1:<target>`, every chunk held for `oneWayMs` before it is
 * written on (so a round trip costs twice that), in order. This kernel has no netem; unlike the
 * DevTools throttle, the delay applies to everything on the connection: TLS, HTTP/2 flow-control frames
 * (a WINDOW_UPDATE comes back one round trip later), WebSocket frames. It buffers without limit, like a
 * link whose bandwidth is never the bottleneck.
 */
export async function delayedLink(oneWayMs: number, targetPort = 0): Promise<DelayedLink> {
  let target = targetPort
  const sockets = new Set<Socket>()
  const relay = (from: Socket, to: Socket) => {
    // Timers of one duration run in the order they were set: chunks keep their order.
    from.on('data', (chunk: Buffer) => setTimeout(() => to.destroyed || to.write(chunk), oneWayMs))
    from.on('end', () => setTimeout(() => to.destroyed || to.end(), oneWayMs))
    from.on('error', () => to.destroy())
    from.on('close', () => setTimeout(() => to.destroy(), oneWayMs))
  }
  // Half-open both ways: a side that finished sending still gets what the other side sends after.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = new Socket({ allowHalfOpen: true }).connect(target, '127.0.0.1')
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    }
    relay(client, upstream)
    relay(upstream, client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    port,
    retarget: (port) => {
      target = port
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/**
 * DevTools' network emulation on one page: `latencyMs` added to every request it makes, and throughput
 * caps (bytes/s, -1 for none). It throttles HTTP requests and responses inside Chromium only: not
 * WebSocket frames, not HTTP/2 flow control, not other pages (a popup has its own target).
 */
export async function emulateLink(
  page: Page,
  conditions: { latencyMs: number; downloadBytesPerSecond?: number; uploadBytesPerSecond?: number },
): Promise<void> {
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: conditions.latencyMs,
    downloadThroughput: conditions.downloadBytesPerSecond ?? -1,
    uploadThroughput: conditions.uploadBytesPerSecond ?? -1,
  })
}
