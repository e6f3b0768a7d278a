#!/usr/bin/env bash
# The gateway's reverse proxy against nginx proxy_pass, to the same upstream, in one run.
#   upstream: nginx, 1 worker, `return 200 "Hello, World!"`, pinned to core 1 (with wrk)
#   nginx proxy: 1 worker, proxy_pass over an upstream{} block with keepalive 64, HTTP/1.1
#   Nimbus: `gateway: routes: [{path: /{*rest}, upstream: ...}]`, one event loop; both
#   proxies pinned to core 0; wrk on core 1; 3 s warm-up, then
#   `wrk -t2 -c64 -d10s --latency` (throughput) and `wrk -t1 -c1 -d5s --latency` (p50 added
#   over going to the upstream directly). REPS sweeps, each measuring every case in turn; the
#   median of each case is reported. Then the same route with JWT (RS256, ES256) and a rate
#   limit, against none, the same way.
# Prints a markdown table for bench/RESULTS.md. Env: REPS=3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null && [[ -x /usr/sbin/nginx ]] || bash "$repo/../shared/peers/setup.sh" >&2
NIMBUS=$repo/build/nimbus
[[ -x $NIMBUS ]] || { echo "bench: build first (make build)" >&2; exit 1; }
REPS=${REPS:-3}
UP=19180 NGX=19181 NIM=19182

work=$(mktemp -d /tmp/nimbus-gw-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=${HOME:-/root} LANG=C.UTF-8)

nginx_conf() {  # name port body
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $work/$1/body;
  proxy_temp_path $work/$1/proxy;
  $3
  server { listen 127.0.0.1:$2; location / { $4 } }
}
EOF
}
nginx_conf upstream $UP "" 'return 200 "Hello, World!";'
nginx_conf proxy $NGX "upstream up { server 127.0.0.1:$UP; keepalive 64; }" \
  'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";'
mkdir -p "$work/app"
MINT=$repo/build/bench/jwt_mint
[[ -x $MINT ]] || { echo "bench: build first (make build): no $MINT" >&2; exit 1; }
mapfile -t TOKENS < <("$MINT" "$work")
cat > "$work/app/nimbus.yaml" <<YAML
name: gwbench
gateway:
  jwt: {audience: bench, jwks_file: $work/jwks.json}
  upstreams:
    up: {targets: ["http://127.0.0.1:$UP"]}
  routes:
    - {path: "/rs/{*rest}", upstream: up, auth: jwt, rewrite: "/{rest}"}
    - {path: "/es/{*rest}", upstream: up, auth: jwt, rewrite: "/{rest}"}
    - {path: "/limited/{*rest}", upstream: up, rewrite: "/{rest}", rate_limit: {rate: 100000000/s, per: ip}}
    - {path: "/{*rest}", upstream: up}
functions:
YAML

taskset -c 1 "${clean_env[@]}" /usr/sbin/nginx -p "$work/upstream" -c "$work/upstream/nginx.conf" &
pids+=($!)
taskset -c 0 "${clean_env[@]}" /usr/sbin/nginx -p "$work/proxy" -c "$work/proxy/nginx.conf" &
pids+=($!)
taskset -c 0 "${clean_env[@]}" "$NIMBUS" start "$work/app" --port $NIM --admin-port 0 > "$work/nimbus.log" 2>&1 &
pids+=($!)

wait_200() {
  for _ in $(seq 1 500); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/") == 200 ]] && return 0
    sleep 0.02
  done
  echo "bench: nothing answers 200 on port $1" >&2
  cat "$work/nimbus.log" >&2
  exit 1
}
for p in $UP $NGX $NIM; do wait_200 $p; done

# wrk's "Requests/sec" and its p50 in microseconds.
measure() {  # port connections threads seconds [path] [header] -> "rps p50_us"
  local out hdr=()
  [[ -n ${6:-} ]] && hdr=(-H "$6")
  out=$(taskset -c 1 wrk -t"$3" -c"$2" -d"$4"s --latency "${hdr[@]}" "http://127.0.0.1:$1${5:-/}")
  local rps p50
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000}}' <<<"$out")
  echo "$rps $p50"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The three are measured in turn within each sweep (this VM's speed drifts between minutes).
declare -A RPS P50 RS LS PORT=([direct]=$UP [nginx]=$NGX [nimbus]=$NIM)
for name in direct nginx nimbus; do taskset -c 1 wrk -t2 -c64 -d3s "http://127.0.0.1:${PORT[$name]}/" > /dev/null; done
for _ in $(seq 1 "$REPS"); do
  for name in direct nginx nimbus; do
    read -r r _ < <(measure "${PORT[$name]}" 64 2 10)
    read -r _ l < <(measure "${PORT[$name]}" 1 1 5)
    RS[$name]+="$r " LS[$name]+="$l "
  done
done
for name in direct nginx nimbus; do
  RPS[$name]=$(tr ' ' '\n' <<<"${RS[$name]}" | grep . | median)
  P50[$name]=$(tr ' ' '\n' <<<"${LS[$name]}" | grep . | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", a - b}'; }
echo "| path (proxy on core 0, upstream + wrk on core 1) | req/s (c64) | p50 at c1 | p50 added over direct | req/s vs nginx |"
echo "|---|---:|---:|---:|---:|"
echo "| upstream directly (nginx, 1 worker) | ${RPS[direct]} | ${P50[direct]} µs | - | - |"
echo "| nginx proxy_pass (1 worker, keepalive 64) | ${RPS[nginx]} | ${P50[nginx]} µs | $(added "${P50[nginx]}" "${P50[direct]}") µs | 1.00 |"
echo "| Nimbus gateway (1 loop) | ${RPS[nimbus]} | ${P50[nimbus]} µs | $(added "${P50[nimbus]}" "${P50[direct]}") µs | $(ratio "${RPS[nimbus]}" "${RPS[nginx]}") |"

# What a route's policies cost on the same proxying path (c64, medians of REPS).
declare -A POLICY SAMPLES PATHS=([plain]=/ [rs256]=/rs/ [es256]=/es/ [limited]=/limited/)
declare -A HDRS=([plain]="" [rs256]="Authorization: Bearer ${TOKENS[0]}" [es256]="Authorization: Bearer ${TOKENS[1]}" [limited]="")
for name in plain rs256 es256 limited; do
  hdr=${HDRS[$name]}
  [[ $(curl -s -o /dev/null -w '%{http_code}' ${hdr:+-H "$hdr"} "http://127.0.0.1:$NIM${PATHS[$name]}") == 200 ]] || { echo "bench: $name is not 200" >&2; exit 1; }
done
for _ in $(seq 1 "$REPS"); do
  for name in plain rs256 es256 limited; do
    read -r r _ < <(measure $NIM 64 2 10 "${PATHS[$name]}" "${HDRS[$name]}")
    SAMPLES[$name]+="$r "
  done
done
for name in plain rs256 es256 limited; do POLICY[$name]=$(tr ' ' '\n' <<<"${SAMPLES[$name]}" | grep . | median); done
echo
echo "| Nimbus gateway route (c64) | req/s | vs the same route without the policy |"
echo "|---|---:|---:|"
echo "| no auth, no limit | ${POLICY[plain]} | 1.00 |"
echo "| JWT RS256 (one token, verified once, then cached) | ${POLICY[rs256]} | $(ratio "${POLICY[rs256]}" "${POLICY[plain]}") |"
echo "| JWT ES256 (one token, verified once, then cached) | ${POLICY[es256]} | $(ratio "${POLICY[es256]}" "${POLICY[plain]}") |"
echo "| rate limit per client IP (never reached) | ${POLICY[limited]} | $(ratio "${POLICY[limited]}" "${POLICY[plain]}") |"
