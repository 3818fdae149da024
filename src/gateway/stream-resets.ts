import type { IncomingMessage, ServerResponse } from 'node:http'
import { constants, type Http2ServerRequest, type Http2Session } from 'node:http2'

/** Streams a session may reset before their answer at once, and how many more per second after. */
const resetBurst = 200
const resetsPerSecond = 20

/**
 * HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets them at once, so each costs
 * the server a request while costing the client two frames. A session gets a budget of streams it
 * resets before their answer (a token bucket: a browser cancelling the images of a page it left stays
 * far below it); past it the session is closed with GOAWAY ENHANCE_YOUR_CALM and its socket destroyed
 * at once. A session whose client closed its side is destroyed too, rather than left half-open until
 * an idle timer fires (CLOSE-WAIT).
 */
export function limitStreamResets(session: Http2Session, onAbuse: (resets: number) => void): void {
  let tokens = resetBurst
  let refilledAt = Date.now()
  let resets = 0
  let closing = false
  session.on('stream', (stream) => {
    stream.once('aborted', () => {
      if (closing) return
      resets += 1
      const now = Date.now()
      tokens = Math.min(resetBurst, tokens + ((now - refilledAt) / 1000) * resetsPerSecond)
      refilledAt = now
      tokens -= 1
      if (tokens >= 0 || session.destroyed) return
      closing = true
      onAbuse(resets)
      // The GOAWAY goes out with this turn's writes; destroying at once would drop it unsent.
      session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM)
      setImmediate(() => session.destroy())
    })
  })
  session.socket?.once('end', () => {
    if (!session.destroyed) session.destroy()
  })
}

type Handler = (request: IncomingMessage, response: ServerResponse) => void

/**
 * The listener's handler, called for an HTTP/2 request once the read that opened its stream has been
 * processed: a stream reset in the same read (the rapid-reset pattern: HEADERS and RST_STREAM in one
 * packet) never reaches a guard, a store, an auth service or the upstream, and costs no more than the
 * frames did. HTTP/1.1 requests are handled at once.
 */
export function afterTheReadSettles(handler: Handler): Handler {
  return (request, response) => {
    const { stream } = request as unknown as Partial<Http2ServerRequest>
    if (!stream) return handler(request, response)
    setImmediate(() => {
      if (!stream.closed && !stream.destroyed) handler(request, response)
    })
  }
}
