#!/usr/bin/env bash
# test_fuzz_wire_replay.sh -- the wire decoder's fuzzing inside `make test`:
#   1. the seed corpus tests/fuzz/corpus/wire (one valid message of every type + edge cases) is
#      complete and replays through $BUILD/fuzz/fuzz_wire (ASan + UBSan) without a finding;
#   2. a short libFuzzer run (SRM_FUZZ_SECONDS, default 20 s) from those seeds finds nothing.
# The long campaign (>= 10 million executions) is `make fuzz`. Prints "N passed, N failed".
set -u
BUILD=${BUILD:-build}
fuzzer=$BUILD/fuzz/fuzz_wire
seeds=tests/fuzz/corpus/wire
pass=0; fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

if [ ! -x "$fuzzer" ]; then
  bad "$fuzzer not built (make test builds it with clang; see the Makefile's fuzzing section)"
  echo "$pass passed, $fail failed"; exit 1
fi
for t in volume_f32 volume_f16 patch_batch_f32 patch_batch_bf16 checkpoint checkpoint_ack metrics \
         heartbeat ready stop request error; do
  [ -s "$seeds/$t" ] && ok || bad "seed $seeds/$t missing"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/srm-fuzz-wire-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"

# 1. replay: every seed once
if "$fuzzer" -runs=0 "$seeds" >"$work/replay.log" 2>&1; then ok
else bad "replay of $seeds"; tail -n 30 "$work/replay.log"; fi

# 2. brief fuzz
secs=${SRM_FUZZ_SECONDS:-20}
if "$fuzzer" -max_total_time="$secs" -max_len=16384 -print_final_stats=1 -artifact_prefix="$work/" \
     "$work/corpus" "$seeds" >"$work/fuzz.log" 2>&1; then
  ok
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log")
  echo "fuzz_wire: ${runs:-?} executions in ${secs} s (${rate:-?}/s), no finding"
else
  bad "fuzz_wire found a crash or sanitizer report"
  grep -E "ERROR|SUMMARY|round trip|rejected|artifact" "$work/fuzz.log" | head -n 20
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -e "$a" ] && cp "$a" "${TMPDIR:-/tmp}/" && echo "kept $(basename "$a") in ${TMPDIR:-/tmp}/"
  done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
