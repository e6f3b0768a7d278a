#!/usr/bin/env bash
# MQTT (issue 5): publish -> function start latency at a steady rate through the real MQTT
# trigger (build/bench/mqtt_bench starts its own Mosquitto broker on loopback), RUNS times,
# medians. There is no MQTT peer in ../shared/peers: the figures stand alone.
# Usage: bash bench/mqtt.sh   (after make build). Env: RUNS=3 N=5000 RATE=1000.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
BENCH=$repo/build/bench/mqtt_bench
[[ -x $BENCH ]] || { echo "bench: build first (make build)" >&2; exit 1; }

results=()
for i in $(seq 1 "$RUNS"); do
  line=$(env -i PATH=/usr/bin:/bin N="${N:-5000}" RATE="${RATE:-1000}" "$BENCH")
  echo "mqtt run $i: $line" >&2
  results+=("$line")
done
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
field() { printf '%s\n' "${results[@]}" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/" | median; }
echo "mqtt medians at ${RATE:-1000}/s: publish -> function start p50 $(field latency_p50_ms) ms, p99 $(field latency_p99_ms) ms, max $(field latency_max_ms) ms"
