#!/usr/bin/env bash
# The benchmark: sets up the services like the demo, builds `sagas` (release) and runs
# `sagas bench` with the arguments given, e.g. `scripts/bench.sh --find-peak` or
# `scripts/bench.sh --rate 50 --duration 20`. See README.md, "Benchmark".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

source scripts/services.sh

# A passing run drops its database (sagabench_<id>); a failing one keeps it and says so.
# Leftovers are not dropped here: another bench may be running on the same server.

cargo build --release --locked --bin sagas
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/sagas" bench "$@"
