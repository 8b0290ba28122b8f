#!/usr/bin/env bash
# test_fuzz_nifti_replay.sh -- the NIfTI reader's and dataset discovery's fuzzing inside `make test`:
#   1. the seed corpora tests/fuzz/corpus/{nifti,dataset} hold a seed for every file of
#      tests/corpus/good and bad, and the datasets' dataset.json files;
#   2. every seed replays through $BUILD/fuzz/fuzz_{nifti,dataset} (ASan + UBSan) without a finding
#      (regress_* seeds are inputs that once crashed a reader);
#   3. a short libFuzzer run per target (SRM_FUZZ_SECONDS, default 20 s) from those seeds finds nothing.
# The long campaign (>= 10 million executions per target) is `make fuzz`. Prints "N passed, N failed".
set -u
BUILD=${BUILD:-build}
pass=0; fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/srm-fuzz-nifti-XXXXXX")
# The targets write a file per input: tmpfs keeps that cheap (20x faster than an overlay disk).
scratch=$(mktemp -d /dev/shm/srm-fuzz-nifti-XXXXXX 2>/dev/null || mktemp -d "$work/scratch-XXXXXX")
trap 'rm -rf "$work" "$scratch"' EXIT
keep=${TMPDIR:-/tmp}

# 1. the seeds cover the reader corpus (a file added there without a seed is a gap in fuzzing)
for f in tests/corpus/good/*.nii* tests/corpus/bad/*.nii*; do
  kind=$(basename "$(dirname "$f")"); name=$(basename "$f")
  stem=${kind}_${name%.nii*}; case $name in *.nii.gz) stem=${stem}_gz ;; esac
  [ -s "tests/fuzz/corpus/nifti/$stem" ] || bad "no seed tests/fuzz/corpus/nifti/$stem for $f"
done
[ "$fail" -eq 0 ] && ok
n=$(ls tests/fuzz/corpus/dataset | wc -l)
[ "$n" -ge 10 ] && ok || bad "tests/fuzz/corpus/dataset holds $n seeds (expected >= 10)"

for t in nifti dataset; do
  fuzzer=$BUILD/fuzz/fuzz_$t seeds=tests/fuzz/corpus/$t
  if [ ! -x "$fuzzer" ]; then bad "$fuzzer not built (make test builds it with clang)"; continue; fi
  mkdir -p "$work/$t/corpus" "$scratch/$t"
  # 2. replay: every seed once (TMPDIR: the target's scratch files go to our folder)
  if TMPDIR=$scratch/$t "$fuzzer" -runs=0 "$seeds" >"$work/$t/replay.log" 2>&1; then ok
  else
    bad "replay of $seeds through fuzz_$t"
    # name every seed that fails, with its first report line
    for f in "$seeds"/*; do
      TMPDIR=$scratch/$t "$fuzzer" "$f" >"$work/$t/one.log" 2>&1 && continue
      echo "  $(basename "$f"): $(grep -m1 -E "ERROR: (Address|Undefined)|runtime error|^fuzz_$t:|SUMMARY" "$work/$t/one.log" | cut -c1-160)"
    done
    continue
  fi
  # 3. brief fuzz
  secs=${SRM_FUZZ_SECONDS:-20}
  if TMPDIR=$scratch/$t "$fuzzer" -max_total_time="$secs" -max_len=16384 -print_final_stats=1 \
       -artifact_prefix="$work/$t/" "$work/$t/corpus" "$seeds" >"$work/$t/fuzz.log" 2>&1; then
    ok
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/fuzz.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t/fuzz.log")
    echo "fuzz_$t: ${runs:-?} executions in ${secs} s (${rate:-?}/s), no finding"
  else
    bad "fuzz_$t found a crash or sanitizer report"
    grep -E "ERROR|SUMMARY|fuzz_$t:|artifact" "$work/$t/fuzz.log" | head -n 20
    for a in "$work/$t"/crash-* "$work/$t"/leak-* "$work/$t"/timeout-* "$work/$t"/oom-*; do
      [ -e "$a" ] && cp "$a" "$keep/fuzz_$t-$(basename "$a")" && echo "kept $keep/fuzz_$t-$(basename "$a")"
    done
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
