/**
 * Messages between the primary and one worker over Node's IPC pipe: `ask` expects an answer (bounded
 * by a timeout, so a dead peer never hangs a request), `tell` does not. The same class serves both
 * ends; what each end may ask and tell is written down once, in `protocol.ts`.
 */

/** `process` in a worker, a `cluster.Worker` in the primary. */
export interface Endpoint {
  send(message: Envelope, callback?: (error: Error | null) => void): boolean
  on(event: 'message', listener: (message: unknown) => void): unknown
  on(event: 'disconnect', listener: () => void): unknown
}

interface Envelope {
  pcl: 'ask' | 'tell' | 'answer'
  kind?: string
  id?: number
  body?: unknown
  error?: string
}

/** A table of what one side asks: kind → [what it sends, what it gets back]. */
export type AskTable = Record<string, [unknown, unknown]>
/** A table of what one side tells: kind → what it sends. */
export type TellTable = Record<string, unknown>

interface Waiting {
  resolve(body: unknown): void
  reject(error: Error): void
  timer: NodeJS.Timeout
}

/** How long an answer may take before the ask fails, unless the ask says otherwise. */
export const answerTimeoutMs = 5000

export class Channel<
  OutAsks extends AskTable,
  OutTells extends TellTable,
  InAsks extends AskTable,
  InTells extends TellTable,
> {
  private nextId = 0
  private readonly waiting = new Map<number, Waiting>()
  private readonly answerers = new Map<string, (body: unknown) => unknown>()
  private readonly listeners = new Map<string, (body: unknown) => void>()
  private closed = false

  constructor(private readonly endpoint: Endpoint) {
    endpoint.on('message', (message) => this.receive(message))
    endpoint.on('disconnect', () => this.close())
  }

  ask<K extends keyof OutAsks & string>(
    kind: K,
    body: OutAsks[K][0],
    timeoutMs = answerTimeoutMs,
  ): Promise<OutAsks[K][1]> {
    if (this.closed) return Promise.reject(new Error('the IPC channel is closed'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new Error(`no answer to ${kind} within ${timeoutMs} ms`))
      }, timeoutMs)
      timer.unref()
      this.waiting.set(id, { resolve: resolve as (body: unknown) => void, reject, timer })
      this.send({ pcl: 'ask', kind, id, body })
    })
  }

  tell<K extends keyof OutTells & string>(kind: K, body: OutTells[K]): void {
    if (!this.closed) this.send({ pcl: 'tell', kind, body })
  }

  /** Answers one kind of ask: a value, a promise of one, or a thrown error sent back as a rejection. */
  answer<K extends keyof InAsks & string>(
    kind: K,
    answerer: (body: InAsks[K][0]) => InAsks[K][1] | Promise<InAsks[K][1]>,
  ): void {
    this.answerers.set(kind, answerer as (body: unknown) => unknown)
  }

  listen<K extends keyof InTells & string>(kind: K, listener: (body: InTells[K]) => void): void {
    this.listeners.set(kind, listener as (body: unknown) => void)
  }

  private send(envelope: Envelope): void {
    // A peer that is gone shows up as the disconnect event; the send error itself adds nothing.
    this.endpoint.send(envelope, () => {})
  }

  private receive(message: unknown): void {
    if (typeof message !== 'object' || message === null || !('pcl' in message)) return
    const envelope = message as Envelope
    if (envelope.pcl === 'answer') {
      const waiting = this.waiting.get(envelope.id ?? -1)
      if (!waiting) return
      this.waiting.delete(envelope.id ?? -1)
      clearTimeout(waiting.timer)
      if (envelope.error !== undefined) waiting.reject(new Error(envelope.error))
      else waiting.resolve(envelope.body)
      return
    }
    const kind = envelope.kind ?? ''
    if (envelope.pcl === 'tell') {
      this.listeners.get(kind)?.(envelope.body)
      return
    }
    const answerer = this.answerers.get(kind)
    const reply = (body: unknown, error?: string) =>
      this.closed ||
      this.send({ pcl: 'answer', id: envelope.id, ...(error === undefined ? { body } : { error }) })
    if (!answerer) {
      reply(undefined, `nothing answers ${kind}`)
      return
    }
    try {
      Promise.resolve(answerer(envelope.body)).then(
        (body) => reply(body),
        (error: unknown) => reply(undefined, String(error instanceof Error ? error.message : error)),
      )
    } catch (error) {
      reply(undefined, String(error instanceof Error ? error.message : error))
    }
  }

  private close(): void {
    this.closed = true
    for (const waiting of this.waiting.values()) {
      clearTimeout(waiting.timer)
      waiting.reject(new Error('the IPC channel closed'))
    }
    this.waiting.clear()
  }
}
