/** A cap scope's limits on open places: for the scope as a whole and per client; undefined for none. */
export interface PlaceCaps {
  app?: number
  ip?: number
}

/** Places open in a cap scope and of one of its clients. */
export interface OpenPlaces {
  app: number
  ip: number
}

/**
 * Open places (WebSockets) counted per cap scope and per client of a scope: what the caps are checked
 * against. One process's relay keeps one; with workers, the primary keeps the one they all share.
 * Keys leave the maps when their count reaches zero, so idle clients cost nothing.
 */
export class PlaceCounts {
  private readonly perScope = new Map<string, number>()
  private readonly perClient = new Map<string, number>()

  /** Open places per scope. */
  get byScope(): ReadonlyMap<string, number> {
    return this.perScope
  }

  open(scope: string, ip: string): OpenPlaces {
    return { app: this.perScope.get(scope) ?? 0, ip: this.perClient.get(`${scope} ${ip}`) ?? 0 }
  }

  /** Whether the caps leave no room beside what is open. */
  static full(open: OpenPlaces, caps: PlaceCaps | undefined): boolean {
    return (
      caps !== undefined &&
      ((caps.app !== undefined && open.app >= caps.app) || (caps.ip !== undefined && open.ip >= caps.ip))
    )
  }

  /** Counts a place until the returned release is called (once; later calls do nothing). */
  take(scope: string, ip: string): () => void {
    const client = `${scope} ${ip}`
    addToCount(this.perScope, scope, 1)
    addToCount(this.perClient, client, 1)
    let released = false
    return () => {
      if (released) return
      released = true
      addToCount(this.perScope, scope, -1)
      addToCount(this.perClient, client, -1)
    }
  }
}

function addToCount(counts: Map<string, number>, key: string, by: number): void {
  const next = (counts.get(key) ?? 0) + by
  if (next > 0) counts.set(key, next)
  else counts.delete(key)
}
