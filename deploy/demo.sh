#!/usr/bin/env bash
# Runs agentq end to end on this machine — the README's "run the main job" command.
#
#   deploy/demo.sh ["QUESTION"]
#
# It makes sure Redis and PostgreSQL run (deploy/ensure-services.sh), builds the release
# binaries, creates and migrates the database agentq_demo, starts the API and two workers on
# free loopback ports, creates an API key and runs one agent session with `agentq run --follow`,
# printing every step and the final answer. It exits with `agentq run`'s exit code, and stops
# every process it started on the way out.
#
# With ANTHROPIC_API_KEY set it talks to Claude (ANTHROPIC_BASE_URL, AGENTQ_DEFAULT_MODEL are
# honoured). Without it, it starts agentq's local stand-in model instead, which is
# deterministic and is not Claude.
#
# Other knobs: CARGO_TARGET_DIR (default ~/.cache/agentq-target), RUST_LOG (servers default to
# info, CLI commands to warn). Postgres and Redis are always the local ones on 127.0.0.1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DEFAULT_QUESTION="In two sentences: why should LLM agents run as durable background jobs rather than inside a web request?"
question=${1:-$DEFAULT_QUESTION}

say() { echo "demo: $*"; }
die() {
  echo "demo: ERROR: $*" >&2
  exit 1
}

# --- services and build ---------------------------------------------------------------------

bash deploy/ensure-services.sh --no-rust-tools
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}
say "building release binaries into $CARGO_TARGET_DIR (a few minutes the first time)"
cargo build --release --workspace
bin=$CARGO_TARGET_DIR/release
for b in agentq agentq-api agentq-worker; do
  [[ -x $bin/$b ]] || die "the build did not produce $bin/$b"
done

# --- state ----------------------------------------------------------------------------------

readonly PG_HOST=127.0.0.1 PG_PORT=5432 DB_NAME=agentq_demo
export PGCONNECT_TIMEOUT=5
export DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/$DB_NAME"
export REDIS_URL="redis://127.0.0.1:6379"
export AGENTQ_REDIS_PREFIX=agentq-demo
# Enables the test-only `echo` tool in the API and the workers (see the run below).
export AGENTQ_TEST_TOOLS=true
export AGENTQ_LOG_FORMAT=${AGENTQ_LOG_FORMAT:-pretty}
server_log_filter=${RUST_LOG:-info}
cli_log_filter=${RUST_LOG:-warn}

if [[ $(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc \
  "select 1 from pg_database where datname = '$DB_NAME'") != 1 ]]; then
  say "creating database $DB_NAME"
  createdb -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB_NAME"
fi
say "applying migrations to $DATABASE_URL"
RUST_LOG=$cli_log_filter "$bin/agentq" admin migrate

# --- processes ------------------------------------------------------------------------------

logs=$(mktemp -d -t agentq-demo.XXXXXX)
say "logs of the processes started here go to $logs"

pids=()
# Stops every process started below: TERM first, KILL for any still there after 10 s.
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local pid deadline=$((SECONDS + 10))
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND... — runs COMMAND in the background with its output in $logs/NAME.log.
start() {
  local name=$1
  shift
  RUST_LOG=$server_log_filter "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  last_pid=$!
}

# A loopback port nobody listens on right now.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "found no free port"
}

http_ok() { # http_ok URL
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
  else
    local rest=${1#http://} hostport path
    hostport=${rest%%/*}
    path=/${rest#*/}
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
      exec 3<>"/dev/tcp/${0%:*}/${0##*:}" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" "$0" >&3
      IFS= read -r status <&3
      [[ $status == HTTP/1.?" 200"* ]]
    ' "$hostport" "$path" 2>/dev/null
  fi
}

# wait_healthy NAME PID URL SECONDS
wait_healthy() {
  local name=$1 pid=$2 url=$3 deadline=$((SECONDS + $4))
  until http_ok "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: $name exited before answering $url; last lines of $logs/$name.log:" >&2
      tail -n 30 "$logs/$name.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "demo: $name did not answer $url within $4 s; last lines of $logs/$name.log:" >&2
      tail -n 30 "$logs/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

run_tools=()
if [[ -z ${ANTHROPIC_API_KEY:-} ]]; then
  echo "ANTHROPIC_API_KEY is not set: using agentq's local stand-in model (deterministic, not Claude)"
  llm_port=$(free_port)
  start stand-in-llm "$bin/agentq" stand-in-llm --listen "127.0.0.1:$llm_port"
  wait_healthy stand-in-llm "$last_pid" "http://127.0.0.1:$llm_port/healthz" 30
  export ANTHROPIC_BASE_URL="http://127.0.0.1:$llm_port"
  export ANTHROPIC_API_KEY=stand-in-needs-no-key
  # `echo` is a harmless test-only tool (it returns its input; enabled by AGENTQ_TEST_TOOLS),
  # offered so the stand-in shows a tool call. It gives way to web_fetch once that tool lands.
  run_tools=(--tools echo)
else
  say "using the Anthropic API at ${ANTHROPIC_BASE_URL:-https://api.anthropic.com}"
fi

api_port=$(free_port)
export AGENTQ_LISTEN="127.0.0.1:$api_port"
export AGENTQ_URL="http://$AGENTQ_LISTEN"
start agentq-api "$bin/agentq-api"
wait_healthy agentq-api "$last_pid" "$AGENTQ_URL/healthz" 60
say "API up at $AGENTQ_URL"

worker_pids=()
for n in 1 2; do
  start "agentq-worker-$n" "$bin/agentq-worker"
  worker_pids+=("$last_pid")
done
sleep 1
for n in 1 2; do
  if ! kill -0 "${worker_pids[n - 1]}" 2>/dev/null; then
    echo "demo: agentq-worker-$n exited at start; last lines of $logs/agentq-worker-$n.log:" >&2
    tail -n 30 "$logs/agentq-worker-$n.log" >&2
    exit 1
  fi
done
say "two workers running"

AGENTQ_API_KEY=$(RUST_LOG=$cli_log_filter "$bin/agentq" admin create-key --org demo | tail -n 1)
[[ -n $AGENTQ_API_KEY ]] || die "agentq admin create-key printed no key"
export AGENTQ_API_KEY

# --- the session ----------------------------------------------------------------------------

run_args=(run "$question" "${run_tools[@]}" --follow)
say "agentq run \"$question\"${run_tools[*]:+ ${run_tools[*]}} --follow"
echo
# In the background with `wait`, so that INT/TERM reach the traps at once (bash defers traps
# until a foreground command ends).
RUST_LOG=$cli_log_filter "$bin/agentq" "${run_args[@]}" &
run_pid=$!
pids+=("$run_pid")
status=0
wait "$run_pid" || status=$?
unset 'pids[-1]'
echo
if ((status == 0)); then
  say "session completed; process logs are in $logs"
else
  say "agentq run exited with $status; process logs are in $logs"
fi
exit "$status"
