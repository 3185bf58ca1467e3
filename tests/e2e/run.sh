#!/usr/bin/env bash
# End-to-end tests for the resumable server.
#   RESUMABLE_BIN=/path/to/resumable tests/e2e/run.sh
#   RESUMABLE_BIN=/path/to/resumable tests/e2e/run.sh node/fleet.test.mjs   (only these Node tests,
#   paths relative to tests/e2e)
# Installs what is missing (npm ci, a Python venv with requirements.txt), then
# runs the Node tests (node --test) and the Python tests (pytest).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ -z "${RESUMABLE_BIN:-}" ]]; then
  echo "run.sh: RESUMABLE_BIN is not set; point it at the server binary, e.g." >&2
  echo "  RESUMABLE_BIN=target/release/resumable tests/e2e/run.sh" >&2
  exit 2
fi
if [[ ! -x "$RESUMABLE_BIN" ]]; then
  echo "run.sh: RESUMABLE_BIN=$RESUMABLE_BIN is not an executable file" >&2
  exit 2
fi
RESUMABLE_BIN="$(cd "$(dirname "$RESUMABLE_BIN")" && pwd)/$(basename "$RESUMABLE_BIN")"
export RESUMABLE_BIN

for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done

hash_of() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# --- Node dependencies: npm ci when node_modules is missing or older than the lock file
lock_hash="$(hash_of package-lock.json)"
if [[ ! -d node_modules ]] || [[ "$(cat node_modules/.e2e-lock-sha256 2>/dev/null || true)" != "$lock_hash" ]]; then
  echo "run.sh: installing Node dependencies (npm ci)"
  npm ci --no-audit --no-fund
  echo "$lock_hash" > node_modules/.e2e-lock-sha256
fi

# --- Python venv: create when missing, pip install when requirements.txt changed
req_hash="$(hash_of requirements.txt)"
if [[ ! -x .venv/bin/python ]]; then
  echo "run.sh: creating Python venv in tests/e2e/.venv"
  rm -rf .venv
  if ! python3 -m venv .venv; then
    echo "run.sh: 'python3 -m venv' failed; install the venv module (Debian/Ubuntu: apt-get install -y python3-venv)" >&2
    rm -rf .venv
    exit 2
  fi
fi
if [[ "$(cat .venv/.e2e-req-sha256 2>/dev/null || true)" != "$req_hash" ]]; then
  echo "run.sh: installing Python dependencies (pip install -r requirements.txt)"
  .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
  echo "$req_hash" > .venv/.e2e-req-sha256
fi

status=0

if [[ $# -gt 0 ]]; then
  echo "run.sh: node tests $*"
  node --test --test-concurrency=1 --test-reporter=spec "$@" || status=1
else
  echo "run.sh: node tests"
  node --test --test-concurrency=1 --test-reporter=spec node/*.test.mjs || status=1

  echo "run.sh: python tests"
  .venv/bin/python -m pytest -p no:cacheprovider || status=1
fi

if [[ $status -ne 0 ]]; then
  echo "run.sh: FAILED" >&2
else
  echo "run.sh: all e2e tests passed"
fi
exit $status
