#!/usr/bin/env bash
# Unpacks Cyrus IMAP and Courier IMAP into .lab/root for the tests (src/lab/cyrus.ts,
# src/lab/courier.ts), without installing them: their Debian packages conflict with
# dovecot-imapd, which the rest of the lab needs. `apt-get download` + `dpkg -x` of the
# servers and of those library dependencies that are not installed on this machine;
# nothing is configured, no service is started, nothing outside .lab/ is written.
#
# Idempotent and quiet: does nothing once .lab/root/.complete lists the same packages.
# Never fails the set-up: when a package cannot be downloaded it says so and exits 0, and
# the tests that need the server skip with that reason (they print it).
set -uo pipefail
cd "$(dirname "$0")/.."

LAB=.lab
ROOT=$LAB/root
CYRUS=(cyrus-common cyrus-imapd sasl2-bin)
COURIER=(courier-base courier-imap courier-authlib courier-authdaemon courier-authlib-userdb gamin)
WANT="${CYRUS[*]} ${COURIER[*]}"

if [ -f "$ROOT/.complete" ] && [ "$(cat "$ROOT/.complete")" = "$WANT" ]; then exit 0; fi

say() { echo "lab-servers: $*"; }

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  say "not a Debian system (no apt-get/dpkg): Cyrus and Courier tests will be skipped"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Package lists are missing on a fresh image (setup.sh updates them only when it installs
# something itself).
if ! apt-cache show cyrus-imapd >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
fi

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# The packages plus, transitively, every lib* they depend on that is not installed here
# (first alternative of a choice; virtual packages are skipped). Programs they depend on
# (perl, an MTA, debconf…) are not needed to run the daemons.
resolve() {
  local -a todo=("$@") next
  local seen=" " d
  while [ "${#todo[@]}" -gt 0 ]; do
    for d in "${todo[@]}"; do seen="$seen$d "; done
    next=()
    # One apt-cache call per level of the dependency tree (it is slow to start).
    for d in $(apt-cache depends --important "${todo[@]}" 2>/dev/null | awk '$1 ~ /^\|?(Pre)?Depends:$/ && $2 !~ /^</ {print $2}' | sort -u); do
      case "$d" in lib*) ;; *) continue ;; esac
      case "$seen" in *" $d "*) continue ;; esac
      installed "$d" || next+=("$d")
    done
    todo=("${next[@]}")
  done
  echo "$seen"
}

pkgs=$(resolve "${CYRUS[@]}" "${COURIER[@]}")
debs=$LAB/debs
rm -rf "$debs" "$ROOT"
mkdir -p "$debs" "$ROOT"
# apt's sandbox user must be able to write the download directory.
chmod 777 "$debs" 2>/dev/null || true
# shellcheck disable=SC2086
if ! out=$(cd "$debs" && apt-get download -q $pkgs 2>&1); then
  say "could not download the Cyrus/Courier packages; their tests will be skipped:"
  echo "$out" | grep -E '^(E|W):' | head -5 | sed 's/^/  /'
  rm -rf "$debs" "$ROOT"
  exit 0
fi
for f in "$debs"/*.deb; do
  if ! dpkg -x "$f" "$ROOT"; then
    say "could not unpack $f; Cyrus/Courier tests will be skipped"
    rm -rf "$ROOT"
    exit 0
  fi
done
rm -rf "$debs"
# The daemons run as an unprivileged user (Cyrus refuses root): everything must be readable.
chmod -R a+rX "$LAB"
echo "$WANT" >"$ROOT/.complete"
say "unpacked $(echo "$pkgs" | wc -w) packages into $ROOT"
