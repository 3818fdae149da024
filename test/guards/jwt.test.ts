import { describe, expect, it } from 'vitest'
import { hasDuplicateMembers } from '../../src/guards/jwt.js'

describe('JSON members named twice (a token that means one thing to jose and another to the app)', () => {
  it.each([
    ['{"role":"user","role":"admin"}', true],
    ['{"role":"user","r\\u006fle":"admin"}', true],
    ['{"org":{"id":1,"id":2}}', true],
    ['{"groups":[{"k":1,"k":2}]}', true],
    ['{"a":1,"b":2}', false],
    ['{"a":{"x":1},"b":{"x":2}}', false],
    ['{"a":["a","a"],"b":"a"}', false],
    ['{"a":"\\"a\\"","a\\"":1}', false],
    ['{"groups":[{"k":1},{"k":2}]}', false],
  ])('%s: %s', (json, expected) => {
    expect(hasDuplicateMembers(json)).toBe(expected)
  })
})
