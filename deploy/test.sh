#!/usr/bin/env bash
# Runs the whole test suite — the README's "run the whole test suite" command, and what CI runs
# (.ci/run). Stops at the first stage that fails and prints how long each stage took.
#
# Stages: services and tools (deploy/ensure-services.sh --docker --browser: also a Docker engine
# and the code_run sandbox images, and Chromium with playwright-core for the viewer's test), rustfmt check, the committed .sqlx/ query data against the queries
# and migrations (deploy/sqlx-prepare.sh --check), clippy with warnings denied, a build of the binaries
# (the end-to-end tests spawn them), then cargo nextest over the whole workspace (profile `ci`
# from .config/nextest.toml when CI is set; CI also sets AGENTQ_REQUIRE_DOCKER=1, so code_run's
# Docker tests fail rather than skip without an engine).
#
# Environment (defaults in brackets):
#   CARGO_TARGET_DIR [~/.cache/agentq-target]
#   DATABASE_URL     [postgres://postgres@127.0.0.1:5432/postgres]  tests create their own
#                    databases through it
#   REDIS_URL        [redis://127.0.0.1:6379]
# Extra arguments are passed to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

now() { echo "${EPOCHREALTIME/[.,]/}"; } # microseconds
fmt_us() { # fmt_us MICROSECONDS -> "1m02.3s" / "4.2s"
  local tenths=$(($1 / 100000))
  if ((tenths >= 600)); then
    printf '%dm%02d.%ds' $((tenths / 600)) $((tenths % 600 / 10)) $((tenths % 10))
  else
    printf '%d.%ds' $((tenths / 10)) $((tenths % 10))
  fi
}

suite_start=$(now)
summary=()

# stage NAME COMMAND... — runs one stage, timing it; on failure says which and exits with its code.
stage() {
  local name=$1 start status=0
  shift
  echo "==> $name: $*"
  start=$(now)
  "$@" || status=$?
  local took
  took=$(fmt_us $(($(now) - start)))
  if ((status != 0)); then
    echo "==> $name FAILED (exit $status) after $took" >&2
    exit "$status"
  fi
  echo "==> $name took $took"
  summary+=("$name $took")
}

nextest_args=(--workspace --no-fail-fast)
fmt_args=(--check)
if [[ -n ${CI:-} && ${CI} != false && ${CI} != 0 ]]; then
  nextest_args+=(--profile ci)
  # code_run's Docker tests fail instead of skipping when no engine answers.
  export AGENTQ_REQUIRE_DOCKER=1
  fmt_args+=(--color never) # plain diffs in CI logs
  export CARGO_TERM_COLOR=never
fi

stage services bash deploy/ensure-services.sh --docker --browser
stage fmt cargo fmt --all -- "${fmt_args[@]}"
stage sqlx bash deploy/sqlx-prepare.sh --check
stage clippy cargo clippy --workspace --all-targets -- -D warnings
stage build cargo build --workspace --bins
stage nextest cargo nextest run "${nextest_args[@]}" "$@"

joined=$(printf '%s, ' "${summary[@]}")
echo "==> all stages passed in $(fmt_us $(($(now) - suite_start))) (${joined%, })"
