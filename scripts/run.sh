#!/usr/bin/env bash
# Runs the mailferry service on its embedded default: the state in a SQLite file
# (~/.mailferry/mailferry.sqlite, or MAILFERRY_DB), scheduler, workers, the HTTP API and the
# web admin page on 127.0.0.1:8080 (MAILFERRY_LISTEN to change it). The service itself needs
# no other server, so this installs only the npm packages and builds; `scripts/setup.sh`
# adds what the demo, tests and benchmark need. Extra arguments go to `mailferry serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ ! -f dist/mailferry.mjs ] || [ -n "$(find src scripts package.json -newer dist/mailferry.mjs -print -quit)" ]; then
  npm run --silent build
fi
exec node dist/mailferry.mjs serve --listen "${MAILFERRY_LISTEN:-127.0.0.1:8080}" "$@"
