#!/usr/bin/env bash
# The benchmark: resumable side by side with rustus and @tus/server, plus the machine's limits.
#   bench/run.sh            full run (~10 min): bench/RESULTS.md, bench/results.png, README table
#   bench/run.sh --quick    smoke run (small sizes, 1 run, under a minute): bench/.quick/
# Extra flags go to bench/bench.py: --only SCENARIOS and --servers NAMES (comma-separated) run a
# subset, reported in bench/.partial/ (the README and bench/RESULTS.md are left alone); peers not
# among --servers are not installed. --s3 runs the S3 scenarios instead, on Garage from
# ./test.sh's cache (--s3-direct-only: only the direct baseline; --s3-data-dir: Garage's dir).
#
# Installs what is missing, all inside bench/ (gitignored): rustus with `cargo install` into
# bench/.tools, the npm peers into bench/peers/node_modules, matplotlib into bench/.venv.
# Builds our server and the bench client in release mode (into CARGO_TARGET_DIR if set, else
# the worktree's target dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUSTUS_VERSION=0.5.10

step() { printf '\n==> %s\n' "$*"; }

for tool in cargo node npm python3 dd sync findmnt; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done

# 10,000 held connections need 10,000 descriptors in the client and in the server, plus margin.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < 12000 )); then
  echo "run.sh: open-file limit is $(ulimit -n); the idle scenario needs about 12000" >&2
  exit 2
fi

# The servers asked for (--servers a,b or --servers=a,b); none named means all.
servers=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --servers) servers="${args[i + 1]:-}" ;;
    --servers=*) servers="${args[i]#--servers=}" ;;
  esac
done
wanted() { [[ -z "$servers" || ",$servers," == *",$1,"* ]]; }

step "building resumable and resumable-bench (release)"
cargo build --release --bin resumable -p resumable-cli
cargo build --release --bin resumable-bench -p resumable-bench

if { wanted rustus || wanted rustus-fsync; } && [[ ! -x bench/.tools/bin/rustus ]]; then
  step "installing rustus $RUSTUS_VERSION into bench/.tools (a few minutes)"
  CARGO_TARGET_DIR="$PWD/bench/.tools/target" \
    cargo install rustus --version "$RUSTUS_VERSION" --locked --root bench/.tools
fi

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

lock_hash="$(hash_of bench/peers/package-lock.json)"
if wanted tus-node && [[ "$(cat bench/peers/node_modules/.bench-lock-sha256 2>/dev/null || true)" != "$lock_hash" ]]; then
  step "installing @tus/server and @tus/file-store (npm ci)"
  (cd bench/peers && npm ci --no-audit --no-fund)
  echo "$lock_hash" > bench/peers/node_modules/.bench-lock-sha256
fi

req_hash="$(hash_of bench/requirements.txt)"
if [[ "$(cat bench/.venv/.bench-req-sha256 2>/dev/null || true)" != "$req_hash" ]]; then
  step "installing matplotlib into bench/.venv"
  rm -rf bench/.venv
  python3 -m venv bench/.venv
  bench/.venv/bin/python -m pip install --disable-pip-version-check -q -r bench/requirements.txt
  echo "$req_hash" > bench/.venv/.bench-req-sha256
fi

step "benchmark"
exec bench/.venv/bin/python bench/bench.py "$@"
