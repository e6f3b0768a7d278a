#!/usr/bin/env bash
# Many hosts on one PostgreSQL (issue 14): 1, 2 and 3 real `nimbus` hosts on one private
# PostgreSQL server (fsync on, synchronous_commit on), each consuming the queue `in` with a
# native no-op (tests/functions/hello.so, batch 256, concurrency 64). build/bench/queue_feed
# fills the queue with N messages before any host runs; then the hosts start and queue_feed
# times the drain (the hosts' start included). Everything shares this machine's
# cores: the ceiling is the machine, and the efficiency (rate with k hosts / (k x rate with
# one)) says so. Usage: bash bench/cluster_pg.sh (after make build). Env: N=50000 RUNS=3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-50000}
RUNS=${RUNS:-3}
NIMBUS=$repo/build/nimbus
FEED=$repo/build/bench/queue_feed
CLUSTER=$repo/build/tests/pg_cluster
HELLO=$repo/build/tests/functions/hello.so
[[ -x $NIMBUS && -x $FEED && -x $CLUSTER && -f $HELLO ]] || { echo "bench: build first (make build)" >&2; exit 1; }
work=$(mktemp -d /tmp/nimbus-bench-cluster.XXXXXX)
chmod 755 "$work"  # the server runs as postgres under it
pg=$work/pg
pids=()
stop_hosts() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_hosts; "$CLUSTER" stop "$pg" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
NIMBUS_PG_FSYNC=on "$CLUSTER" start "$pg" >&2
port=$(cat "$pg/port")
log() { echo "[$(date +%T)] $*" >&2; }
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
declare -A rate
for hosts in 1 2 3; do
  results=()
  for run in $(seq 1 "$RUNS"); do
    db=h${hosts}r${run}
    psql -q "postgres://nimbus@127.0.0.1:$port/postgres" -c "CREATE DATABASE $db" >&2
    url="postgres://nimbus@127.0.0.1:$port/$db"
    env -i PATH=/usr/bin:/bin N="$N" MODE=fill STORE="$url" "$FEED"
    for h in $(seq 1 "$hosts"); do
      app=$work/$db-host$h
      mkdir -p "$app"
      cat > "$app/nimbus.yaml" <<YAML
name: cluster-bench
store: "$url"
functions:
  noop:
    runtime: native
    handler: $HELLO
    concurrency: 64
    triggers:
      - queue: {name: in, batch_size: 256}
YAML
    done
    for h in $(seq 1 "$hosts"); do
      env -i PATH=/usr/bin:/bin "$NIMBUS" start "$work/$db-host$h" --port 0 --admin-port 0 >"$work/$db-host$h/host.log" 2>&1 &
      pids+=($!)
    done
    line=$(env -i PATH=/usr/bin:/bin N="$N" MODE=drain STORE="$url" "$FEED")
    log "$hosts host(s), run $run: $line"
    results+=("$line")
    stop_hosts
  done
  rate[$hosts]=$(printf '%s\n' "${results[@]}" | sed -E 's/.*"processed_per_s":([0-9.]+).*/\1/' | median)
  log "$hosts host(s), median: ${rate[$hosts]} messages/s"
done
for hosts in 2 3; do
  log "efficiency with $hosts hosts: $(awk -v r="${rate[$hosts]}" -v one="${rate[1]}" -v k="$hosts" 'BEGIN{printf "%.2f", r/(k*one)}') (speed-up $(awk -v r="${rate[$hosts]}" -v one="${rate[1]}" 'BEGIN{printf "%.2f", r/one}')x)"
done
