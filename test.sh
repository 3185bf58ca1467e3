#!/usr/bin/env bash
# Runs every test of resumable, installing what the end-to-end tests need when it is missing.
#   ./test.sh
# 1. formatting and lints, 2. unit, property, conformance and real-server tests (cargo test; the
#    CLI's tests also run an independent tus server, @tus/server from tests/peer, installed here
#    with npm ci when missing; its metrics tests lint /metrics with promtool, from Debian's
#    prometheus package, installed here when missing; the Redis locker's tests start Debian's
#    redis-server, installed here when missing), 3. end-to-end tests with real
#    third-party clients (tus-js-client, tuspy) against the release binary (tests/e2e/run.sh
#    installs npm and PyPI packages into tests/e2e when missing), 4. browser tests of the page
#    and resumable.js in Debian's Chromium (tests/browser/run.sh installs chromium and its npm
#    packages when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*"; }

need() {
  # need COMMAND DEBIAN-PACKAGE: install the package when the command is missing.
  command -v "$1" >/dev/null 2>&1 && return 0
  step "installing $2 (for $1)"
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$2"
  else
    echo "test.sh: $1 is missing; install $2" >&2
    exit 2
  fi
}
need node nodejs
need npm npm
need python3 python3
need script bsdutils   # runs `resumable upload` under a pseudo-terminal in the CLI's tests
need promtool prometheus   # lints the scraped /metrics text in the CLI's tests
need curl curl         # the TLS tests upload with curl over HTTPS (HTTP/2 and HTTP/1.1)
need openssl openssl   # the TLS tests make RSA and EC keys, the e2e test a CA for tus-js-client
need redis-server redis-server   # the Redis locker's tests start their own (crates/redis/tests)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "peer tus server for the CLI's tests (tests/peer)"
peer_lock="$(sha256sum tests/peer/package-lock.json | cut -d' ' -f1)"
if [[ "$(cat tests/peer/node_modules/.lock-sha256 2>/dev/null || true)" != "$peer_lock" ]]; then
  (cd tests/peer && npm ci --no-audit --no-fund)
  echo "$peer_lock" > tests/peer/node_modules/.lock-sha256
fi

step "cargo test"
RESUMABLE_REQUIRE_PEER=1 RESUMABLE_REQUIRE_PROMTOOL=1 RESUMABLE_REQUIRE_REDIS=1 cargo test --workspace

step "release build for the end-to-end tests"
cargo build --release --bin resumable

step "end-to-end tests"
RESUMABLE_BIN="$PWD/target/release/resumable" tests/e2e/run.sh

step "browser tests"
RESUMABLE_BIN="$PWD/target/release/resumable" tests/browser/run.sh
