#!/usr/bin/env bash
# The fault harness: the checkout workload as separate processes (two engines, three domain
# services, a broker of its own) under kill -9, broker restarts and Postgres restarts; see
# the README's "Fault harness". Sets up the services, drops the databases of earlier runs,
# builds `sagas` and runs `sagas chaos` with the arguments given, e.g.
#   scripts/chaos.sh --quick            # 300 sagas, a few minutes
#   scripts/chaos.sh                    # 10,000 sagas
#   scripts/chaos.sh --quick --seed 42  # the same fault schedule again
# CHAOS_BUILD=dev builds without optimisations (faster to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

source scripts/services.sh

# Each run creates a database named sagachaos_*; a passing run drops its own, a failing one
# keeps it for inspection until the next run.
psql "$DATABASE_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'sagachaos\_%'" |
  while read -r db; do psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null; done

profile=(--release)
if [ "${CHAOS_BUILD:-release}" = dev ]; then
  profile=()
fi
cargo build "${profile[@]}" --locked --bin sagas
# The run's own pools see Postgres restart on purpose: keep their reconnect warnings out.
export RUST_LOG="${RUST_LOG:-warn,sqlx=error}"
exec cargo run --quiet "${profile[@]}" --locked --bin sagas -- chaos "$@"
