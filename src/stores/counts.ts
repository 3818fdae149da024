/** Adds to a count kept in a map, removing the key when it reaches zero (so idle keys cost nothing). */
export function addToCount(counts: Map<string, number>, key: string, by: number): void {
  const next = (counts.get(key) ?? 0) + by
  if (next > 0) counts.set(key, next)
  else counts.delete(key)
}
