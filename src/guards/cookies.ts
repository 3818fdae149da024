import type { OutgoingHttpHeaders } from 'node:http'
import type { ResponseEdit } from '../pipeline/guard.js'
import type { Policy } from '../policy/schema.js'

/**
 * Hardens the app's Set-Cookie headers: `Secure` over HTTPS and `SameSite` where the app set none,
 * and `HttpOnly` on the cookies the policy names, never on all: an app's script-read CSRF cookie
 * (axios's and Angular's `XSRF-TOKEN`) must stay readable. Attributes the app did set are left alone,
 * as are cookies listed in `exclude`.
 */
export class CookieHardener implements ResponseEdit {
  private readonly excluded: ReadonlySet<string>
  private readonly httpOnly: RegExp | undefined

  constructor(private readonly section: Policy['cookies']) {
    this.excluded = new Set(section.exclude)
    this.httpOnly =
      section.httpOnly.length === 0
        ? undefined
        : new RegExp(
            `^(?:${section.httpOnly.map((name) => name.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*')).join('|')})$`,
          )
  }

  explainEdit(): string {
    const edits = [
      this.section.secure ? 'Secure added over HTTPS' : undefined,
      this.section.sameSite === 'off' ? undefined : `SameSite=${this.section.sameSite} where none is set`,
      this.section.httpOnly.length > 0 ? `HttpOnly on ${this.section.httpOnly.join(', ')}` : undefined,
    ].filter((edit) => edit !== undefined)
    const except = this.section.exclude.length > 0 ? ` (not on ${this.section.exclude.join(', ')})` : ''
    return edits.length > 0
      ? `Set-Cookie: ${edits.join('; ')}${except}`
      : 'Set-Cookie: left as the app sets it'
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
    if (this.httpOnly?.test(name) && !present.has('httponly')) hardened += '; HttpOnly'
    // Browsers drop SameSite=None without Secure, so it is only added where Secure is.
    const sameSite = this.section.sameSite
    const canAddSameSite =
      sameSite !== 'off' && (sameSite !== 'None' || hardened.toLowerCase().includes('; secure'))
    if (canAddSameSite && !present.has('samesite')) hardened += `; SameSite=${sameSite}`
    return hardened
  }
}
