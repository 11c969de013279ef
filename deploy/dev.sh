#!/usr/bin/env bash
# The README's main job: builds agentq and runs one agent session on embedded storage with
# `agentq dev` (SQLite in ./.agentq, no PostgreSQL, no Redis), printing every step and the
# final answer, then stops. Its exit code is the session's: 0 when it completed.
#
#   deploy/dev.sh ["QUESTION"]
#
# With ANTHROPIC_API_KEY set it talks to Claude (ANTHROPIC_BASE_URL, AGENTQ_DEFAULT_MODEL are
# honoured); without it, agentq's local stand-in model answers (deterministic, not Claude).
# To keep the server running after the session: `agentq dev "QUESTION"` (Ctrl-C stops it), or
# `agentq dev` alone.
#
# Knobs: AGENTQ_DATA_DIR (default .agentq), AGENTQ_LISTEN (default 127.0.0.1:8080),
# CARGO_TARGET_DIR (default ~/.cache/agentq-target), AGENTQ_PROFILE (cargo profile, default
# release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DEFAULT_QUESTION="In two sentences: why should LLM agents run as durable background jobs rather than inside a web request?"

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
  echo "dev: cargo is not installed; get Rust from https://rustup.rs" >&2
  exit 1
}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}
profile=${AGENTQ_PROFILE:-release}
echo "dev: building agentq ($profile) into $CARGO_TARGET_DIR (a few minutes the first time)"
cargo build --profile "$profile" --workspace --bins
case $profile in
  dev | test) out=debug ;;
  *) out=$profile ;;
esac
exec "$CARGO_TARGET_DIR/$out/agentq" dev --exit --data-dir "${AGENTQ_DATA_DIR:-.agentq}" \
  "${1:-$DEFAULT_QUESTION}"
