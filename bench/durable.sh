#!/usr/bin/env bash
# Durable orchestrations (issue 15): bench/durable.py on the embedded SQLite store and on a
# private PostgreSQL (fsync on, synchronous_commit on), one JSON line each.
# Usage: bash bench/durable.sh   (after make build). Env: N LAT_N FAN (see bench/durable.py).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=$repo/build/tests/pg_cluster
[[ -x $CLUSTER ]] || { echo "bench: build first (make build)" >&2; exit 1; }
echo "sqlite: $(/usr/bin/python3 "$repo/bench/durable.py")"
pg=$(mktemp -d /tmp/nimbus-bench-durable-pg.XXXXXX)
trap '"$CLUSTER" stop "$pg" >/dev/null 2>&1 || true; rm -rf "$pg"' EXIT
NIMBUS_PG_FSYNC=on "$CLUSTER" start "$pg" >&2
port=$(cat "$pg/port")
psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "CREATE DATABASE durable" >&2
echo "postgres: $(STORE="postgres://nimbus@127.0.0.1:$port/durable" /usr/bin/python3 "$repo/bench/durable.py")"
