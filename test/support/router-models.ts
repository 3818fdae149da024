/**
 * How the common router families turn the request target they receive into the path they route,
 * written from their documented behaviour (and checked against the real frameworks by the
 * differential end-to-end test). `resolve(target)` is the path the router matches its routes
 * against, or `undefined` when it refuses or redirects the request; `decode(path)` is only its
 * percent-decoding, so `resolve(target) === decode(path)` says the router routes exactly `path`.
 */
export interface RouterModel {
  name: string
  resolve(target: string): string | undefined
  decode(path: string): string
}

const beforeAny = (text: string, delimiters: RegExp) => text.split(delimiters, 1)[0] ?? ''

/** Percent-decoding as UTF-8, leaving the escapes `keep` matches (a capturing pattern) as they are. */
function decodeUtf8(text: string, keep?: RegExp): string | undefined {
  try {
    if (!keep) return decodeURIComponent(text)
    return text
      .split(keep)
      .map((part, index) => (index % 2 === 1 ? part : decodeURIComponent(part)))
      .join('')
  } catch {
    return undefined
  }
}

/** Removes dot segments and empty segments, as Tomcat and Go's path.Clean do; undefined above the root. */
function removeDots(path: string): string | undefined {
  const output: string[] = []
  const segments = path.split('/').slice(1)
  for (const [index, segment] of segments.entries()) {
    const last = index === segments.length - 1
    if (segment === '..') {
      if (output.length === 0) return undefined
      output.pop()
      if (last) output.push('')
    } else if (segment === '.' || (segment === '' && !last)) {
      if (last) output.push('')
    } else output.push(segment)
  }
  return `/${output.join('/')}`
}

/** Express 4/5 (parseurl + path-to-regexp): the raw pathname up to `?` or `#`, matched case-insensitively. */
const express: RouterModel = {
  name: 'express',
  resolve: (target) => beforeAny(target, /[?#]/).toLowerCase(),
  decode: (path) => path.toLowerCase(),
}

/**
 * Fastify (find-my-way) with every normalisation on: cut at `?`, `#` or `;`, escapes decoded except
 * reserved ones, duplicate and trailing slashes ignored, case-insensitive.
 */
const reservedEscape = /(%(?:2[3456BCF]|3[ABDF]|40))/i
const fastifyPath = (path: string) =>
  decodeUtf8(path, reservedEscape)
    ?.replace(/\/{2,}/g, '/')
    .replace(/(.)\/$/, '$1')
    .toLowerCase()
const fastify: RouterModel = {
  name: 'fastify',
  resolve: (target) => fastifyPath(beforeAny(target, /[?#;]/)),
  decode: (path) => fastifyPath(path) ?? '',
}

/** Starlette on uvicorn: everything before `?`, fully percent-decoded; case-sensitive. */
const starlette: RouterModel = {
  name: 'starlette',
  resolve: (target) => decodeUtf8(beforeAny(target, /\?/)),
  decode: (path) => decodeUtf8(path) ?? '',
}

/** Go's ServeMux: the decoded path; an unclean one (dots, `//`) is answered with a redirect. */
const go: RouterModel = {
  name: 'go',
  resolve: (target) => {
    const path = decodeUtf8(beforeAny(target, /\?/))
    if (path === undefined) return undefined
    return removeDots(path) === path ? path : undefined
  },
  decode: (path) => decodeUtf8(path) ?? '',
}

/**
 * Tomcat (and servers that follow it): `;parameters` dropped from each segment, then decoded, then
 * dot segments and `//` removed; an encoded `/` or `\` is refused.
 */
const tomcat: RouterModel = {
  name: 'tomcat',
  resolve: (target) => {
    const withoutParameters = beforeAny(target, /\?/).replace(/;[^/]*/g, '')
    if (/%(?:2f|5c)/i.test(withoutParameters)) return undefined
    const decoded = decodeUtf8(withoutParameters)
    return decoded === undefined ? undefined : removeDots(decoded)
  },
  decode: (path) => decodeUtf8(path) ?? '',
}

export const routerModels: readonly RouterModel[] = [express, fastify, starlette, go, tomcat]
