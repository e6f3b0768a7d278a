#!/usr/bin/env bash
# make bench: Nimbus's HTTP host against nginx and workerd, measured in the same run.
#   - wrk against a native hello function (13-byte "Hello, World!", blocking: false, default
#     settings: per-invocation logging on, to a file); server pinned to core 0, wrk to core 1;
#     3 s warm-up, then `wrk -t1 -c64 -d10s --latency` and `wrk -t1 -c1 -d5s --latency`
#   - start to first 200 (spawn -> first 200 on GET /, median of RUNS)
#   - idle RSS one second after the first 200
# Peers come from ../shared/peers (installed into $PEERS_HOME by its setup.sh, outside the repo).
# Prints a markdown table for bench/RESULTS.md. Env: REPS=3 RUNS=5 PEERS="nginx nginx1 workerd".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PEERS_HOME=${PEERS_HOME:-/tmp/nimbus-peers}
shared_peers=${SHARED_PEERS:-$repo/../shared/peers}
if [[ ! -x $PEERS_HOME/node_modules/@cloudflare/workerd-linux-64/bin/workerd ]]; then
  bash "$shared_peers/setup.sh" >&2
fi
source "$PEERS_HOME/lib.sh"
trap stop_all_started EXIT

REPS=${REPS:-3} RUNS=${RUNS:-5}
BASELINES=(${PEERS:-nginx nginx1 workerd})
NIMBUS=$repo/build/nimbus
HELLO=$repo/build/tests/functions/hello.so
[[ -x $NIMBUS && -f $HELLO ]] || { echo "bench: build first (make build)" >&2; exit 1; }
NIMBUS_PORT=18090
PEER_PORT[nimbus]=$NIMBUS_PORT

app=$RUN_DIR/nimbus-app
rm -rf "$app" && mkdir -p "$app"
cat > "$app/nimbus.yaml" <<YAML
name: bench
functions:
  hello:
    runtime: native
    handler: $HELLO
    blocking: false
    triggers:
      - http: {route: /, methods: [GET]}
YAML

start_server() {  # start_server NAME [CPU] -> PEER_PID
  local name=$1 cpus=${2:-}
  if [[ $name == nimbus ]]; then
    local pin=()
    [[ -n $cpus ]] && pin=(taskset -c "$cpus")
    "${CLEAN_ENV[@]}" "${pin[@]}" "$NIMBUS" start "$app" --port $NIMBUS_PORT --admin-port 0 >"$RUN_DIR/nimbus.log" 2>&1 &
    PEER_PID=$!
    STARTED_PIDS[$PEER_PID]=nimbus
    echo "$PEER_PID" > "$RUN_DIR/nimbus.pid"
  else
    peer_prepare "$name"
    start_peer "$name" "$cpus"
  fi
}

ms() {  # wrk latency (us/ms/s) -> ms
  awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
    f=(u=="us")?0.001:(u=="ms")?1:(u=="s")?1000:-1; printf "%.3f", n*f }'
}
wrk_stats() {  # wrk_stats FILE -> "rps p50 p99"
  echo "$(awk '/^Requests\/sec:/{print $2}' "$1") $(ms "$(awk '$1=="50%"{print $2}' "$1")") $(ms "$(awk '$1=="99%"{print $2}' "$1")")"
}

out=$RUN_DIR/bench.tsv
: > "$out"
servers=(nimbus "${BASELINES[@]}")
for ((rep = 1; rep <= REPS; rep++)); do
  for s in "${servers[@]}"; do
    port=${PEER_PORT[$s]} url=http://$HOST:${PEER_PORT[$s]}/
    wait_port_free "$port" || { log "port $port busy"; exit 1; }
    start_server "$s" 0
    pid=$PEER_PID
    wait_200 "$port" 30 0.001 || { log "$s did not start"; tail -5 "$RUN_DIR/$s.log" >&2; exit 1; }
    [[ $(check_body "$port") == "200 13" ]] || log "$s: unexpected reply $(check_body "$port")"
    sleep 1
    rss=$(tree_rss_kb "$pid")
    taskset -c 1 wrk -t1 -c64 -d3s "$url" > /dev/null
    taskset -c 1 wrk -t1 -c64 -d10s --latency "$url" > "$RUN_DIR/$s-c64.txt"
    taskset -c 1 wrk -t1 -c1 -d5s --latency "$url" > "$RUN_DIR/$s-c1.txt"
    read -r r64 a64 b64 < <(wrk_stats "$RUN_DIR/$s-c64.txt")
    read -r r1 a1 b1 < <(wrk_stats "$RUN_DIR/$s-c1.txt")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$s" "$r64" "$a64" "$b64" "$r1" "$a1" "$b1" "$rss" >> "$out"
    log "rep $rep $s: c64 $r64 req/s p50 $a64 p99 $b64 ms | c1 $r1 req/s p50 $a1 p99 $b1 ms | idle rss $rss kB"
    if [[ $s == nimbus ]]; then stop_pid "$pid"; rm -f "$RUN_DIR/nimbus.log"; wait_port_free "$port" || true; else stop_peer "$s"; fi
  done
done

# Start to first 200: one untimed warm start, then RUNS timed ones.
declare -A start_ms
for s in "${servers[@]}"; do
  port=${PEER_PORT[$s]} times=()
  for ((i = 0; i <= RUNS; i++)); do
    wait_port_free "$port" || { log "port $port busy"; exit 1; }
    [[ $s != nimbus ]] && peer_prepare "$s"
    t0=${EPOCHREALTIME/./}
    start_server "$s"
    pid=$PEER_PID
    wait_200 "$port" 30 0.0005 || { log "$s: no 200"; exit 1; }
    t1=${EPOCHREALTIME/./}
    if [[ $s == nimbus ]]; then stop_pid "$pid"; else stop_peer "$s"; fi
    (( i == 0 )) || times+=("$(awk -v d=$((t1 - t0)) 'BEGIN{printf "%.1f", d/1000}')")
  done
  start_ms[$s]=$(printf '%s\n' "${times[@]}" | median)
  log "$s: start to first 200 median ${start_ms[$s]} ms (${times[*]})"
done

med() { awk -F'\t' -v s="$1" -v c="$2" '$2==s{print $c}' "$out" | median; }
printf '\n| server | req/s c64 | p50 c64 ms | p99 c64 ms | req/s c1 | p50 c1 ms | p99 c1 ms | start to first 200 ms | idle RSS MiB |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for s in "${servers[@]}"; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %.1f |\n' "$s" "$(med "$s" 3)" "$(med "$s" 4)" "$(med "$s" 5)" \
    "$(med "$s" 6)" "$(med "$s" 7)" "$(med "$s" 8)" "${start_ms[$s]}" "$(awk -v k="$(med "$s" 9)" 'BEGIN{print k/1024}')"
done
n64=$(med nimbus 3)
printf '\nRatios (medians of %s reps, nimbus / peer, req/s at c64):' "$REPS"
for s in "${BASELINES[@]}"; do printf ' %s %.2fx;' "$s" "$(awk -v a="$n64" -v b="$(med "$s" 3)" 'BEGIN{print a/b}')"; done
printf '\n'
