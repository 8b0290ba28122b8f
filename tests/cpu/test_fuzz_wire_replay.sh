#!/usr/bin/env bash
# test_fuzz_wire_replay.sh -- the wire decoder's fuzzing inside `make test`:
#   1. the seed corpus tests/fuzz/corpus/wire (one valid message of every type + edge cases) is
#      complete and replays through $BUILD/fuzz/fuzz_wire (ASan + UBSan) without a finding;
#   2. a short libFuzzer run (SRM_FUZZ_SECONDS, default 20 s) from those seeds finds nothing.
# The long campaign (>= 10 million executions) is `make fuzz`. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
source tests/tally.sh
source tests/fuzz/brief.sh
fuzzer=$BUILD/fuzz/fuzz_wire
seeds=tests/fuzz/corpus/wire
[ -x "$fuzzer" ] || { bad "$fuzzer not built (make test builds it with clang; see the Makefile's fuzzing section)"; finish; }
missing=0
for t in volume_f32 volume_f16 patch_batch_f32 patch_batch_bf16 checkpoint checkpoint_ack metrics \
         heartbeat ready stop request error; do
  [ -s "$seeds/$t" ] || { bad "seed $seeds/$t missing"; missing=1; }
done
[ "$missing" -eq 0 ] && ok "a seed of every message type in $seeds"

work=$(mktemp -d "${TMPDIR:-/tmp}/srm-fuzz-wire-XXXXXX")
trap 'rm -rf "$work"' EXIT
fuzz_replay fuzz_wire "$fuzzer" "$seeds" "$work"
fuzz_brief fuzz_wire "$fuzzer" "$seeds" "$work"
finish
