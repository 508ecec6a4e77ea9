#!/usr/bin/env bash
# Makes the virtualenv of the Python points participant
# (integration-tests/participants/points-py) and prints its python's path as the last line
# on stdout; everything else goes to stderr. Idempotent: creates the venv when it is missing
# or broken, and installs requirements.txt only when it changed since the last install
# (its sha256, with the base python's version, is stored in the venv).
#   PY="$(bash scripts/python-participant.sh)" && "$PY" integration-tests/participants/points-py/participant.py
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/integration-tests/participants/points-py/requirements.txt"
SERVICES_DIR="${SAGA_SERVICES_DIR:-$HOME/.local/state/saga-services}"
VENV="$SERVICES_DIR/points-py-venv"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

log() { echo "[python-participant] $*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "$PYTHON is missing or older than 3.11"
  exit 1
fi

mkdir -p "$SERVICES_DIR"
# One installer at a time (tests may start several participants at once).
exec 9>"$SERVICES_DIR/points-py-venv.lock"
flock 9

want="$( (sha256sum "$REQUIREMENTS" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"

if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  log "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" >&2
fi

if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]] ||
  ! "$VENV/bin/python" -c 'import confluent_kafka, psycopg' 2>/dev/null; then
  log "installing $REQUIREMENTS into $VENV"
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS" >&2
  echo "$want" >"$STAMP"
else
  log "$VENV is up to date"
fi

echo "$VENV/bin/python"
