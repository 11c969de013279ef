#!/usr/bin/env bash
# Makes sure this machine has what agentq's scripts need, installing or starting only what is
# missing: Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, no password),
# a C compiler, the Rust tools the test suite uses (cargo-nextest, sqlx-cli, rustfmt, clippy) and
# schemathesis (from PyPI, in a virtualenv at $AGENTQ_VENV [~/.cache/agentq-venv]), which the
# OpenAPI test runs against /openapi.json.
#
# Idempotent: when everything is already there it prints nothing and takes well under a second.
# Every action it takes prints one line starting with "ensure-services:".
#
# Usage: deploy/ensure-services.sh [--no-rust-tools] [--no-services] [--docker] [--browser]
#   --no-rust-tools  skip cargo-nextest, sqlx-cli, rustfmt, clippy and schemathesis (cargo
#                    itself is still required)
#   --no-services    skip Redis and PostgreSQL (for when they run elsewhere)
#   --docker         also a Docker engine (started with dockerd when none answers) and the
#                    code_run sandbox images (deploy/sandbox/build-images.sh when missing)
#   --browser        also what the session viewer's browser test needs: Debian's chromium,
#                    Node.js and npm, and cli/tests/ui's npm packages (playwright-core, as
#                    pinned in its package-lock.json)
#
# Written for Debian 12. Run as root to let it use apt-get; as another user it says what to
# install instead.
set -euo pipefail

# The ports can be moved (ENSURE_REDIS_PORT, ENSURE_PG_PORT) only to exercise this script itself;
# every other script of the project expects the defaults.
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=${ENSURE_REDIS_PORT:-6379}
readonly PG_HOST=127.0.0.1 PG_PORT=${ENSURE_PG_PORT:-5432}

want_rust_tools=1
want_services=1
want_docker=0
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --no-rust-tools) want_rust_tools=0 ;;
    --no-services) want_services=0 ;;
    --docker) want_docker=1 ;;
    --browser) want_browser=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *)
      echo "ensure-services: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

log() { echo "ensure-services: $*"; }
die() {
  echo "ensure-services: ERROR: $*" >&2
  exit 1
}

is_root() { [[ $EUID -eq 0 ]]; }

# --- apt ------------------------------------------------------------------------------------

apt_updated=0
apt_log=""

# apt_install PACKAGE... — installs Debian packages quietly; the full output goes to a log file
# whose tail is shown on failure.
apt_install() {
  if ! is_root; then
    die "missing Debian package(s): $*. Install them as root (apt-get install -y $*) and re-run."
  fi
  command -v apt-get >/dev/null || die "missing $*, and apt-get is not available to install it"
  [[ -n $apt_log ]] || apt_log=$(mktemp -t agentq-apt.XXXXXX.log)
  if ((apt_updated == 0)); then
    log "running apt-get update"
    if ! apt-get update >>"$apt_log" 2>&1 </dev/null; then
      tail -n 20 "$apt_log" >&2
      die "apt-get update failed (full log: $apt_log)"
    fi
    apt_updated=1
  fi
  log "installing $* (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
    >>"$apt_log" 2>&1 </dev/null; then
    tail -n 20 "$apt_log" >&2
    die "apt-get install $* failed (full log: $apt_log)"
  fi
}

# wait_until SECONDS COMMAND... — polls COMMAND every 0.2 s until it succeeds or time runs out.
wait_until() {
  local limit=$1
  shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- C toolchain ----------------------------------------------------------------------------

ensure_c_toolchain() {
  command -v cc >/dev/null && return 0
  apt_install build-essential pkg-config
}

# --- Redis ----------------------------------------------------------------------------------

redis_answers() {
  if command -v redis-cli >/dev/null; then
    [[ $(timeout 5 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
  else
    # No client: speak the inline protocol over bash's /dev/tcp.
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "PING\r\n" >&3
      IFS= read -r reply <&3
      [[ $reply == "+PONG"* ]]
    ' "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null
  fi
}

ensure_redis() {
  redis_answers && return 0
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
    # Debian's package may have started its own server already.
    wait_until 5 redis_answers && return 0
  fi
  local dir=/var/lib/redis logdir=/var/log/redis
  if ! is_root; then
    dir=${TMPDIR:-/tmp}/agentq-redis
    logdir=$dir
  fi
  mkdir -p "$dir" "$logdir"
  log "starting redis-server on $REDIS_HOST:$REDIS_PORT (log: $logdir/ci.log)"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir "$dir" --logfile "$logdir/ci.log" >/dev/null ||
    die "redis-server did not start; see $logdir/ci.log"
  wait_until 15 redis_answers ||
    die "Redis started but does not answer on $REDIS_HOST:$REDIS_PORT; see $logdir/ci.log"
}

# --- PostgreSQL -----------------------------------------------------------------------------

pg_answers() {
  if command -v pg_isready >/dev/null; then
    timeout 5 pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
  elif command -v psql >/dev/null; then
    PGCONNECT_TIMEOUT=3 timeout 5 psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
      -Atqc 'select 1' >/dev/null 2>&1
  else
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$PG_HOST" "$PG_PORT" 2>/dev/null
  fi
}

pg_server_installed() {
  command -v pg_lsclusters >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Prints "VERSION NAME STATUS" of the cluster configured for $PG_PORT, if any.
pg_cluster_on_port() {
  pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2, $4; exit }'
}

# A fresh Debian cluster asks for a scram password over TCP; the scripts and tests connect as
# postgres without one, so trust loopback TCP. Only done to clusters this script installed or
# created, never to one that was already there.
pg_trust_loopback() {
  local hba=/etc/postgresql/$1/$2/pg_hba.conf marker='# agentq ensure-services: trust loopback'
  [[ -f $hba ]] || die "cannot find $hba to allow passwordless local connections"
  grep -qF "$marker" "$hba" && return 0
  log "allowing passwordless TCP connections from loopback in $hba"
  local tmp
  tmp=$(mktemp)
  {
    echo "$marker (first matching line wins)"
    echo "host    all    all    127.0.0.1/32    trust"
    echo "host    all    all    ::1/128         trust"
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba" # keeps the file's owner and mode
  rm -f "$tmp"
}

ensure_postgres() {
  pg_answers && return 0
  local fresh=0
  if ! pg_server_installed; then
    apt_install postgresql
    fresh=1
  fi
  if ! is_root; then
    die "PostgreSQL does not answer on $PG_HOST:$PG_PORT; start it as root:" \
      "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
  fi
  local cluster version name status
  cluster=$(pg_cluster_on_port)
  if [[ -z $cluster ]]; then
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    name=main
    [[ $PG_PORT == 5432 ]] || name=port$PG_PORT
    log "creating PostgreSQL $version cluster '$name' on port $PG_PORT"
    pg_createcluster --port "$PG_PORT" "$version" "$name" >/dev/null
    fresh=1
    cluster=$(pg_cluster_on_port)
  fi
  read -r version name status <<<"$cluster"
  ((fresh)) && pg_trust_loopback "$version" "$name"
  if [[ $status == online* ]]; then
    if ((fresh)); then
      pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
    fi
  else
    log "starting PostgreSQL $version/$name on $PG_HOST:$PG_PORT"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
      die "PostgreSQL $version/$name did not start; see /var/log/postgresql/postgresql-$version-$name.log"
  fi
  wait_until 30 pg_answers ||
    die "PostgreSQL does not answer on $PG_HOST:$PG_PORT; see /var/log/postgresql/postgresql-$version-$name.log"
}

# psql and createdb are used by deploy/demo.sh even when the server runs elsewhere.
ensure_pg_client() {
  command -v psql >/dev/null && command -v createdb >/dev/null && return 0
  apt_install postgresql-client
}

# --- Rust -----------------------------------------------------------------------------------

ensure_cargo() {
  if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null ||
    die "cargo not found. Install a Rust toolchain with rustup (no Debian package is used for it)."
}

ensure_rust_component() { # ensure_rust_component COMPONENT CARGO_SUBCOMMAND
  cargo "$2" --version >/dev/null 2>&1 && return 0
  command -v rustup >/dev/null || die "cargo $2 is missing and rustup is not available to add $1"
  log "adding rustup component $1"
  rustup component add "$1" >/dev/null || die "rustup component add $1 failed"
}

ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  log "installing cargo-nextest (cargo install --locked; takes a few minutes)"
  env -u CARGO_TARGET_DIR cargo install cargo-nextest --locked --quiet ||
    die "cargo install cargo-nextest failed"
}

# sqlx-cli checks the committed .sqlx/ query data (deploy/sqlx-prepare.sh) against a scratch
# Postgres and a scratch SQLite database, so it needs both drivers; its version is the sqlx
# library's, from Cargo.lock, so both agree on that data's format.
ensure_sqlx_cli() {
  local root want have
  root="$(dirname "${BASH_SOURCE[0]}")/.."
  want=$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")
  [[ -n $want ]] || die "no sqlx version in $root/Cargo.lock"
  have=$(cargo sqlx --version 2>/dev/null | awk '{ print $2 }') || true
  # One built without the SQLite driver (as this script once installed it) knows no sqlite: URL.
  [[ $have == "$want" ]] && cargo sqlx migrate info --source "$root/migrations/sqlite" \
    --database-url sqlite::memory: >/dev/null 2>&1 && return 0
  log "installing sqlx-cli $want with the postgres and sqlite drivers (cargo install --locked;" \
    "takes a few minutes)"
  env -u CARGO_TARGET_DIR cargo install sqlx-cli --version "=$want" --locked --quiet --force \
    --no-default-features --features postgres,sqlite || die "cargo install sqlx-cli failed"
}

# --- Docker ---------------------------------------------------------------------------------

# Only with --docker (the test command passes it): a Docker engine for code_run's sandbox, and
# its offline images. Debian's docker.io runs here as root with no iptables and no bridge, so
# containers get `--network none`, which is all the sandbox uses (FIELD_NOTES).
readonly DOCKER_LOG=${ENSURE_DOCKER_LOG:-/var/log/agentq-dockerd.log}

docker_answers() { timeout 5 docker version >/dev/null 2>&1; }

ensure_docker() {
  if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
    apt_install docker.io
  fi
  if ! docker_answers; then
    is_root || die "no Docker engine answers; start one as root:" \
      "dockerd --iptables=false --ip6tables=false --bridge=none &"
    log "starting dockerd (log: $DOCKER_LOG)"
    # setsid: the engine outlives this script and the test run that started it.
    setsid dockerd --iptables=false --ip6tables=false --bridge=none \
      >>"$DOCKER_LOG" 2>&1 </dev/null &
    wait_until 60 docker_answers || die "dockerd started but does not answer; see $DOCKER_LOG"
  fi
  local missing=0 image
  for image in "${AGENTQ_SANDBOX_PYTHON_IMAGE:-agentq-sandbox-python:3.11}" \
    "${AGENTQ_SANDBOX_NODE_IMAGE:-agentq-sandbox-node:20}"; do
    docker image inspect "$image" >/dev/null 2>&1 || missing=1
  done
  ((missing)) || return 0
  command -v debootstrap >/dev/null || apt_install debootstrap
  command -v npm >/dev/null || apt_install npm
  log "building the sandbox images (deploy/sandbox/build-images.sh, about a minute)"
  bash "$(dirname "${BASH_SOURCE[0]}")/sandbox/build-images.sh" || die "building the sandbox images failed"
}

# bubblewrap is code_run's process backend, for hosts without Docker.
ensure_bwrap() {
  command -v bwrap >/dev/null && return 0
  apt_install bubblewrap
}

# schemathesis checks the served OpenAPI document against the running API (cli/tests/it/openapi.rs).
# Pinned: a new release may add checks, which should be a deliberate change here.
readonly SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv=${AGENTQ_VENV:-$HOME/.cache/agentq-venv}
  if [[ -x $venv/bin/schemathesis ]] &&
    [[ $("$venv/bin/schemathesis" --version 2>/dev/null) == *"version $SCHEMATHESIS_VERSION" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3
  if [[ ! -x $venv/bin/pip ]]; then
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    log "creating a Python virtualenv at $venv"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv (pip, from PyPI)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    die "pip install schemathesis failed"
}

# The session viewer's browser test (cli/tests/it/ui.rs): Debian's Chromium, driven by
# playwright-core from npm (never a browser download).
ensure_browser() {
  command -v chromium >/dev/null || apt_install chromium
  command -v node >/dev/null || apt_install nodejs
  command -v npm >/dev/null || apt_install npm
  local ui want have
  ui="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/cli/tests/ui"
  want=$(node -p "require('$ui/package.json').dependencies['playwright-core']")
  have=$(node -p "require('$ui/node_modules/playwright-core/package.json').version" 2>/dev/null) || true
  if [[ $have != "$want" ]]; then
    log "installing the browser test's npm packages (npm ci in cli/tests/ui)"
    (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null || die "npm ci in $ui failed"
  fi
}

# --- main -----------------------------------------------------------------------------------

ensure_c_toolchain
ensure_cargo
if ((want_services)); then
  ensure_redis
  ensure_postgres
fi
ensure_pg_client
if ((want_rust_tools)); then
  ensure_rust_component rustfmt fmt
  ensure_rust_component clippy clippy
  ensure_nextest
  ensure_sqlx_cli
  ensure_schemathesis
fi
ensure_bwrap
((want_docker)) && ensure_docker
((want_browser)) && ensure_browser
exit 0
