#!/usr/bin/env bash
# Traces and the invocation history (issue 18): what each costs, in the same run, on two shapes:
#   hello:    native hello over HTTP (GET /): req/s;
#   pipeline: the queue pipeline: POST / to `front` (native relay: its payload to queue `work`,
#             committed with the request), `worker` (native hello) takes the queue: messages
#             per second the pipeline sustains (the messages the front accepted during the
#             load, over the time from the load's start until the worker has taken the last of
#             them: past what the core sustains the queue takes up the difference, and what the
#             worker finished within the load alone would leave out the backlog's work).
# Cases: tracing off, on at sample 1.0 and on at sample 0.01 (each exporting OTLP/protobuf, the
# default, to a local receiver: bench/otlp_sink, a small C++ server that reads each batch and
# answers 200, standing for a collector elsewhere), with the history off in these three; then
# (hello only) the history on (its default, keep 1000) with tracing off. The host is pinned to
# core 0, wrk and the receiver to core 1; each measurement is a fresh host, 2 s warm-up, then
# `wrk -t1 -c64 -d10s`; the cases alternate, REPS rounds (a case measured only first or last
# looks faster or slower than it is); the median of the rounds' ratios to "off". Spans
# exported: the host's nimbus_trace_spans_exported_total.
# Usage: bash bench/tracing.sh (after make build). Env: REPS=3, SHAPES="hello pipeline",
# NIMBUS_BIN (another nimbus binary).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(run_case ...) stops the bench too
repo=$(cd "$(dirname "$0")/.." && pwd)
NIMBUS=${NIMBUS_BIN:-$repo/build/nimbus}
HELLO=$repo/build/tests/functions/hello.so
RELAY=$repo/build/tests/functions/relay.so
SINK=$repo/build/bench/otlp_sink
REPS=${REPS:-3}
SHAPES=${SHAPES:-hello pipeline}
[[ -x $NIMBUS && -f $HELLO && -f $RELAY && -x $SINK ]] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v wrk > /dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d /tmp/nimbus-bench-tracing.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
PORT=18190 RECEIVER=18191 ADMIN=18192

taskset -c 1 "$SINK" $RECEIVER &
for _ in $(seq 1 100); do curl -fs "localhost:$RECEIVER/" > /dev/null && break; sleep 0.05; done
printf 'wrk.method = "POST"\nwrk.body = "order"\n' > "$work/post.lua"

functions_of() {
  if [[ $1 == hello ]]; then
    cat <<YAML
functions:
  hello:
    runtime: native
    handler: $HELLO
    blocking: false
    triggers:
      - http: {route: /, methods: [GET]}
YAML
  else
    cat <<YAML
functions:
  front:
    runtime: native
    handler: $RELAY
    blocking: false
    triggers:
      - http: {route: /, methods: [POST]}
    outputs: {next: {queue: work}}
  worker:
    runtime: native
    handler: $HELLO
    blocking: false
    triggers: [{queue: {name: work, batch_size: 64}}]
YAML
  fi
}

# The successful invocations of FUNCTION (front, worker) so far (pipeline): the front's are
# the messages it put on the queue, the worker's those it took off for good. Empty when the
# host does not answer.
done_by() {
  local text
  text=$(curl -fs "localhost:$ADMIN/metrics") || return 0
  awk -v f="$1" '$0 ~ "^nimbus_invocations_total\\{function=\"" f "\",.*outcome=\"success\"" {s += $2} END {print s + 0}' <<< "$text"
}
# Waits (up to 60 s) until the worker has taken every message the front accepted.
drained() {
  local front worker
  for _ in $(seq 1 1200); do
    front=$(done_by front) worker=$(done_by worker)
    [[ -n $front && -n $worker && $worker -ge $front ]] && return 0
    sleep 0.05
  done
  echo "bench: the queue did not drain in 60 s" >&2
  return 1
}
now() { date +%s.%N; }

# The host's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_case SHAPE NAME OBSERVE_YAML -> prints "rate spans-exported cpu-us-per-unit" for one
# fresh host (the host's CPU time over the measured window, the pipeline's drain and the export
# after it, per request or message: steadier than the rate on a VM whose speed drifts)
run_case() {
  local app=$work/$1-$2
  mkdir -p "$app"
  { echo "name: bench"; echo "$3"; functions_of "$1"; } > "$app/nimbus.yaml"
  env -i PATH=/usr/bin:/bin HOME="$work" taskset -c 0 "$NIMBUS" start "$app" --port $PORT --admin-port $ADMIN > "$app/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do curl -fs "localhost:$ADMIN/metrics" > /dev/null && break; sleep 0.05; done
  local wrk_args=(-t1 -c64) rate cpu0 cpu1
  [[ $1 == pipeline ]] && wrk_args+=(-s "$work/post.lua")
  taskset -c 1 wrk "${wrk_args[@]}" -d2s "http://127.0.0.1:$PORT/" > /dev/null
  local units  # requests or messages served in the measured window
  if [[ $1 == hello ]]; then
    cpu0=$(cpu_ticks $pid)
    rate=$(taskset -c 1 wrk "${wrk_args[@]}" -d10s "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')
    units=$(awk -v r="$rate" 'BEGIN {printf "%d", r * 10}')
  else
    # What the pipeline sustains: the messages the front accepted over the load, by the time
    # until the worker has taken the last of them. Under a load past what one core sustains
    # the queue takes up the difference (as a queue should), and counting only what the worker
    # finished within the 10 s would count the front's part of the backlog's work and not
    # the worker's; so it starts drained and ends drained.
    drained || exit 1
    local f0 t0 t1 backlog
    cpu0=$(cpu_ticks $pid)
    f0=$(done_by front)
    t0=$(now)
    taskset -c 1 wrk "${wrk_args[@]}" -d10s "http://127.0.0.1:$PORT/" > /dev/null
    backlog=$(( $(done_by front) - $(done_by worker) ))
    drained || exit 1
    t1=$(now)
    units=$(( $(done_by front) - f0 ))
    rate=$(awk -v n="$units" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%d", n / (t1 - t0)}')
    echo "pipeline $2: backlog at the load's end $backlog messages, drained $(awk -v t0="$t0" -v t1="$t1" \
      'BEGIN {printf "%.1f", t1 - t0 - 10}') s later" >&2
  fi
  sleep 1  # the last batch exported
  cpu1=$(cpu_ticks $pid)
  local spans
  spans=$(curl -fs "localhost:$ADMIN/metrics" | awk '/^nimbus_trace_spans_exported_total / {print $2}')
  kill -TERM $pid; wait $pid 2>/dev/null || true
  echo "$rate ${spans:-0} $(awk -v t=$((cpu1 - cpu0)) -v n="$units" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0)}')"
}

median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

otlp="observe:
  history: {keep: 0}
  otlp: {endpoint: \"http://127.0.0.1:$RECEIVER/v1/traces\", sample: SAMPLE}"
for shape in $SHAPES; do
  cases="off full hundredth"
  [[ $shape == hello ]] && cases+=" history"
  declare -A rates=() spans=() cpus=()
  for _ in $(seq 1 "$REPS"); do
    for c in $cases; do
      case $c in
        off) yaml="observe: {history: {keep: 0}}" ;;
        full) yaml="${otlp/SAMPLE/1.0}" ;;
        hundredth) yaml="${otlp/SAMPLE/0.01}" ;;
        history) yaml="" ;;
      esac
      out=$(run_case "$shape" $c "$yaml")  # (an assignment: its failure stops the bench)
      read -r r n u <<< "$out"
      rates[$c]+="$r "
      spans[$c]+="$n "
      cpus[$c]+="$u "
    done
  done
  for c in $cases; do echo "$shape $c runs: ${rates[$c]} (host CPU µs per unit: ${cpus[$c]})"; done
  # Each round's cases ran next to each other: the median of the rounds' ratios to "off" is
  # steadier than the ratio of medians on a VM whose speed drifts by 20 % over minutes.
  ratio() {
    paste -d' ' <(tr ' ' '\n' <<< "${rates[$1]}" | grep .) <(tr ' ' '\n' <<< "${rates[off]}" | grep .) |
      awk '{printf "%.3f\n", $1/$2}' | median
  }
  med() { tr ' ' '\n' <<< "${rates[$1]}" | grep . | median; }
  # The host's CPU per request or message, against "off" the same way.
  cpu_ratio() {
    paste -d' ' <(tr ' ' '\n' <<< "${cpus[$1]}" | grep .) <(tr ' ' '\n' <<< "${cpus[off]}" | grep .) |
      awk '{printf "%.3f\n", $1/$2}' | median
  }
  cpu_med() { tr ' ' '\n' <<< "${cpus[$1]}" | grep . | median; }
  unit="req/s"
  [[ $shape == pipeline ]] && unit="messages/s"
  echo
  echo "$shape: | case | $unit (median of $REPS) | vs off (median of the rounds' ratios) | host CPU µs per unit (median) | CPU vs off | spans exported (median run) |"
  echo "|---|---|---|---|---|---|"
  echo "| tracing and history off | $(med off) | 1.00 | $(cpu_med off) | 1.00 | - |"
  echo "| sample 1.0 | $(med full) | $(ratio full) | $(cpu_med full) | $(cpu_ratio full) | $(tr ' ' '\n' <<< "${spans[full]}" | grep . | median) |"
  echo "| sample 0.01 | $(med hundredth) | $(ratio hundredth) | $(cpu_med hundredth) | $(cpu_ratio hundredth) | $(tr ' ' '\n' <<< "${spans[hundredth]}" | grep . | median) |"
  [[ $shape == hello ]] && echo "| history on (keep 1000), tracing off | $(med history) | $(ratio history) | $(cpu_med history) | $(cpu_ratio history) | - |"
  echo
  unset rates spans cpus
done
