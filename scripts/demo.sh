#!/usr/bin/env bash
# A migration a newcomer can watch, with nothing else to set up: two throwaway local
# Dovecot servers, a realistic mailbox written into one, `mailferry sync` (progress bar),
# then `mailferry verify`. Everything lives in a temp dir removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/scripts/demo.js "$@"
