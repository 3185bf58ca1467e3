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
#    packages when missing). The S3 store's tests run against moto's server mode (PyPI, in a
#    venv under ~/.cache/resumable/moto) and Garage (built with cargo install into
#    ~/.cache/resumable/garage), both installed here when missing.
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

step "S3 servers for the S3 store's tests (crates/s3): moto's server mode and Garage"
# moto, a strict S3 (it refuses non-last parts under 5 MiB, as AWS does), in its own venv.
# Not 5.2.x: its new serializer answers ListParts with a <ListPartsResponse> root, which
# aws-sdk-s3 rightly refuses (S3 says <ListPartsResult>).
moto_version=5.1.22
moto="$HOME/.cache/resumable/moto-$moto_version"
if ! "$moto/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
  python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
  python3 -m venv "$moto"
  "$moto/bin/pip" install -q "moto[server]==$moto_version"
fi
# Garage, a real S3-compatible object store (a single node in the tests); the build takes
# 15-20 minutes, so the binary is cached and its build directory removed.
garage="$HOME/.cache/resumable/garage"
if [[ ! -x "$garage/bin/garage" ]]; then
  CARGO_TARGET_DIR="$HOME/.cache/resumable/garage-build" \
    cargo install --locked garage --version 2.5.0 --root "$garage"
  rm -rf "$HOME/.cache/resumable/garage-build"
fi

step "cargo test"
RESUMABLE_REQUIRE_PEER=1 RESUMABLE_REQUIRE_PROMTOOL=1 RESUMABLE_REQUIRE_REDIS=1 RESUMABLE_REQUIRE_S3=1 \
  cargo test --workspace

step "release build for the end-to-end tests"
cargo build --release --bin resumable

step "end-to-end tests"
RESUMABLE_BIN="$PWD/target/release/resumable" tests/e2e/run.sh

step "browser tests"
RESUMABLE_BIN="$PWD/target/release/resumable" tests/browser/run.sh
