#!/usr/bin/env bash
# Browser tests of the upload page and resumable.js in a real (Debian) Chromium.
#   RESUMABLE_BIN=/path/to/resumable tests/browser/run.sh [FILE.test.mjs...]
# (default: every *.test.mjs here; FILEs are relative to tests/browser)
# Installs what is missing: Debian's chromium (apt-get, as root), then playwright-core and uppy
# (npm ci). Playwright's own browser downloads are never used: only /usr/bin/chromium
# (or CHROMIUM_BIN).
set -euo pipefail

if [[ -z "${RESUMABLE_BIN:-}" || ! -x "${RESUMABLE_BIN:-}" ]]; then
  echo "run.sh: set RESUMABLE_BIN to the server binary, e.g." >&2
  echo "  RESUMABLE_BIN=target/release/resumable tests/browser/run.sh" >&2
  exit 2
fi
RESUMABLE_BIN="$(cd "$(dirname "$RESUMABLE_BIN")" && pwd)/$(basename "$RESUMABLE_BIN")"
export RESUMABLE_BIN

cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done

# --- Chromium from Debian
chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x "$chromium_bin" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "run.sh: installing chromium (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "run.sh: $chromium_bin is missing; install Debian's chromium (apt-get install chromium)" >&2
    exit 2
  fi
fi

# --- npm packages: npm ci when node_modules is missing or older than the lock file
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ "$(cat node_modules/.browser-lock-sha256 2>/dev/null || true)" != "$lock_hash" ]]; then
  echo "run.sh: installing Node dependencies (npm ci)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
  echo "$lock_hash" > node_modules/.browser-lock-sha256
fi

echo "run.sh: browser tests ($("$chromium_bin" --version 2>/dev/null | head -1))"
start=$SECONDS
status=0
if [[ $# -gt 0 ]]; then tests=("$@"); else tests=(./*.test.mjs); fi
node --test --test-concurrency=1 --test-reporter=spec "${tests[@]}" || status=$?
echo "run.sh: browser tests took $((SECONDS - start)) s"
exit $status
