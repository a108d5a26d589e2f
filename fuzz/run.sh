#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 30 s each), seeded with
# the callback fixtures. Usage: fuzz/run.sh [seconds-per-target]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
work=${FUZZ_WORK_DIR:-$(pwd)/../target/fuzz-work}
mkdir -p "$work"
for target in query signature body; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  case $target in
    body) cp ../tests/fixtures/callbacks/*.json "$corpus/" ;;
    query) for f in ../tests/fixtures/callbacks/*.json; do
             cmd=$(sed -n 's/.*"CallbackCommand": *"\([^"]*\)".*/\1/p;T;q' "$f")
             printf 'SdkAppid=1400000001&CallbackCommand=%s&contenttype=json&ClientIP=203.0.113.7&OptPlatform=RESTAPI&Sign=%064d&RequestTime=1732770000' "$cmd" 0 > "$corpus/$(basename "$f" .json)"
           done ;;
    signature) printf 'xxxxyyyy\n1669872112\n17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061\n1669872112' > "$corpus/vector" ;;
  esac
  echo "--- fuzz $target for ${secs}s"
  log="$work/$target.log"
  status=0
  cargo +nightly fuzz run --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -print_final_stats=1 > "$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|Done [0-9]+ runs' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "FAIL: fuzz target $target exited with $status (crash inputs: fuzz/artifacts/$target)" >&2
    exit 1
  fi
done
