import { z } from 'zod'

/** Durations and sizes as policy files and settings write them. Imports nothing of the gateway. */

/** A parser for `<digits><unit>` texts, like `30s` or `64kb`, into a number of base units. */
function unitParser<Units extends Record<string, number>>(units: Units, what: string) {
  const pattern = new RegExp(`^(\\d+)(${Object.keys(units).join('|')})$`)
  const parse = (text: string): number => {
    const match = pattern.exec(text)
    if (!match) throw new Error(`not a ${what}: ${text}`)
    return Number(match[1]) * (units[match[2] as keyof Units] as number)
  }
  return { pattern, parse }
}

const durations = unitParser({ ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }, 'duration')
const durationPattern = durations.pattern
/** `30s`, `5m`, `1h`, `250ms`, `7d` → milliseconds. */
export const parseDuration = durations.parse

export const duration = z
  .string()
  .regex(durationPattern, { error: 'must be a duration like 500ms, 30s, 5m or 1h' })
  .transform(parseDuration)

const sizes = unitParser({ b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }, 'size')
const sizePattern = sizes.pattern
/** `512b`, `64kb`, `1mb`, `2gb` (powers of 1024) → bytes. */
export const parseSize = sizes.parse

export const size = z
  .string()
  .regex(sizePattern, { error: 'must be a size like 512b, 64kb, 1mb or 2gb' })
  .transform(parseSize)
