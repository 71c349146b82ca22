#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, build, lint, typecheck, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm test
