#!/usr/bin/env bash
# Durable messaging (issue 4): Nimbus's queue path against BullMQ on Redis, in one run.
#   nimbus: build/bench/queue_bench (SQLite store with the default durability, the queue
#           trigger, the function pool, a native no-op function), RUNS times, medians;
#   bullmq: ../shared/peers' bench-queue.sh (redis-server without persistence, BullMQ's own
#           no-op worker at concurrency 50 and 1, latency at ~1,000 jobs/s).
# Usage: bash bench/queue.sh   (after make build). Env: RUNS=3 N=100000.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
[[ -d $PEERS_HOME/node_modules/bullmq ]] || bash "$repo/../shared/peers/setup.sh" >&2
source "$PEERS_HOME/lib.sh"
RUNS=${RUNS:-3}
export N=${N:-100000}
BENCH=$repo/build/bench/queue_bench
[[ -x $BENCH ]] || { echo "bench: build first (make build)" >&2; exit 1; }

results=()
for i in $(seq 1 "$RUNS"); do
  line=$(env -i PATH=/usr/bin:/bin N="$N" "$BENCH")
  log "nimbus run $i: $line"
  results+=("$line")
done
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
field() { printf '%s\n' "${results[@]}" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/" | median; }
log "nimbus medians: enqueue $(field enqueue_per_s)/s, processed $(field processed_per_s)/s, latency p50 $(field latency_p50_ms) ms p99 $(field latency_p99_ms) ms"

BULL_N=$N bash "$PEERS_HOME/bench-queue.sh" bullmq >&2
log "bullmq: $(cat "$DATA_DIR/bullmq.json")"
