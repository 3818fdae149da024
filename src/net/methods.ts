/**
 * The methods a rule written for `methods` covers. HEAD comes with GET: Express, Fastify, Starlette,
 * Flask and Go's ServeMux all run a GET handler for HEAD, so a rule on GET that missed HEAD would let
 * HEAD reach what it guards.
 */
export function coveredMethods(methods: readonly string[] | undefined): ReadonlySet<string> | undefined {
  if (!methods) return undefined
  const covered = new Set(methods)
  if (covered.has('GET')) covered.add('HEAD')
  return covered
}
