#!/usr/bin/env bash
# Traces and the invocation history (issue 18): what each costs a native hello function, in the
# same run: tracing off, on at sample 1.0 and on at sample 0.01 (each exporting to a local OTLP
# receiver, a small Python HTTP server that reads each batch and answers 200), with the history
# off in these three; then the history on (its default, keep 1000) with tracing off. The host
# is pinned to core 0, wrk to core 1; 2 s warm-up, then `wrk -t1 -c64 -d10s`, REPS times, median req/s.
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
import http.server, sys, threading
spans = 0
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global spans
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            spans += body.count(b'"spanId"')
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def do_GET(self):
        with lock:
            text = str(spans).encode()
        self.send_response(200); self.send_header("content-length", str(len(text))); self.end_headers(); self.wfile.write(text)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c 1 /usr/bin/python3 "$work/receiver.py" $RECEIVER &
for _ in $(seq 1 100); do curl -fs "localhost:$RECEIVER/" > /dev/null && break; sleep 0.05; done

# run_case NAME OBSERVE_YAML -> prints "req/s spans-received"
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
  env -i PATH=/usr/bin:/bin HOME="$work" taskset -c 0 "$NIMBUS" start "$app" --port $PORT --admin-port 0 > "$app/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do curl -fs "localhost:$PORT/" > /dev/null && break; sleep 0.05; done
  local before
  before=$(curl -fs "localhost:$RECEIVER/")
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT/" > /dev/null
  local rates=()
  for _ in $(seq 1 "$REPS"); do
    rates+=("$(taskset -c 1 wrk -t1 -c64 -d10s "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')")
  done
  kill -TERM $pid; wait $pid 2>/dev/null || true
  local median
  median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')
  echo "$median $(( $(curl -fs "localhost:$RECEIVER/") - before ))"
}

otlp="observe:
  history: {keep: 0}
  otlp: {endpoint: \"http://127.0.0.1:$RECEIVER/v1/traces\", sample: SAMPLE}"
read -r off _ <<< "$(run_case off "observe: {history: {keep: 0}}")"
read -r full full_spans <<< "$(run_case full "${otlp/SAMPLE/1.0}")"
read -r tenth tenth_spans <<< "$(run_case hundredth "${otlp/SAMPLE/0.01}")"
read -r history _ <<< "$(run_case history "")"
echo "| case | req/s (median of $REPS) | vs off | spans the receiver got |"
echo "|---|---|---|---|"
echo "| tracing and history off | $off | 1.00 | - |"
awk -v a="$full" -v b="$off" -v s="$full_spans" 'BEGIN{printf "| sample 1.0 | %s | %.2f | %s |\n", a, a/b, s}'
awk -v a="$tenth" -v b="$off" -v s="$tenth_spans" 'BEGIN{printf "| sample 0.01 | %s | %.2f | %s |\n", a, a/b, s}'
awk -v a="$history" -v b="$off" 'BEGIN{printf "| history on (keep 1000), tracing off | %s | %.2f | - |\n", a, a/b}'
