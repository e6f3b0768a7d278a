#!/usr/bin/env bash
# Durable orchestrations (issue 15): bench/durable.py on the embedded SQLite store and on a
# private PostgreSQL (fsync on, synchronous_commit on), with Python and with C++ orchestrators,
# one JSON line each.
# Usage: bash bench/durable.sh   (after make build). Env: N LAT_N FAN (see bench/durable.py).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=$repo/build/tests/pg_cluster
[[ -x $CLUSTER ]] || { echo "bench: build first (make build)" >&2; exit 1; }
for orch in python native; do
  echo "sqlite: $(ORCH=$orch /usr/bin/python3 "$repo/bench/durable.py")"
done
pg=$(mktemp -d /tmp/nimbus-bench-durable-pg.XXXXXX)
trap '"$CLUSTER" stop "$pg" >/dev/null 2>&1 || true; rm -rf "$pg"' EXIT
NIMBUS_PG_FSYNC=on "$CLUSTER" start "$pg" >&2
port=$(cat "$pg/port")
for orch in python native; do
  psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "DROP DATABASE IF EXISTS durable" -c "CREATE DATABASE durable" >&2
  echo "postgres: $(ORCH=$orch STORE="postgres://nimbus@127.0.0.1:$port/durable" /usr/bin/python3 "$repo/bench/durable.py")"
done
