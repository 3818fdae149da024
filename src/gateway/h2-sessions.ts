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
 * How long a session closed for abuse keeps reading after its GOAWAY: closing the socket while the
 * client's frames are still arriving answers them with a TCP reset, which can erase the GOAWAY from the
 * client's receive buffer before it reads it (the lingering close of RFC 9112 section 9.6, as nginx
 * does for HTTP/2). After a GOAWAY, new streams are ignored by nghttp2 and cost no handler.
 */
const abuseLingerMs = 1000

/** Streams a session may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS, as nginx). */
export const maxConcurrentStreams = 128

/** The stream window a session starts with: every stream it may open at once fits in the budget. */
export function startingStreamWindow(windows: { streamWindow: number; budget: number }): number {
  return windowFor(windows.budget / maxConcurrentStreams, windows.streamWindow)
}

/** A power of two between 64 KiB and `most` at or below `share`. */
function windowFor(share: number, most: number): number {
  return share >= most ? most : Math.max(65_536, 2 ** Math.floor(Math.log2(Math.max(1, share))))
}

/**
 * Receive windows sized for uploads and bounded per session. Node refills a session's own window as
 * data arrives, so what a client can make the gateway hold unread is what its uploading streams may
 * send: each at most the largest window it was given, or its declared `content-length` (nghttp2
 * holds a body to it). The stream window (SETTINGS_INITIAL_WINDOW_SIZE, which applies to every open
 * stream of the session) starts at the budget over the streams a session may open, so a burst of
 * streams fits; it is raised to the budget's share of the uploads running (up to `streamWindow`: one
 * upload gets all of it) and lowered as more run side by side, in powers of two. A stream the client
 * opened with a larger window than the budget still allows (a lowering not yet acknowledged) is
 * counted at that window; one that would take the session past twice its budget is refused with
 * REFUSED_STREAM (never processed, so a client may send it again). Uploads opened together are never
 * refused, since the window is set once the read that opened them is processed: a run of refusals
 * costs Node's own client its session.
 */
export function boundUploadWindows(
  session: Http2Session,
  windows: { streamWindow: number; budget: number },
  refused: WeakSet<Http2Stream>,
): void {
  const limit = 2 * windows.budget
  const uploading = new Map<Http2Stream, { declared: number; cost: number }>()
  let reserved = 0
  // The window the client may use for a new stream: the largest of those sent and not yet replaced.
  let sent = startingStreamWindow(windows)
  let clientMay = sent
  // A raise applies to every open stream too: each may then send up to it.
  const raisedCost = (upload: { declared: number; cost: number }, target: number) =>
    Math.min(upload.declared, Math.max(upload.cost, target))
  const grant = (target: number): boolean => {
    let raised = reserved
    for (const upload of uploading.values()) raised += raisedCost(upload, target) - upload.cost
    // Streams that hold what larger windows let in keep the window where it is.
    if (raised > limit) return false
    for (const [stream, upload] of uploading)
      uploading.set(stream, { ...upload, cost: raisedCost(upload, target) })
    reserved = raised
    return true
  }
  // Once the read that opened streams is processed: a burst of uploads gets one share each.
  let retuning = false
  const retune = () => {
    if (retuning) return
    retuning = true
    setImmediate(() => {
      retuning = false
      settle()
    })
  }
  const settle = () => {
    const target = windowFor(windows.budget / Math.max(1, uploading.size), windows.streamWindow)
    if (target === sent || session.destroyed || session.closed) return
    if (target > sent && !grant(target)) return
    sent = target
    clientMay = Math.max(clientMay, target)
    session.settings({ initialWindowSize: target }, () => {
      if (sent === target) clientMay = target
    })
  }
  session.on('stream', (stream: Http2Stream & { endAfterHeaders?: boolean }, headers) => {
    if (stream.endAfterHeaders) return
    const length = Number(headers['content-length'])
    const declared = Number.isSafeInteger(length) && length >= 0 ? length : Number.POSITIVE_INFINITY
    const cost = Math.min(declared, clientMay)
    if (reserved + cost > limit) {
      refused.add(stream)
      stream.close(constants.NGHTTP2_REFUSED_STREAM)
      return
    }
    uploading.set(stream, { declared, cost })
    reserved += cost
    const done = () => {
      const upload = uploading.get(stream)
      if (!upload) return
      uploading.delete(stream)
      reserved -= upload.cost
      retune()
    }
    stream.once('end', done)
    stream.once('close', done)
    retune()
  })
}

/**
 * HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets them at once, so each costs
 * the server a request while costing the client two frames. A session gets a budget of streams it
 * resets before their answer (a token bucket: a browser cancelling the images of a page it left stays
 * far below it); past it the session is sent GOAWAY ENHANCE_YOUR_CALM and destroyed once the client
 * closes its side or a short linger has passed. A session whose client closed its side is destroyed too, rather than left half-open until
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
      session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM)
      const linger = setTimeout(() => session.destroy(), abuseLingerMs)
      session.once('close', () => clearTimeout(linger))
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
