#!/usr/bin/env bash
# Benchmarks: builds the release binaries, then runs `agentq bench` (each benchmark starts what
# it needs on loopback, prints a table and writes its figures to bench-results/<what>.json).
#
# Usage: deploy/bench.sh [api|steps|sandbox|recovery|memory|all] [agentq bench options]
#   e.g. deploy/bench.sh steps --seconds 20
# docs/benchmarks.md has the method and the latest figures.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
deploy/ensure-services.sh --docker
cargo build --release --workspace --bins
what=${1:-all}
shift || true
exec "$CARGO_TARGET_DIR/release/agentq" bench "$what" "$@"
