#!/usr/bin/env bash
# Traces and the invocation history (issue 18): what each costs a native hello function, in the
# same run: tracing off, on at sample 1.0 and on at sample 0.01 (each exporting OTLP/protobuf,
# the default, to a local receiver, a small Python HTTP server that reads each batch and answers
# 200), with the history off in these three; then the history on (its default, keep 1000) with
# tracing off. The host is pinned to core 0, wrk and the receiver to core 1; each measurement is
# a fresh host, 2 s warm-up, then `wrk -t1 -c64 -d10s`; the cases alternate, REPS rounds
# (a case measured only first or last looks faster or slower than it is); median req/s.
# Spans exported: the host's nimbus_trace_spans_exported_total.
# Usage: bash bench/tracing.sh (after make build). Env: REPS=3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
NIMBUS=$repo/build/nimbus
HELLO=$repo/build/tests/functions/hello.so
REPS=${REPS:-3}
[[ -x $NIMBUS && -f $HELLO ]] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v wrk > /dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d /tmp/nimbus-bench-tracing.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
PORT=18190 RECEIVER=18191

cat > "$work/receiver.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c 1 /usr/bin/python3 "$work/receiver.py" $RECEIVER &
for _ in $(seq 1 100); do curl -fs "localhost:$RECEIVER/" > /dev/null && break; sleep 0.05; done

# run_case NAME OBSERVE_YAML -> prints "req/s spans-exported" for one fresh host
ADMIN=18192
run_case() {
  local app=$work/$1
  mkdir -p "$app"
  cat > "$app/nimbus.yaml" <<YAML
name: bench
$2
functions:
  hello:
    runtime: native
    handler: $HELLO
    blocking: false
    triggers:
      - http: {route: /, methods: [GET]}
YAML
  env -i PATH=/usr/bin:/bin HOME="$work" taskset -c 0 "$NIMBUS" start "$app" --port $PORT --admin-port $ADMIN > "$app/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do curl -fs "localhost:$PORT/" > /dev/null && break; sleep 0.05; done
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT/" > /dev/null
  local rate
  rate=$(taskset -c 1 wrk -t1 -c64 -d10s "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')
  sleep 1  # the last batch exported
  local spans
  spans=$(curl -fs "localhost:$ADMIN/metrics" | awk '/^nimbus_trace_spans_exported_total / {print $2}')
  kill -TERM $pid; wait $pid 2>/dev/null || true
  echo "$rate ${spans:-0}"
}

median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

otlp="observe:
  history: {keep: 0}
  otlp: {endpoint: \"http://127.0.0.1:$RECEIVER/v1/traces\", sample: SAMPLE}"
declare -A rates spans
for _ in $(seq 1 "$REPS"); do
  for c in off full hundredth history; do
    case $c in
      off) yaml="observe: {history: {keep: 0}}" ;;
      full) yaml="${otlp/SAMPLE/1.0}" ;;
      hundredth) yaml="${otlp/SAMPLE/0.01}" ;;
      history) yaml="" ;;
    esac
    read -r r n <<< "$(run_case $c "$yaml")"
    rates[$c]+="$r "
    spans[$c]+="$n "
  done
done
off=$(tr ' ' '\n' <<< "${rates[off]}" | grep . | median)
full=$(tr ' ' '\n' <<< "${rates[full]}" | grep . | median)
tenth=$(tr ' ' '\n' <<< "${rates[hundredth]}" | grep . | median)
history=$(tr ' ' '\n' <<< "${rates[history]}" | grep . | median)
full_spans=$(tr ' ' '\n' <<< "${spans[full]}" | grep . | median)
tenth_spans=$(tr ' ' '\n' <<< "${spans[hundredth]}" | grep . | median)
for c in off full hundredth history; do echo "$c runs: ${rates[$c]}"; done
# Each round's cases ran next to each other: the median of the rounds' ratios to "off" is
# steadier than the ratio of medians on a VM whose speed drifts by 20 % over minutes.
ratio() {
  paste -d' ' <(tr ' ' '\n' <<< "${rates[$1]}" | grep .) <(tr ' ' '\n' <<< "${rates[off]}" | grep .) |
    awk '{printf "%.3f\n", $1/$2}' | median
}
echo "| case | req/s (median of $REPS) | vs off (median of the rounds' ratios) | spans exported (median run) |"
echo "|---|---|---|---|"
echo "| tracing and history off | $off | 1.00 | - |"
echo "| sample 1.0 | $full | $(ratio full) | $full_spans |"
echo "| sample 0.01 | $tenth | $(ratio hundredth) | $tenth_spans |"
echo "| history on (keep 1000), tracing off | $history | $(ratio history) | - |"
