import { HostRouter } from '../../src/gateway/routing.js'
import { type Arrival, Exchange } from '../../src/pipeline/exchange.js'
import type { GuardServices } from '../../src/pipeline/guard.js'
import type { App } from '../../src/policy/compile.js'
import { MemoryStore } from '../../src/stores/rate-limit-store.js'
import { ResilientRateLimitStore } from '../../src/stores/resilient-store.js'

/** What guards consult, as `explain` has it: a fresh in-memory rate-limit budget and no open WebSocket. */
export function freshServices(): GuardServices {
  return {
    rateLimits: {
      store: new ResilientRateLimitStore({ remote: [], local: new MemoryStore(), localShare: 1 }),
    },
    liveWebSockets: () => ({ app: 0, ip: 0 }),
  }
}

/** Exchanges for requests to one app, as a listener would make them: `GET /` from 203.0.113.5 unless overridden. */
export function exchangesFor(app: App): (overrides: Partial<Arrival>, services?: GuardServices) => Exchange {
  const router = new HostRouter([app])
  const host = app.hosts[0] ?? ''
  return (overrides, services = freshServices()) =>
    new Exchange(
      {
        id: 'test',
        method: 'GET',
        url: '/',
        host,
        headers: { host },
        rawHeaders: [],
        peer: '203.0.113.5',
        upgrade: false,
        ...overrides,
      },
      router,
      services,
    )
}
