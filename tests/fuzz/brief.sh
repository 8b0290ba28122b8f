# brief.sh -- sourced (after tests/tally.sh) by the fuzz replay tests inside `make test`: a
# libFuzzer target's seed replay and its short run. Needs ok / bad from tally.sh. The long
# campaign (>= 10 million executions per target) is `make fuzz`.
# Artifacts (crash-*, leak-*, ...) are kept in the TMPDIR the test started with, not in the
# scratch TMPDIR a caller may give the target.
FUZZ_KEEP=${TMPDIR:-/tmp}

# fuzz_replay NAME FUZZER SEEDS WORK: every seed of SEEDS once (-runs=0); on a finding, each seed
# that fails is named with its first report line, and the status is 1.
fuzz_replay() {
  local name=$1 fuzzer=$2 seeds=$3 work=$4 f
  if "$fuzzer" -runs=0 "$seeds" >"$work/replay.log" 2>&1; then ok "replay of $seeds through $name"; return; fi
  bad "replay of $seeds through $name"
  local first="ERROR: (Address|Undefined)|runtime error|^$name:|SUMMARY"
  for f in "$seeds"/*; do
    "$fuzzer" "$f" >"$work/one.log" 2>&1 && continue
    echo "  $(basename "$f"): $(grep -m1 -E "$first" "$work/one.log" | cut -c1-160)"
  done
  return 1
}

# fuzz_brief NAME FUZZER SEEDS WORK: SRM_FUZZ_SECONDS (default 20) of fuzzing from SEEDS into
# WORK/corpus; a finding fails, its report lines are printed and its artifacts kept.
fuzz_brief() {
  local name=$1 fuzzer=$2 seeds=$3 work=$4 secs=${SRM_FUZZ_SECONDS:-20} runs rate a
  mkdir -p "$work/corpus"
  if "$fuzzer" -max_total_time="$secs" -max_len=16384 -print_final_stats=1 \
       -artifact_prefix="$work/" "$work/corpus" "$seeds" >"$work/fuzz.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log")
    ok "$name: ${runs:-?} executions in ${secs} s (${rate:-?}/s), no finding"
    return
  fi
  bad "$name found a crash or sanitizer report"
  grep -E "ERROR|SUMMARY|round trip|rejected|artifact|^$name:" "$work/fuzz.log" | head -n 20
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -e "$a" ] && cp "$a" "$FUZZ_KEEP/$name-$(basename "$a")" && echo "kept $FUZZ_KEEP/$name-$(basename "$a")"
  done
}
