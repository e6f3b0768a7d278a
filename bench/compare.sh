#!/usr/bin/env bash
# Two builds of Nimbus in one run, interleaved rep by rep (this VM's speed drifts by tens of
# percent over minutes: a before/after pair measured minutes apart says little), with nginx
# (one worker) measured in the same reps as the yardstick:
#   - HTTP: native hello (blocking: false), Python hello and Node hello through the host,
#     host pinned to core 0, `wrk -t1 -c64 -d10s` on core 1 after a 3 s warm-up;
#   - host work per request: build/bench/host_overhead_bench (median of 3 repetitions);
#   - process hop: build/bench/process_hop_bench, native hello in the host vs in a worker, c1;
#   - queue processing: build/bench/queue_bench (N messages enqueued, then processed by a
#     native no-op function through the queue trigger; SQLite, default durability).
# Usage: bash bench/compare.sh BEFORE_BUILD [AFTER_BUILD]   (each a CMake build folder with
# nimbus, tests/functions/hello.so and bench/*; AFTER defaults to build/). Prints a markdown
# table of medians for bench/RESULTS.md. Env: REPS=3 N=100000.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
before=$(cd "${1:?usage: compare.sh BEFORE_BUILD [AFTER_BUILD]}" && pwd)
after=$(cd "${2:-$repo/build}" && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
[[ -x $PEERS_HOME/node_modules/@cloudflare/workerd-linux-64/bin/workerd ]] || bash "$repo/../shared/peers/setup.sh" >&2
source "$PEERS_HOME/lib.sh"
trap stop_all_started EXIT
REPS=${REPS:-3}
export N=${N:-100000}
for b in "$before" "$after"; do
  for f in nimbus tests/functions/hello.so bench/host_overhead_bench bench/process_hop_bench bench/queue_bench; do
    [[ -e $b/$f ]] || { echo "compare: $b/$f is missing (build it first)" >&2; exit 1; }
  done
done

port=18094
out=$RUN_DIR/compare.tsv
: > "$out"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$out"; }  # which metric value
rps() { awk '/^Requests\/sec:/{print $2}' "$1"; }
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

app_for() {  # app_for BUILD -> an app folder whose native hello is that build's
  local dir=$RUN_DIR/compare-app-$2
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'def hello(req, ctx):\n    return "Hello, World!"\n' > "$dir/fn.py"
  printf "exports.hello = () => 'Hello, World!';\n" > "$dir/fn.js"
  cat > "$dir/nimbus.yaml" <<YAML
name: compare
functions:
  hello:
    runtime: native
    handler: $1/tests/functions/hello.so
    blocking: false
    triggers: [{http: {route: /, methods: [GET]}}]
  py:
    runtime: python
    handler: fn.py:hello
    max_instances: 1
    triggers: [{http: {route: /py, methods: [GET]}}]
  js:
    runtime: node
    handler: fn.js:hello
    max_instances: 1
    concurrency: 64
    triggers: [{http: {route: /js, methods: [GET]}}]
YAML
  echo "$dir"
}

http_rounds() {  # http_rounds BUILD NAME
  local app pid
  app=$(app_for "$1" "$2")
  wait_port_free "$port" || { log "port $port busy"; exit 1; }
  "${CLEAN_ENV[@]}" taskset -c 0 "$1/nimbus" start "$app" --port $port --admin-port 0 > "$RUN_DIR/compare-$2.log" 2>&1 &
  pid=$!
  STARTED_PIDS[$pid]=nimbus
  wait_200 "$port" 30 0.01 || { log "$2: no 200"; tail -5 "$RUN_DIR/compare-$2.log" >&2; exit 1; }
  for path in "" py js; do
    taskset -c 1 wrk -t1 -c64 -d3s "http://$HOST:$port/$path" > /dev/null
    taskset -c 1 wrk -t1 -c64 -d10s --latency "http://$HOST:$port/$path" > "$RUN_DIR/compare-w.txt"
    record "$2" "http_${path:-native}_rps" "$(rps "$RUN_DIR/compare-w.txt")"
  done
  stop_pid "$pid"
}

micro() {  # micro BUILD NAME
  local line
  # Google Benchmark medians of 3 repetitions, in ns per operation (a benchmark that counts
  # per_invocation reports that instead of its batch time).
  for b in host_overhead_bench:host process_hop_bench:hop; do
    taskset -c 0 "$1/bench/${b%%:*}" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_format=json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}
for r in json.load(sys.stdin)["benchmarks"]:
    if r.get("aggregate_name") != "median":
        continue
    ns = r["per_invocation"] * 1e9 if "per_invocation" in r else r["real_time"] * scale[r["time_unit"]]
    print("%s\t%s_ns:%s\t%.1f" % (sys.argv[1], sys.argv[2], r["run_name"], ns))
' "$2" "${b##*:}" >> "$out"
  done
  line=$(env -i PATH=/usr/bin:/bin N="$N" "$1/bench/queue_bench")
  record "$2" queue_processed_per_s "$(sed -E 's/.*"processed_per_s":([0-9.]+).*/\1/' <<< "$line")"
  record "$2" queue_enqueue_per_s "$(sed -E 's/.*"enqueue_per_s":([0-9.]+).*/\1/' <<< "$line")"
}

for ((rep = 1; rep <= REPS; rep++)); do
  peer_prepare nginx1
  start_peer nginx1 0
  wait_200 "${PEER_PORT[nginx1]}" 30 0.01
  taskset -c 1 wrk -t1 -c64 -d3s "http://$HOST:${PEER_PORT[nginx1]}/" > /dev/null
  taskset -c 1 wrk -t1 -c64 -d10s --latency "http://$HOST:${PEER_PORT[nginx1]}/" > "$RUN_DIR/compare-w.txt"
  record nginx1 http_native_rps "$(rps "$RUN_DIR/compare-w.txt")"
  stop_peer nginx1
  # Alternate which build goes first, so neither always runs on a warmer (or cooler) machine.
  if (( rep % 2 )); then order=(before after); else order=(after before); fi
  for which in "${order[@]}"; do
    b=$before; [[ $which == after ]] && b=$after
    http_rounds "$b" "$which"
    micro "$b" "$which"
    log "rep $rep $which done"
  done
done

med() { awk -F'\t' -v n="$1" -v m="$2" '$1==n && $2==m {print $3}' "$out" | median; }
printf '\n| measure | before | after | after / before |\n|---|---|---|---|\n'
nginx=$(med nginx1 http_native_rps)
for m in $(awk -F'\t' '$1=="after"{print $2}' "$out" | awk '!seen[$0]++'); do
  b=$(med before "$m") a=$(med after "$m")
  [[ -n $b && -n $a ]] || continue
  printf '| %s | %s | %s | %.3f |\n' "$m" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN{print a/b}')"
done
printf '| http_native_rps vs nginx (1 worker, %s req/s) | %.3f | %.3f | |\n' "$nginx" \
  "$(awk -v a="$(med before http_native_rps)" -v b="$nginx" 'BEGIN{print a/b}')" \
  "$(awk -v a="$(med after http_native_rps)" -v b="$nginx" 'BEGIN{print a/b}')"
