#!/usr/bin/env bash
# Durable messaging on PostgreSQL (issue 14): Nimbus's queue path on the PostgreSQL store
# against pg-boss, in one run, each on its own private PostgreSQL with the server's default
# durability (fsync on, synchronous_commit on).
#   nimbus: build/bench/queue_bench with STORE=postgres://... (the queue trigger, the function
#           pool, a native no-op), RUNS times, medians;
#   pgboss: ../shared/peers' bench-queue.sh pgboss.
# Usage: bash bench/queue_pg.sh   (after make build). Env: RUNS=3 N=20000. Also one run at
# concurrency 1 (CONCURRENCY=1 BATCH_SIZE=1, 2,000 messages), like pg-boss's tight_batch1, and
# one at concurrency 50.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
[[ -d $PEERS_HOME/node_modules/pg-boss ]] || bash "$repo/../shared/peers/setup.sh" >&2
source "$PEERS_HOME/lib.sh"
RUNS=${RUNS:-3}
export N=${N:-20000}
BENCH=$repo/build/bench/queue_bench
CLUSTER=$repo/build/tests/pg_cluster
[[ -x $BENCH && -x $CLUSTER ]] || { echo "bench: build first (make build)" >&2; exit 1; }
pg=$(mktemp -d /tmp/nimbus-bench-pg.XXXXXX)
trap '"$CLUSTER" stop "$pg" >/dev/null 2>&1 || true' EXIT
NIMBUS_PG_FSYNC=on "$CLUSTER" start "$pg" >&2
port=$(cat "$pg/port")
results=()
for i in $(seq 1 "$RUNS"); do
  db=bench$i
  psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "CREATE DATABASE $db" >&2
  line=$(env -i PATH=/usr/bin:/bin N="$N" STORE="postgres://nimbus@127.0.0.1:$port/$db" "$BENCH")
  log "nimbus on postgres, run $i: $line"
  results+=("$line")
done
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
field() { printf '%s\n' "${results[@]}" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/" | median; }
log "nimbus on postgres, medians: enqueue $(field enqueue_per_s)/s, processed $(field processed_per_s)/s, latency p50 $(field latency_p50_ms) ms p99 $(field latency_p99_ms) ms"
# Concurrency 1 (pg-boss's tight_batch1): one message in flight at a time.
psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "CREATE DATABASE benchc1" >&2
c1=$(env -i PATH=/usr/bin:/bin N=2000 LAT_N=100 CONCURRENCY=1 BATCH_SIZE=1 STORE="postgres://nimbus@127.0.0.1:$port/benchc1" "$BENCH")
log "nimbus on postgres, concurrency 1: $c1"
# Concurrency 50 (BullMQ's and the issue's other point).
psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "CREATE DATABASE benchc50" >&2
c50=$(env -i PATH=/usr/bin:/bin N="$N" CONCURRENCY=50 BATCH_SIZE=50 STORE="postgres://nimbus@127.0.0.1:$port/benchc50" "$BENCH")
log "nimbus on postgres, concurrency 50: $c50"
"$CLUSTER" stop "$pg" >&2
PGB_N=$N bash "$PEERS_HOME/bench-queue.sh" pgboss >&2
log "pgboss: $(cat "$DATA_DIR/pgboss.json")"
