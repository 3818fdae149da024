import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { parseDocument } from 'yaml'

/** The shipped policy packs, one per seed app. */
export const packsDir = path.resolve(import.meta.dirname, '../../policies/packs')
export const packs = ['superposition', 'pgstack', 'appstrate', 'horizon', 'sm'] as const
export type Pack = (typeof packs)[number]
export type PackDocument = ReturnType<typeof parseDocument>

export const hostOf: Record<Pack, string> = {
  superposition: 'superposition.example.com',
  pgstack: 'db.example.com',
  appstrate: 'appstrate.example.com',
  horizon: 'horizon.example.com',
  sm: 'sm.example.com',
}

/** What each app's own /health answers, as its checklist describes it. */
export const healthOf: Record<Pack, unknown> = {
  superposition: { status: 'ok' },
  pgstack: { status: 'ok', pg_connected: true },
  appstrate: { status: 'healthy', uptime_ms: 1, checks: {} },
  horizon: { status: 'ok' },
  sm: { status: 'ok' },
}

/**
 * A shipped pack with only what a deployment changes: upstream addresses, a load balancer at
 * 127.0.0.2 added to the trusted proxies, and whatever `edit` changes (the CA, a known basicAuth user,
 * the static directory). Comments and every other setting are kept.
 */
export async function deployable(
  pack: Pack,
  targets: string[],
  edit?: (doc: PackDocument) => void,
): Promise<string> {
  const doc = parseDocument(await readFile(path.join(packsDir, `${pack}.yaml`), 'utf8'))
  doc.setIn(['upstream', 'targets'], targets)
  const trusted = (doc.getIn(['clientIp', 'trustedProxies']) as { toJSON(): string[] }).toJSON()
  doc.setIn(['clientIp', 'trustedProxies'], [...trusted, '127.0.0.2'])
  edit?.(doc)
  return doc.toString()
}
