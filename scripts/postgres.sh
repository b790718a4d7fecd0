#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL server on 127.0.0.1 for the multi-worker tests.
#   eval "$(bash scripts/postgres.sh start)"   # prints: export STUDY_TEST_POSTGRES=postgresql+psycopg://...
#   bash scripts/postgres.sh stop
# Needs Debian's postgresql package (installed here if missing; root required for that).
set -euo pipefail
PORT=${STUDY_PG_PORT:-55432}
STATE=${STUDY_PG_DIR:-/tmp/study-postgres}
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

case "${1:-}" in
  start)
    if [ -z "$(pgbin)" ]; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
    fi
    BIN=$(pgbin)
    if [ ! -f "$STATE/data/PG_VERSION" ]; then
      mkdir -p "$STATE" && chown postgres "$STATE"
      su postgres -c "$BIN/initdb -D $STATE/data -A trust -U postgres" >&2
    fi
    if ! su postgres -c "$BIN/pg_ctl -D $STATE/data status" >/dev/null 2>&1; then
      su postgres -c "$BIN/pg_ctl -D $STATE/data -l $STATE/server.log -w start \
        -o '-c listen_addresses=127.0.0.1 -p $PORT -k $STATE -c max_connections=200'" >&2
    fi
    for db in study_optuna study_mlflow; do
      su postgres -c "psql -h 127.0.0.1 -p $PORT -tAc \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1 \
        || su postgres -c "createdb -h 127.0.0.1 -p $PORT $db" >&2
    done
    echo "export STUDY_TEST_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:$PORT"
    ;;
  stop)
    BIN=$(pgbin)
    [ -n "$BIN" ] && su postgres -c "$BIN/pg_ctl -D $STATE/data -m fast stop" >&2 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
