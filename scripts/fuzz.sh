#!/usr/bin/env bash
# Runs libFuzzer targets one after another (never two at once: they would fight for the CPU).
# usage: scripts/fuzz.sh BUILD_DIR SECONDS TARGET...
# Each target starts from its committed corpus (fuzz/corpus/<target>, read only) and its
# dictionary (fuzz/<target>.dict) when there is one; what it learns goes to
# BUILD_DIR/fuzz-corpus/<target>, crashes to BUILD_DIR/fuzz-artifacts/. Fails on the first
# target that finds a crash, a leak, a timeout or a broken invariant.
set -euo pipefail
build=$1 seconds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/fuzz-artifacts"
for t in "$@"; do
  bin="$build/fuzz/${t}_fuzz"
  learned="$build/fuzz-corpus/$t"
  mkdir -p "$learned"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build/fuzz-artifacts/$t-")
  [[ -f "$root/fuzz/$t.dict" ]] && args+=(-dict="$root/fuzz/$t.dict")
  # A fixed seed (the smoke in `make test`): the same mutations in every run, so a test run
  # does not pass or fail by chance; `make fuzz` explores with a new seed each time.
  [[ -n ${FUZZ_SEED:-} ]] && args+=(-seed="$FUZZ_SEED")
  echo "fuzz: $t for ${seconds}s" >&2
  if ! "$bin" "${args[@]}" "$learned" "$root/fuzz/corpus/$t" > "$build/fuzz-artifacts/$t.log" 2>&1; then
    tail -n 60 "$build/fuzz-artifacts/$t.log" >&2
    echo "fuzz: $t FAILED; the input is in $build/fuzz-artifacts/ (docs/fuzzing.md: reproducing a crash)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units' "$build/fuzz-artifacts/$t.log" | sed "s/^/fuzz: $t: /" >&2 || true
done
