import { pino } from 'pino'

/**
 * POSIX writes of at most PIPE_BUF (4096) bytes to a pipe are atomic: workers sharing one stdout pipe
 * never cut each other's lines as long as each write carries whole lines and stays within it.
 */
const atomicPipeWrite = 4096

/**
 * The log destination: lines gathered and written in blocks of whole lines (up to 4 KiB, or every
 * 50 ms, whichever comes first), from this thread. One write per block instead of one per request,
 * and no worker thread (pino's default, two context switches per line on a busy core). Workers write
 * to the stdout they share with the primary directly: no relay, and no line cut by another worker's
 * block. A crash loses at most the last 50 ms of lines; `flush` runs on exit.
 */
export class LogBlocks {
  private readonly out = pino.destination({ dest: 1, sync: true, minLength: 0 })
  private pending: string[] = []
  private pendingBytes = 0
  private readonly timer: NodeJS.Timeout

  constructor(flushEveryMs = 50) {
    this.timer = setInterval(() => this.flush(), flushEveryMs)
    this.timer.unref()
  }

  write(line: string): void {
    const bytes = Buffer.byteLength(line)
    if (this.pendingBytes + bytes > atomicPipeWrite) this.flush()
    this.pending.push(line)
    this.pendingBytes += bytes
  }

  flush(): void {
    if (this.pending.length === 0) return
    const block = this.pending.join('')
    this.pending = []
    this.pendingBytes = 0
    this.out.write(block)
  }
}
