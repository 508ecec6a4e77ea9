#!/usr/bin/env bash
# Runs every check of the project: format, lints, and all tests against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

source scripts/services.sh

# A test build of the workspace writes about 4 GiB; say so plainly when the disk is short.
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
free_mib=$(($(df -Pk "$target" | awk 'NR==2 {print $4}') / 1024))
echo "[test] ${free_mib} MiB free for the build in $target" >&2
if [ "$free_mib" -lt 6144 ]; then
  echo "[test] warning: less than 6 GiB free; the build may run out of disk" >&2
fi

# The dashboard test drives Debian's chromium through chromedriver; install them once.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[test] installing chromium and chromium-driver (once)" >&2
    apt-get update -qq
    # An install cut short earlier leaves dpkg half done; finish it first.
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[test] no chromium/chromedriver and no way to install them: the browser test skips" >&2
  fi
fi

# Tests create databases named sagatest_*; drop the ones earlier runs left behind.
psql "$DATABASE_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'sagatest\_%'" |
  while read -r db; do psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null; done

# The admin API fuzz test runs schemathesis from a venv of its own; create it once.
SCHEMATHESIS_VERSION="4.32.5"
venv="${SAGA_SERVICES_DIR:-$HOME/.local/state/saga-services}/venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "[test] installing schemathesis $SCHEMATHESIS_VERSION into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export SCHEMATHESIS="$venv/bin/schemathesis"
# The Python points participant (integration-tests/participants/points-py) runs from a
# venv of its own; create or update it once.
POINTS_PY_PYTHON="$(bash scripts/python-participant.sh)"
export POINTS_PY_PYTHON
# What this script installed must be used: the browser and fuzz tests fail instead of skipping.
if command -v chromedriver >/dev/null 2>&1; then
  export SAGA_TESTS_REQUIRE_TOOLS=1
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log="$(mktemp)"
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"

# The fault harness restarts Postgres, so it runs alone, after everything else.
echo "== fault harness (scripts/chaos.sh --quick)"
chaos=passed
# The tests above built `sagas` without optimisations; reuse that build (no second,
# release build: time and disk).
CHAOS_BUILD=dev bash scripts/chaos.sh --quick || chaos=FAILED
echo "tests: $passed passed, $failed failed; fault harness: $chaos"
if [ "$chaos" = FAILED ] && [ "$status" = 0 ]; then
  status=1
fi
exit "$status"
