/**
 * A circuit breaker around a remote store. After `threshold` consecutive failures it opens: callers
 * skip the store for `cooldownMs`, so an outage does not add a timeout to every request. Then one
 * trial call is let through; its success closes the breaker. `onChange` hears each state change once.
 */
export type BreakerState = 'closed' | 'open' | 'half-open'

export class CircuitBreaker {
  private state: BreakerState = 'closed'
  private failures = 0
  private openedAt = 0
  private trialInFlight = false

  constructor(
    private readonly threshold: number,
    private readonly cooldownMs: number,
    private readonly onChange: (state: BreakerState, error?: unknown) => void,
  ) {}

  get current(): BreakerState {
    return this.state
  }

  /** Whether to call the store now. */
  allows(now = Date.now()): boolean {
    if (this.state === 'closed') return true
    if (this.state === 'open' && now - this.openedAt >= this.cooldownMs) this.transition('half-open')
    if (this.state === 'half-open' && !this.trialInFlight) {
      this.trialInFlight = true
      return true
    }
    return false
  }

  succeeded(): void {
    this.failures = 0
    this.trialInFlight = false
    if (this.state !== 'closed') this.transition('closed')
  }

  failed(error: unknown, now = Date.now()): void {
    this.failures += 1
    this.trialInFlight = false
    if (this.state === 'half-open' || (this.state === 'closed' && this.failures >= this.threshold)) {
      this.openedAt = now
      this.transition('open', error)
    }
  }

  private transition(state: BreakerState, error?: unknown): void {
    this.state = state
    this.onChange(state, error)
  }
}
