#!/usr/bin/env bash
# Refreshes the committed .sqlx/ query data, or with --check fails when it is stale. Builds check
# every query!/query_as! against that data (.cargo/config.toml sets SQLX_OFFLINE), never against a
# live database; run this after changing a query or a migration, and commit .sqlx/.
#
# It creates a scratch database from migrations/ on the PostgreSQL at PG_ADMIN_URL
# [postgres://postgres@127.0.0.1:5432/postgres] and a scratch SQLite file from
# migrations/sqlite/ (for the embedded store's statements in shared/sqlite/, whose sqlx.toml
# points them at SQLITE_DATABASE_URL), runs `cargo sqlx prepare --workspace` against both, so
# .sqlx/ holds both databases' query data, and removes them again. Needs sqlx-cli with its
# postgres and sqlite drivers (deploy/ensure-services.sh installs it).
#
# Usage: deploy/sqlx-prepare.sh [--check]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agentq-target}

check=()
case "${1:-}" in
  --check) check=(--check) ;;
  "") ;;
  *)
    echo "sqlx-prepare: unknown argument: $1 (usage: deploy/sqlx-prepare.sh [--check])" >&2
    exit 2
    ;;
esac

cargo sqlx --version >/dev/null 2>&1 || {
  echo "sqlx-prepare: sqlx-cli is missing; deploy/ensure-services.sh installs it" >&2
  exit 1
}
cargo sqlx migrate info --source migrations/sqlite --database-url sqlite::memory: \
  >/dev/null 2>&1 || {
  echo "sqlx-prepare: sqlx-cli lacks its sqlite driver; deploy/ensure-services.sh reinstalls it" >&2
  exit 1
}

admin_url=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
scratch="agentq_sqlx_$$"
export DATABASE_URL="${admin_url%/*}/$scratch"
# The SQLite database in a directory of its own: removing it takes its -wal and -shm files too.
sqlite_dir=$(mktemp -d)
export SQLITE_DATABASE_URL="sqlite://$sqlite_dir/agentq.db"
trap 'cargo sqlx database drop -y >/dev/null 2>&1 || true; rm -rf "$sqlite_dir"' EXIT

cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
cargo sqlx database create --database-url "$SQLITE_DATABASE_URL"
cargo sqlx migrate run --source migrations/sqlite --database-url "$SQLITE_DATABASE_URL" >/dev/null
# --all-targets: queries in tests and benches are checked too.
# A dependency with checked queries of its own (apalis-sqlite, for SQLite) must be built from its
# own offline data before the prepare step, whose build runs online and would check them against
# the Postgres scratch database (its macros read DATABASE_URL; only shared/sqlite/'s read
# SQLITE_DATABASE_URL); prepare then rebuilds only ours.
# Ours need not build offline here (a query changed since .sqlx/ was made is what this script is
# for): --keep-going builds every dependency regardless, and the prepare step reports any error
# of ours.
SQLX_OFFLINE=true cargo check --workspace --all-targets --keep-going --quiet >/dev/null 2>&1 || true
SQLX_OFFLINE=false cargo sqlx prepare --workspace "${check[@]}" -- --all-targets
