#!/usr/bin/env bash
# Installs what mailferry's demo, tests and benchmark need on a fresh Debian machine:
# Dovecot (the lab's real IMAP servers), GNU Mailutils imap4d (an mbox server beside it),
# Cyrus and Courier (unpacked into .lab/, see scripts/lab-servers.sh), mbsync (the benchmark's yardstick), Chromium (the web page's tests) and the npm packages.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/sbin/imap4d ] || need+=(mailutils-imap4d)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The web admin page is tested in a real browser (playwright-core drives Debian's Chromium).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  # The package's own service is not used (the lab starts private instances on free
  # ports); policy-rc.d-less containers may print a warning about starting it.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Cyrus and Courier for test/other-servers.test.ts, unpacked into .lab/ (they conflict
# with dovecot-imapd as installed packages). Never fails the set-up: without them those
# tests skip and say why.
bash scripts/lab-servers.sh || echo "setup: lab-servers.sh failed; Cyrus/Courier tests will be skipped"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
npm run --silent build
