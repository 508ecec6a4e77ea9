#!/usr/bin/env bash
# Makes sure Postgres answers at DATABASE_URL and a Kafka broker at KAFKA_BROKERS.
# When no broker answers, installs tansu (once) and starts it in the background.
# Idempotent: running it again finds both services up and changes nothing.
# Source it to get DATABASE_URL and KAFKA_BROKERS exported; run it to just set up.
# `bash scripts/services.sh restart-postgres` restarts the local cluster serving
# DATABASE_URL instead (the fault harness uses it).
set -euo pipefail

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
TANSU_VERSION="0.6.0"
TANSU_STORAGE="${TANSU_STORAGE:-memory://tansu/}"
SERVICES_DIR="${SAGA_SERVICES_DIR:-$HOME/.local/state/saga-services}"
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "[services] $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() { # description seconds command...
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      log "$what did not come up within ${seconds}s"
      return 1
    fi
    sleep 0.5
  done
}

ensure_postgres() {
  if pg_isready -q -d "$DATABASE_URL" 2>/dev/null; then
    log "postgres: answering at $DATABASE_URL"
    return
  fi
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    log "postgres: not answering; starting local cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  wait_for "postgres at $DATABASE_URL" 60 pg_isready -q -d "$DATABASE_URL"
  log "postgres: answering at $DATABASE_URL"
}

# Restarts the local Postgres cluster that listens on DATABASE_URL's port and waits until it
# answers again. Only for a cluster on this machine (pg_ctlcluster).
restart_postgres() {
  local authority="${DATABASE_URL#*://}"
  authority="${authority%%[/?]*}"
  local hostport="${authority##*@}" host port
  host="${hostport%:*}"
  port="${hostport##*:}"
  [ "$port" = "$hostport" ] && port=5432
  case "$host" in
  127.0.0.1 | localhost | "") ;;
  *)
    log "postgres: $host is not this machine; cannot restart it"
    return 1
    ;;
  esac
  local cluster
  cluster="$(pg_lsclusters --no-header 2>/dev/null | awk -v port="$port" '$3 == port { print $1, $2; exit }')"
  if [ -z "$cluster" ]; then
    log "postgres: no local cluster listens on port $port"
    return 1
  fi
  log "postgres: restarting cluster ${cluster/ //} (port $port)"
  # shellcheck disable=SC2086 # "version name", two arguments
  pg_ctlcluster --skip-systemctl-redirect $cluster restart
  wait_for "postgres at $DATABASE_URL" 60 pg_isready -q -d "$DATABASE_URL"
  log "postgres: answering again at $DATABASE_URL"
}

tansu_binary() {
  command -v tansu 2>/dev/null || true
}

ensure_tansu_installed() {
  if [ -n "$(tansu_binary)" ] && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  log "kafka: installing tansu $TANSU_VERSION from crates.io (the first time takes 20-30 minutes)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
}

ensure_kafka() {
  local host="${KAFKA_BROKERS%%,*}"
  local port="${host##*:}"
  host="${host%:*}"
  if port_open "$host" "$port"; then
    log "kafka: broker answering at $KAFKA_BROKERS"
    return
  fi
  ensure_tansu_installed
  mkdir -p "$SERVICES_DIR"
  log "kafka: starting tansu at $host:$port (storage $TANSU_STORAGE, log $SERVICES_DIR/tansu.log)"
  (
    cd "$SERVICES_DIR"
    nohup setsid tansu broker \
      --listener-url "tcp://$host:$port" \
      --advertised-listener-url "tcp://$host:$port" \
      --storage-engine "$TANSU_STORAGE" \
      >>tansu.log 2>&1 </dev/null &
    echo $! >tansu.pid
  )
  wait_for "kafka at $host:$port" 60 port_open "$host" "$port"
  log "kafka: broker answering at $KAFKA_BROKERS"
}

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = restart-postgres ]; then
  restart_postgres
  exit
fi

ensure_postgres
ensure_kafka
echo "DATABASE_URL=$DATABASE_URL"
echo "KAFKA_BROKERS=$KAFKA_BROKERS"
