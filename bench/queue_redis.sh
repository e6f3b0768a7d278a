#!/usr/bin/env bash
# Durable messaging on Redis (issue 14): Nimbus's queue path on the Redis store against
# BullMQ, in one run, each on its own private redis-server. BullMQ's peer script runs its
# server without persistence (appendonly no); Nimbus is measured on the same setting and on
# appendfsync everysec (Redis's usual AOF setting, docs/redis.md).
#   nimbus: build/bench/queue_bench with STORE=redis://... (the queue trigger, the function
#           pool, a native no-op), RUNS times, medians;
#   bullmq: ../shared/peers' bench-queue.sh bullmq.
# Usage: bash bench/queue_redis.sh   (after make build). Env: RUNS=3 N=20000.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
[[ -d $PEERS_HOME/node_modules/bullmq ]] || bash "$repo/../shared/peers/setup.sh" >&2
source "$PEERS_HOME/lib.sh"
RUNS=${RUNS:-3}
export N=${N:-20000}
BENCH=$repo/build/bench/queue_bench
[[ -x $BENCH ]] || { echo "bench: build first (make build)" >&2; exit 1; }
dir=$(mktemp -d /tmp/nimbus-bench-redis.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
pid=
stop_redis() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop_redis; rm -rf "$dir"' EXIT
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

for setting in "no" "everysec"; do
  rm -rf "${dir:?}"/*
  if [[ $setting == no ]]; then persist=(--appendonly no); else persist=(--appendonly yes --appendfsync everysec); fi
  redis-server --bind 127.0.0.1 --port "$port" --save '' "${persist[@]}" --dir "$dir" --daemonize no >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  results=()
  for i in $(seq 1 "$RUNS"); do
    line=$(env -i PATH=/usr/bin:/bin N="$N" STORE="redis://127.0.0.1:$port/0?prefix=bench$i" "$BENCH")
    log "nimbus on redis ($setting), run $i: $line"
    results+=("$line")
  done
  field() { printf '%s\n' "${results[@]}" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/" | median; }
  log "nimbus on redis ($setting), medians: enqueue $(field enqueue_per_s)/s, processed $(field processed_per_s)/s, latency p50 $(field latency_p50_ms) ms p99 $(field latency_p99_ms) ms"
  c1=$(env -i PATH=/usr/bin:/bin N=2000 LAT_N=100 CONCURRENCY=1 BATCH_SIZE=1 STORE="redis://127.0.0.1:$port/0?prefix=c1" "$BENCH")
  log "nimbus on redis ($setting), concurrency 1: $c1"
  c50=$(env -i PATH=/usr/bin:/bin N="$N" CONCURRENCY=50 BATCH_SIZE=50 STORE="redis://127.0.0.1:$port/0?prefix=c50" "$BENCH")
  log "nimbus on redis ($setting), concurrency 50: $c50"
  stop_redis
done
BULL_N=$N bash "$PEERS_HOME/bench-queue.sh" bullmq >&2
log "bullmq: $(cat "$DATA_DIR/bullmq.json")"
