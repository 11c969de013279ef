#!/usr/bin/env bash
# Benchmarks: builds the release binaries, then runs `cargo bench` (each bench prints figures).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
deploy/ensure-services.sh --docker
cargo build --release --workspace --bins
cargo bench --workspace "$@"
