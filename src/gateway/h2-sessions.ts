import type { IncomingMessage, ServerResponse } from 'node:http'
import { constants, type Http2ServerRequest, type Http2Session, type Http2Stream } from 'node:http2'

/**
 * Streams a session may reset before their answer at once, and how many more per second after. Below
 * nghttp2's own limit (1000, 33 per second), which sends a GOAWAY and then stops the session without
 * telling Node: this one closes the socket too.
 */
const resetBurst = 900
const resetsPerSecond = 30

/**
 * Receive windows sized for uploads and bounded per session. Node refills a session's own window as
 * data arrives, so what a client can make the gateway hold unread is what its uploading streams may
 * send: each at most its window, or its declared `content-length` (nghttp2 holds a body to it). That
 * sum is kept within `budget`: the initial stream window (SETTINGS_INITIAL_WINDOW_SIZE, which applies
 * to every stream of the session) is lowered as uploads run side by side and raised as they end, in
 * powers of two between 64 KiB and `streamWindow`; while a lowering is not acknowledged, an upload
 * that would overrun the budget is refused with REFUSED_STREAM (never processed, so a client may send
 * it again). Small bodies (an API's JSON) cost their length and are never refused.
 */
export function boundUploadWindows(
  session: Http2Session,
  windows: { streamWindow: number; budget: number },
  refused: WeakSet<Http2Stream>,
): void {
  const uploading = new Map<Http2Stream, number>()
  let reserved = 0
  let acknowledged = windows.streamWindow
  let sent = windows.streamWindow
  const retune = () => {
    const share = Math.floor(windows.budget / Math.max(1, uploading.size))
    const target =
      share >= windows.streamWindow
        ? windows.streamWindow
        : Math.max(65_536, 2 ** Math.floor(Math.log2(share)))
    if (target === sent || session.destroyed || session.closed) return
    sent = target
    session.settings({ initialWindowSize: target }, () => {
      if (sent === target) acknowledged = target
    })
  }
  session.on('stream', (stream: Http2Stream & { endAfterHeaders?: boolean }, headers) => {
    if (stream.endAfterHeaders) return
    const declared = Number(headers['content-length'])
    const cost =
      Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, acknowledged) : acknowledged
    if (sent < acknowledged && reserved + cost > windows.budget) {
      refused.add(stream)
      stream.close(constants.NGHTTP2_REFUSED_STREAM)
      return
    }
    uploading.set(stream, cost)
    reserved += cost
    const done = () => {
      if (!uploading.delete(stream)) return
      reserved -= cost
      retune()
    }
    stream.once('end', done)
    stream.once('close', done)
    if (reserved > windows.budget || cost === acknowledged) retune()
  })
}

/**
 * HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets them at once, so each costs
 * the server a request while costing the client two frames. A session gets a budget of streams it
 * resets before their answer (a token bucket: a browser cancelling the images of a page it left stays
 * far below it); past it the session is closed with GOAWAY ENHANCE_YOUR_CALM and its socket destroyed
 * at once. A session whose client closed its side is destroyed too, rather than left half-open until
 * an idle timer fires (CLOSE-WAIT).
 */
export function limitStreamResets(
  session: Http2Session,
  onAbuse: (resets: number) => void,
  /** Streams the gateway itself refused: not the client's resets. */
  refused: WeakSet<Http2Stream>,
): void {
  let tokens = resetBurst
  let refilledAt = Date.now()
  let resets = 0
  let closing = false
  session.on('stream', (stream) => {
    stream.once('aborted', () => {
      if (closing || refused.has(stream)) return
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
