#!/usr/bin/env bash
# test_fuzz_nifti_replay.sh -- the NIfTI reader's and dataset discovery's fuzzing inside `make test`:
#   1. the seed corpora tests/fuzz/corpus/{nifti,dataset} hold a seed for every file of
#      tests/corpus/good and bad, and the datasets' dataset.json files;
#   2. every seed replays through $BUILD/fuzz/fuzz_{nifti,dataset} (ASan + UBSan) without a finding
#      (regress_* seeds are inputs that once crashed a reader);
#   3. a short libFuzzer run per target (SRM_FUZZ_SECONDS, default 20 s) from those seeds finds nothing.
# The long campaign (>= 10 million executions per target) is `make fuzz`. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
source tests/tally.sh
source tests/fuzz/brief.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/srm-fuzz-nifti-XXXXXX")
# The targets write a file per input: tmpfs keeps that cheap (20x faster than an overlay disk).
scratch=$(mktemp -d /dev/shm/srm-fuzz-nifti-XXXXXX 2>/dev/null || mktemp -d "$work/scratch-XXXXXX")
trap 'rm -rf "$work" "$scratch"' EXIT

# 1. the seeds cover the reader corpus (a file added there without a seed is a gap in fuzzing)
gaps=0
for f in tests/corpus/good/*.nii* tests/corpus/bad/*.nii*; do
  kind=$(basename "$(dirname "$f")"); name=$(basename "$f")
  stem=${kind}_${name%.nii*}; case $name in *.nii.gz) stem=${stem}_gz ;; esac
  [ -s "tests/fuzz/corpus/nifti/$stem" ] || { bad "no seed tests/fuzz/corpus/nifti/$stem for $f"; gaps=1; }
done
[ "$gaps" -eq 0 ] && ok "a seed for every file of tests/corpus/good and bad"
n=$(ls tests/fuzz/corpus/dataset | wc -l)
[ "$n" -ge 10 ] && ok "tests/fuzz/corpus/dataset holds $n seeds" || bad "tests/fuzz/corpus/dataset holds $n seeds (expected >= 10)"

for t in nifti dataset; do
  fuzzer=$BUILD/fuzz/fuzz_$t seeds=tests/fuzz/corpus/$t
  if [ ! -x "$fuzzer" ]; then bad "$fuzzer not built (make test builds it with clang)"; continue; fi
  mkdir -p "$work/$t" "$scratch/$t"
  # 2. replay: every seed once, then 3. the brief fuzz (TMPDIR: the target's scratch files go to
  # our tmpfs folder)
  TMPDIR=$scratch/$t fuzz_replay "fuzz_$t" "$fuzzer" "$seeds" "$work/$t" || continue
  TMPDIR=$scratch/$t fuzz_brief "fuzz_$t" "$fuzzer" "$seeds" "$work/$t"
done
finish
