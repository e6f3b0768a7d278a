#!/usr/bin/env bash
# Soak: one real host under N minutes of mixed load (bench/soak_app, driven by bench/soak.py):
#   - HTTP GET with keep-alive to a native (in the host), a Python and a Node function;
#   - messages into a queue pipeline in -> stage1 -> mid -> stage2 -> done (relay.so);
#   - records appended to a stream read by a Python function; a timer every second;
#   - one worker process killed with SIGKILL every minute, which the host must replace.
# One line a minute (host RSS, fds, threads, HTTP p50/p99/errors, queue and stream figures, the
# store's database and WAL sizes), then the load stops, the pipeline drains and a verdict: RSS
# drift < 10%, fds and threads flat, the WAL bounded, no message or record lost, duplicated or
# dead-lettered, every killed worker replaced, the timer on time.
# Appends a section to bench/RESULTS.md (SOAK_RECORD=0: not) and exits 1 if the verdict fails.
# Usage: bash bench/soak.sh   (after make build; make soak)
# Env: SOAK_MINUTES=30, SOAK_INTERVAL_S=60 (seconds per recorded "minute"), SOAK_WARMUP_S=180 (the store's page caches fill in the first minutes; drift is measured after),
#      SOAK_HTTP_RPS=300 (in all), SOAK_QUEUE_RPS=50, SOAK_STREAM_RPS=50, SOAK_DRAIN_S=120,
#      SOAK_WAL_MAX_MIB=96, SOAK_RECORD=1, SOAK_KEEP=0 (1: keep the temporary app folder, with
#      the store and the host's log).
# A short check: SOAK_MINUTES=2 SOAK_INTERVAL_S=20 SOAK_WARMUP_S=10 SOAK_RECORD=0 bash bench/soak.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
NIMBUS=$repo/build/nimbus
FUNCS=$repo/build/tests/functions
PY=/usr/bin/python3
[[ -x $NIMBUS && -f $FUNCS/hello.so && -f $FUNCS/relay.so ]] || { echo "soak: build first (make build)" >&2; exit 1; }
MINUTES=${SOAK_MINUTES:-30}
INTERVAL=${SOAK_INTERVAL_S:-60}
WARMUP=${SOAK_WARMUP_S:-180}
RECORD=${SOAK_RECORD:-1}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

tmp=$(mktemp -d /tmp/nimbus-soak.XXXXXX)
host= load=
cleanup() {
  [[ -n $load ]] && kill "$load" 2>/dev/null
  if [[ -n $host ]] && kill -0 "$host" 2>/dev/null; then
    kill -TERM "$host" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$host" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$host" 2>/dev/null && { log "host $host still running 15 s after SIGTERM: SIGKILL"; kill -KILL "$host" 2>/dev/null || true; }
    wait "$host" 2>/dev/null || true
  fi
  if [[ ${SOAK_KEEP:-0} == 1 ]]; then log "kept $tmp (host log: $tmp/host.log)"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

app=$tmp/app
cp -r "$repo/bench/soak_app" "$app"
rm -rf "$app/.nimbus"
cp "$FUNCS/hello.so" "$FUNCS/relay.so" "$app/"
# The host's stdout carries one JSON line per invocation (~450 a second here): only the others
# (host events, failures, worker exits, scaling) are kept in host.log. The filter is this
# shell's child, not the host's: the host's children are its workers only.
exec 3> >(grep --line-buffered -v '"outcome":"success"' > "$tmp/host.log")
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$tmp" LANG=C.UTF-8 \
  "$NIMBUS" start "$app" --port 0 --admin-port 0 >&3 2>&1 &
host=$!
exec 3>&-
for _ in $(seq 1 200); do
  [[ -f $app/.nimbus/host.json ]] && grep -q "\"pid\":$host," "$app/.nimbus/host.json" && break
  kill -0 "$host" 2>/dev/null || { echo "soak: the host did not start:" >&2; cat "$tmp/host.log" >&2; exit 1; }
  sleep 0.05
done
grep -q "\"pid\":$host," "$app/.nimbus/host.json" 2>/dev/null || { echo "soak: no $app/.nimbus/host.json after 10 s" >&2; exit 1; }
log "host $host: $(head -1 "$tmp/host.log")"

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal:/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
machine="$(nproc) vCPU ($cpu), $mem, $os, kernel $(uname -r); nimbus at $commit; load average at the start $(cut -d' ' -f1-3 /proc/loadavg)"
command="$({ env | grep -E '^SOAK_' | grep -v -E '^SOAK_(RECORD|KEEP)=' || true; } | sort | tr '\n' ' ')bash bench/soak.sh"

# In the background and waited for, so that a SIGTERM or ^C to this script stops it at once.
"$PY" "$repo/bench/soak.py" --app "$app" --host-pid "$host" --minutes "$MINUTES" --interval "$INTERVAL" \
  --warmup "$WARMUP" --http-rps "${SOAK_HTTP_RPS:-300}" --queue-rps "${SOAK_QUEUE_RPS:-50}" \
  --stream-rps "${SOAK_STREAM_RPS:-50}" --drain "${SOAK_DRAIN_S:-120}" --wal-max-mib "${SOAK_WAL_MAX_MIB:-96}" \
  --section "$tmp/section.md" --command "$command" --machine "$machine" &
load=$!
rc=0
wait "$load" || rc=$?
load=

# Worker exits and failed invocations the host logged (the kills, the requests they failed).
log "host log: $(grep -c '"msg":"invocation"' "$tmp/host.log" || true) failed invocations, $(grep -v '"msg":"invocation"' "$tmp/host.log" | grep -c . || true) other lines"
grep -v '"msg":"invocation"' "$tmp/host.log" | sed -E 's/^\{"time":"[^"]*T([0-9:]{8})[^"]*",/\1 {/' | cut -c1-200 | tail -n 12

if [[ $RECORD == 1 && -s $tmp/section.md ]]; then
  { printf '\n'; cat "$tmp/section.md"; } >> "$repo/bench/RESULTS.md"
  log "appended to bench/RESULTS.md"
fi
exit $rc
