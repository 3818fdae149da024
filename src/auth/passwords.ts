import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'

/** Password hash format: `scrypt$N$r$p$<salt base64>$<key base64>`, made by `portcullis hash-password`. */
export const passwordHashPattern = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/

const hashParameters = { N: 16_384, r: 8, p: 1 } as const

function derive(
  password: string,
  salt: Buffer,
  length: number,
  parameters: { N: number; r: number; p: number },
) {
  return new Promise<Buffer>((resolve, reject) =>
    scrypt(
      password,
      salt,
      length,
      { ...parameters, maxmem: 256 * parameters.N * parameters.r },
      (error, key) => (error ? reject(error) : resolve(key)),
    ),
  )
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await derive(password, salt, 32, hashParameters)
  const { N, r, p } = hashParameters
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`
}

/** Checks a password against a stored hash in constant time; scrypt runs on libuv's pool, off the event loop. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = passwordHashPattern.exec(stored)
  if (!parts) return false
  const [, N, r, p, salt = '', key = ''] = parts
  const expected = Buffer.from(key, 'base64')
  const derived = await derive(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N),
    r: Number(r),
    p: Number(p),
  })
  return timingSafeEqual(derived, expected)
}

/** A well-formed hash that no password matches: checked for unknown users, so timing reveals nothing. */
export const unknownUserHash = `scrypt$${hashParameters.N}$${hashParameters.r}$${hashParameters.p}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`
