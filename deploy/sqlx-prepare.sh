#!/usr/bin/env bash
# Refreshes the committed .sqlx/ query data, or with --check fails when it is stale. Builds check
# every query!/query_as! against that data (.cargo/config.toml sets SQLX_OFFLINE), never against a
# live database; run this after changing a query or a migration, and commit .sqlx/.
#
# It creates a scratch database from migrations/ on the PostgreSQL at PG_ADMIN_URL
# [postgres://postgres@127.0.0.1:5432/postgres], runs `cargo sqlx prepare --workspace` against
# it and drops it again. Needs sqlx-cli (deploy/ensure-services.sh installs it).
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

admin_url=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
scratch="agentq_sqlx_$$"
export DATABASE_URL="${admin_url%/*}/$scratch"
trap 'cargo sqlx database drop -y >/dev/null 2>&1 || true' EXIT

cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
# --all-targets: queries in tests and benches are checked too.
# A dependency with checked queries of its own (apalis-sqlite, for SQLite) must be built from its
# own offline data before the prepare step, whose build runs online against this Postgres
# scratch database (where SQLite queries cannot be checked); prepare then rebuilds only ours.
# Ours need not build offline here (a query changed since .sqlx/ was made is what this script is
# for): --keep-going builds every dependency regardless, and the prepare step reports any error
# of ours.
SQLX_OFFLINE=true cargo check --workspace --all-targets --keep-going --quiet >/dev/null 2>&1 || true
SQLX_OFFLINE=false cargo sqlx prepare --workspace "${check[@]}" -- --all-targets
