import type { OutgoingHttpHeaders } from 'node:http'
import type { ResponseEdit } from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

/**
 * Hardens the app's Set-Cookie headers: `Secure` over HTTPS, and `HttpOnly` and `SameSite` where the
 * app set none. Attributes the app did set are left alone, as are cookies listed in `exclude`.
 */
export class CookieHardener implements ResponseEdit {
  private readonly excluded: ReadonlySet<string>

  constructor(private readonly section: Policy['cookies']) {
    this.excluded = new Set(section.exclude)
  }

  edit(headers: OutgoingHttpHeaders, secure: boolean): void {
    const setCookie = headers['set-cookie']
    if (setCookie !== undefined) headers['set-cookie'] = this.harden(setCookie as string | string[], secure)
  }

  harden(setCookie: string | string[], secure: boolean): string[] {
    return (Array.isArray(setCookie) ? setCookie : [setCookie]).map((cookie) =>
      this.hardenOne(cookie, secure),
    )
  }

  private hardenOne(cookie: string, secure: boolean): string {
    const [pair = '', ...attributes] = cookie.split(';')
    const name = pair.split('=', 1)[0]?.trim() ?? ''
    if (this.excluded.has(name)) return cookie
    const present = new Set(
      attributes.map((attribute) => (attribute.split('=', 1)[0] ?? '').trim().toLowerCase()),
    )
    let hardened = cookie.trimEnd()
    if (secure && this.section.secure && !present.has('secure')) hardened += '; Secure'
    if (this.section.httpOnly && !present.has('httponly')) hardened += '; HttpOnly'
    // Browsers drop SameSite=None without Secure, so it is only added where Secure is.
    const sameSite = this.section.sameSite
    const canAddSameSite =
      sameSite !== 'off' && (sameSite !== 'None' || hardened.toLowerCase().includes('; secure'))
    if (canAddSameSite && !present.has('samesite')) hardened += `; SameSite=${sameSite}`
    return hardened
  }
}
