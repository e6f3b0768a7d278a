#!/usr/bin/env bash
# Worker runtimes (issue 3): Python and Node hello through the process runtime against
# FastAPI on uvicorn, the Google Functions Framework and workerd, in one run; cold start from
# zero against the language's own floor (medians of RUNS fresh hosts); the process hop (native
# hello in a worker vs in the host, c1). Host and workers pinned to core 0, wrk to core 1.
# Usage: bash bench/workers.sh   (after make build; peers from ../shared/peers)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
[[ -x $PEERS_HOME/node_modules/@cloudflare/workerd-linux-64/bin/workerd ]] || bash "$repo/../shared/peers/setup.sh" >&2
source "$PEERS_HOME/lib.sh"
trap stop_all_started EXIT
NIMBUS=$repo/build/nimbus
app=$RUN_DIR/nimbus-workers
rm -rf "$app" && mkdir -p "$app"
cat > "$app/fn.py" <<'PY'
def hello(req, ctx):
    return "Hello, World!"
PY
cat > "$app/afn.py" <<'PY'
async def hello(req, ctx):
    return "Hello, World!"
PY
cat > "$app/fn.js" <<'JS'
exports.hello = () => 'Hello, World!';
JS
cat > "$app/nimbus.yaml" <<'YAML'
name: workers
functions:
  py:
    runtime: python
    handler: fn.py:hello
    max_instances: 1
    triggers: [{http: {route: /py, methods: [GET]}}]
  apy:
    runtime: python
    handler: afn.py:hello
    max_instances: 1
    concurrency: 64
    triggers: [{http: {route: /apy, methods: [GET]}}]
  js:
    runtime: node
    handler: fn.js:hello
    max_instances: 1
    concurrency: 64
    triggers: [{http: {route: /js, methods: [GET]}}]
YAML
port=18092
wrk_line() { awk '/^Requests\/sec:/{r=$2} $1=="99%"{p=$2} END{printf "%s req/s, p99 %s", r, p}' "$1"; }

RUNS=${RUNS:-11}
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
start_host() {
  "${CLEAN_ENV[@]}" taskset -c 0 "$NIMBUS" start "$app" --port $port --admin-port 0 > "$RUN_DIR/workers.log" 2>&1 &
  pid=$!
  STARTED_PIDS[$pid]=nimbus
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://$HOST:$port/healthz" && break; sleep 0.01; done
}
# Cold start: the first request to a function with no instance (spawn, imports, load, ready,
# invoke), on a fresh host each run; the first run also fills the bytecode cache and is dropped.
# The language's floor is measured in the same run, just before, so that each cold start has a
# floor taken under the same conditions: this VM's speed drifts by tens of percent over
# minutes, and the median of the paired differences is what drift does not move.
floor() { local t0 t1; t0=${EPOCHREALTIME/./}; "${CLEAN_ENV[@]}" taskset -c 0 "$@"; t1=${EPOCHREALTIME/./}; awk -v d=$((t1 - t0)) 'BEGIN{printf "%.1f", d/1000}'; }
declare -A cold floors over
for run in $(seq 0 "$RUNS"); do
  start_host
  fpy=$(floor /usr/bin/python3 -c pass)
  fjs=$(floor /usr/bin/node -e 0)
  for fn in py apy js; do
    t=$(curl -s -o /dev/null -w '%{time_total}' "http://$HOST:$port/$fn")
    f=$fpy; [[ $fn == js ]] && f=$fjs
    if (( run > 0 )); then
      ms=$(awk -v c="$t" 'BEGIN{printf "%.1f", c*1000}')
      cold[$fn]+="$ms "
      floors[$fn]+="$f "
      over[$fn]+="$(awk -v c="$ms" -v f="$f" 'BEGIN{printf "%.1f", c-f}') "
    fi
  done
  stop_pid "$pid"
done
med() { tr ' ' '\n' <<< "$1" | grep . | median; }
for fn in py apy js; do
  log "$fn: first request from zero instances, median of $RUNS: $(med "${cold[$fn]}") ms; floor $(med "${floors[$fn]}") ms; cold minus floor, paired: median $(med "${over[$fn]}") ms (all: ${over[$fn]})"
done
start_host
for fn in py apy js; do
  taskset -c 1 wrk -t1 -c64 -d3s "http://$HOST:$port/$fn" > /dev/null
  taskset -c 1 wrk -t1 -c64 -d10s --latency "http://$HOST:$port/$fn" > "$RUN_DIR/w-$fn.txt"
  log "nimbus $fn hello: $(wrk_line "$RUN_DIR/w-$fn.txt")"
done
stop_pid "$pid"
for p in fastapi gcf workerd; do
  peer_prepare "$p"; start_peer "$p" 0
  wait_200 "${PEER_PORT[$p]}" 30 0.01
  taskset -c 1 wrk -t1 -c64 -d3s "http://$HOST:${PEER_PORT[$p]}/" > /dev/null
  taskset -c 1 wrk -t1 -c64 -d10s --latency "http://$HOST:${PEER_PORT[$p]}/" > "$RUN_DIR/w-$p.txt"
  log "$p: $(wrk_line "$RUN_DIR/w-$p.txt")"
  stop_peer "$p"
done
floors() { for _ in $(seq 1 "$RUNS"); do floor "$@"; echo; done | median; }
log "floor (median of $RUNS): /usr/bin/python3 -c pass $(floors /usr/bin/python3 -c pass) ms, node -e 0 $(floors /usr/bin/node -e 0) ms"
# The process hop: the same native hello in the host and in a worker (isolation: process), c1.
taskset -c 0 "$repo/build/bench/process_hop_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true 2>&1 |
  grep -E "_median" | while read -r line; do log "process hop: $line"; done
