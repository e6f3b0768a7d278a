#!/usr/bin/env bash
# Versions (issue 17): deploy-to-serving time, from `nimbus deploy` starting to the first
# response from the new version, for a Python function and a native (C++) one. The native
# figure includes the host's build of the new version (a fresh CMake tree in its folder);
# the build alone is measured apart, the same way, so the rest can be told.
# Usage: bash bench/deploy.sh   (after make build). Env: RUNS=5.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
NIMBUS=$repo/build/nimbus
RUNS=${RUNS:-5}
[[ -x $NIMBUS ]] || { echo "bench: build first (make build)" >&2; exit 1; }
work=$(mktemp -d /tmp/nimbus-bench-deploy.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
now_ms() { date +%s%3N; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Serves DIR on PORT in the background; returns once it answers.
serve() {
  env -i PATH=/usr/bin:/bin HOME="$work" "$NIMBUS" start "$1" --port "$2" --admin-port 0 > "$1.log" 2>&1 &
  for _ in $(seq 1 400); do curl -fs "localhost:$2/hello" > /dev/null && return 0; sleep 0.05; done
  echo "bench: the host for $1 did not start" >&2; cat "$1.log" >&2; exit 1
}
# Deploys FROM to the host of TO and waits for /hello on PORT to say WANT; prints the ms.
deploy_ms() {
  local from=$1 to=$2 port=$3 want=$4 t0
  t0=$(now_ms)
  env -i PATH=/usr/bin:/bin HOME="$work" "$NIMBUS" deploy "$from" --to "$to" > /dev/null
  until [[ $(curl -fs "localhost:$port/hello") == "$want" ]]; do sleep 0.002; done
  echo $(( $(now_ms) - t0 ))
}
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

# Python: one function, each run a new version (its reply names the run).
py=$work/py
mkdir -p "$py"
cat > "$py/nimbus.yaml" <<'YAML'
name: deploybench
functions:
  hello:
    runtime: python
    handler: app.py:hello
    triggers: [{http: {route: /hello}}]
YAML
echo 'def hello(req, ctx): return "v0"' > "$py/app.py"
serve "$py" 18181
python_ms=()
for i in $(seq 1 "$RUNS"); do
  next=$work/py-$i
  mkdir -p "$next" && cp "$py/nimbus.yaml" "$next/" && echo "def hello(req, ctx): return \"v$i\"" > "$next/app.py"
  python_ms+=("$(deploy_ms "$next" "$py" 18181 "v$i")")
  log "python run $i: ${python_ms[-1]} ms"
done

# Native: the scaffolded C++ hello, each run a new version.
cc=$work/cc
"$NIMBUS" init "$cc" --name deploybench > /dev/null
serve "$cc" 18182
native_ms=() build_ms=()
for i in $(seq 1 "$RUNS"); do
  next=$work/cc-$i
  mkdir -p "$next" && (cd "$cc" && tar cf - --exclude=.nimbus .) | (cd "$next" && tar xf -)
  sed -i "s/\"Hello, \"/\"native v$i, \"/" "$next/functions/hello/hello.cpp"
  native_ms+=("$(deploy_ms "$next" "$cc" 18182 "native v$i, World!")")
  # The build alone, as the host does it for a new version: a fresh tree from the same sources.
  copy=$work/cc-build-$i
  mkdir -p "$copy" && (cd "$next" && tar cf - --exclude=.nimbus .) | (cd "$copy" && tar xf -)
  t0=$(now_ms)
  env -i PATH=/usr/bin:/bin HOME="$work" "$NIMBUS" start "$copy" --port 0 --admin-port 0 > "$copy.log" 2>&1 &
  pid=$!
  until grep -q "nimbus listening" "$copy.log"; do sleep 0.01; done
  build_ms+=("$(( $(now_ms) - t0 ))")
  kill $pid; wait $pid 2>/dev/null || true
  log "native run $i: ${native_ms[-1]} ms (a fresh build and start alone: ${build_ms[-1]} ms)"
done
echo "{\"python_deploy_ms\": $(printf '%s\n' "${python_ms[@]}" | median), \"native_deploy_ms\": $(printf '%s\n' "${native_ms[@]}" | median), \"native_fresh_build_and_start_ms\": $(printf '%s\n' "${build_ms[@]}" | median)}"
