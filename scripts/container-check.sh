#!/usr/bin/env bash
# Replays the Dockerfile's runtime stage outside Docker (no engine runs on CI): production dependencies
# only, the built dist/, then `serve` with the bundled policies and the HEALTHCHECK command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/cli.js ] || npm run build

app=$(mktemp -d)
pid=
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$app"' EXIT
cp package.json package-lock.json policy.schema.json "$app/"
cp -r dist "$app/dist"
cp -r policies "$app/policies"
(cd "$app" && NODE_ENV=production npm ci --omit=dev --no-audit --no-fund --silent)

cd "$app"
node dist/cli.js check policies
# The policy packs shipped in the image (examples/policies/packs) pass the production rules.
node dist/cli.js check --production --redis redis://redis:6379 policies/packs
echo -n 'a long enough password' | node dist/cli.js hash-password | grep -q '^scrypt\$'
# The bundled example uses internal TLS, which the production rules refuse: serve it as development.
node dist/cli.js serve --policies policies --state-dir state --listen 127.0.0.1 --env development \
  --http-port 0 --https-port 0 --admin-port 0 --watch false > serve.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"msg":"gateway listening"' serve.log && break
  sleep 0.1
done
admin=$(sed -n 's/.*"admin":\([0-9]*\).*"msg":"gateway listening".*/\1/p' serve.log)
[ -n "$admin" ] || { cat serve.log; echo "the gateway did not start"; exit 1; }
# The Dockerfile's HEALTHCHECK, against this admin port.
node -e "fetch('http://127.0.0.1:${admin}/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
kill -TERM "$pid"
wait "$pid"
echo "container runtime stage: production dependencies start the gateway and pass the health check"
