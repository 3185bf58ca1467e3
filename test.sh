#!/usr/bin/env bash
# Runs every test of resumable, installing what the end-to-end tests need when it is missing.
#   ./test.sh
# 1. formatting and lints, 2. unit, property, conformance and real-server tests (cargo test; the
#    CLI's tests also run an independent tus server, @tus/server from tests/peer, installed here
#    with npm ci when missing; its metrics tests lint /metrics with promtool, from Debian's
#    prometheus package, installed here when missing; the fleet's tests run redis-server from
#    Debian, moto's server from PyPI and Garage built with cargo install, each installed here
#    when missing), 3. end-to-end tests with real third-party clients (tus-js-client, tuspy)
#    against the release binary, one of them through nginx's round robin of two nodes
#    (tests/e2e/run.sh installs npm and PyPI packages into tests/e2e when missing),
#    4. browser tests of the page and resumable.js in Debian's Chromium (tests/browser/run.sh
#    installs chromium and its npm packages when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*"; }

need() {
  # need COMMAND DEBIAN-PACKAGE: install the package when the command is missing.
  command -v "$1" >/dev/null 2>&1 && return 0
  need_package "$2" "for $1"
}

need_package() {
  # need_package DEBIAN-PACKAGE [WHY]: install it (as root, with apt-get).
  step "installing $1${2:+ ($2)}"
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$1"
  else
    echo "test.sh: $1 is missing; install it" >&2
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
need nginx nginx       # the fleet's round-robin load balancer (crates/testkit, tests/e2e/node/fleet.test.mjs)

# The S3 stores of the fleet's tests (crates/testkit), built or installed once into a cache
# outside the repository, where the testkit looks for them.
cache="$HOME/.cache/resumable"
MOTO_VERSION=5.1.22 # moto's server mode: an S3 that refuses parts under 5 MiB, like AWS (not
                     # 5.2.x: it answers ListParts with a <ListPartsResponse> root, which
                     # aws-sdk-s3 rightly refuses; S3 says <ListPartsResult>)
GARAGE_VERSION=2.5.0 # Garage: a real S3-compatible store, one node

if [[ "$(cat "$cache/moto/.version" 2>/dev/null || true)" != "$MOTO_VERSION" ]]; then
  step "installing moto[server] $MOTO_VERSION into $cache/moto"
  # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
  python3 -c 'import ensurepip' 2>/dev/null || need_package python3-venv
  rm -rf "$cache/moto"
  python3 -m venv "$cache/moto"
  "$cache/moto/bin/python" -m pip install --disable-pip-version-check -q "moto[server]==$MOTO_VERSION"
  echo "$MOTO_VERSION" > "$cache/moto/.version"
fi

if [[ "$("$cache/garage/bin/garage" --version 2>/dev/null || true)" != *":$GARAGE_VERSION "* ]]; then
  step "building Garage $GARAGE_VERSION into $cache/garage (cargo install; about 15 minutes)"
  CARGO_TARGET_DIR="$cache/garage-build" \
    cargo install --locked garage --version "$GARAGE_VERSION" --root "$cache/garage" --force
  rm -rf "$cache/garage-build"
fi

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
RESUMABLE_REQUIRE_PEER=1 RESUMABLE_REQUIRE_PROMTOOL=1 RESUMABLE_REQUIRE_REDIS=1 RESUMABLE_REQUIRE_S3=1 RESUMABLE_REQUIRE_NGINX=1 \
  cargo test --workspace

step "release build for the end-to-end tests"
# resumable-fleet (crates/testkit): Garage, Redis, two nodes and nginx for tests/e2e/node/fleet.test.mjs.
cargo build --release --bin resumable
cargo build --release -p resumable-testkit --bin resumable-fleet

step "end-to-end tests"
RESUMABLE_BIN="$PWD/target/release/resumable" RESUMABLE_FLEET_BIN="$PWD/target/release/resumable-fleet" \
  RESUMABLE_REQUIRE_FLEET=1 tests/e2e/run.sh

step "browser tests"
RESUMABLE_BIN="$PWD/target/release/resumable" tests/browser/run.sh
