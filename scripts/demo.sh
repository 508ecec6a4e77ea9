#!/usr/bin/env bash
# The main job: the checkout saga end to end. Sets up the services, builds, migrates and
# runs `sagas demo` (1,000 checkout requests by default; pass e.g. --requests 200).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

source scripts/services.sh

cargo build --release --locked --bin sagas
cargo run --quiet --release --locked --bin sagas -- migrate
exec cargo run --quiet --release --locked --bin sagas -- demo "$@"
