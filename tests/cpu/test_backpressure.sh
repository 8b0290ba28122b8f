#!/usr/bin/env bash
# test_backpressure.sh -- memory stays bounded when the consumer stops reading.
#   tests/cpu/test_backpressure.sh [SECONDS]    (default 24; BENCHMARKS.md records a 300 s run)
# A patch_sink reads 3 batches and then stops reading; pipelines/stream-patches.sh runs one
# loader and one augmenter (96^3 patches) on ../shared/data/brats2013-6. After a settling
# period, the loader's and the augmenter's VmRSS (/proc/PID/status) are sampled every second:
# the peak of the second half must not exceed the peak of the first half by more than 10 %
# + 16 MiB, both must stay under absolute bounds, and the loader must stop advancing epochs
# (it waits on the full socket instead of queueing).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; export BIN
DUR=${1:-24}
DATA=$ROOT/../shared/data/brats2013-6
[ -d "$DATA" ] || DATA=/work/shared/data/brats2013-6
SINK=$BUILD/tools/patch_sink
[ -x "$SINK" ] || { echo "missing $SINK (make tools)"; echo "0 passed, 1 failed"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-bp.XXXXXX")
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
cleanup() {
  [ -n "${SP:-}" ] && kill -TERM "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
  [ -n "${SK:-}" ] && kill -TERM "$SK" 2>/dev/null && wait "$SK" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

"$SINK" "ipc://$T/patches" --stall-after 3 > "$T/sink.out" 2> "$T/sink.err" & SK=$!
bash pipelines/stream-patches.sh "$DATA" "ipc://$T/patches" 1 --patch 96 --batch-size 2 \
  --cache "$T/cache" --stats-every 0 2> "$T/stream.err" & SP=$!

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# wait for both stages, then for the stall to settle (cache built, queues filled)
for _ in $(seq 100); do
  L=$(pgrep -P "$SP" -x srm-loader); A=$(pgrep -P "$SP" -x srm-augmenter)
  [ -n "$L" ] && [ -n "$A" ] && break
  sleep 0.1
done
check '[ -n "$L" ] && [ -n "$A" ]' "loader/augmenter did not start"
sleep 8
half=$((DUR / 2)); peak1_l=0 peak1_a=0 peak2_l=0 peak2_a=0
epochs_mid=0
for i in $(seq "$DUR"); do
  l=$(rss "$L"); a=$(rss "$A")
  if [ "$i" -le "$half" ]; then
    [ "$l" -gt "$peak1_l" ] && peak1_l=$l; [ "$a" -gt "$peak1_a" ] && peak1_a=$a
  else
    [ "$l" -gt "$peak2_l" ] && peak2_l=$l; [ "$a" -gt "$peak2_a" ] && peak2_a=$a
  fi
  [ "$i" -eq "$half" ] && epochs_mid=$(grep -c "epoch" "$T/stream.err")
  sleep 1
done
epochs_end=$(grep -c "epoch" "$T/stream.err")
echo "loader VmRSS peak ${peak1_l} -> ${peak2_l} kB, augmenter ${peak1_a} -> ${peak2_a} kB over ${DUR} s stalled;" \
     "loader epoch lines ${epochs_mid} -> ${epochs_end}"
check '[ "$peak2_l" -le $((peak1_l * 11 / 10 + 16384)) ]' "loader memory grew: $peak1_l -> $peak2_l kB"
check '[ "$peak2_a" -le $((peak1_a * 11 / 10 + 16384)) ]' "augmenter memory grew: $peak1_a -> $peak2_a kB"
check '[ "$peak2_l" -lt 400000 ] && [ "$peak2_a" -lt 600000 ]' "absolute bound exceeded: loader $peak2_l kB, augmenter $peak2_a kB"
check '[ "$epochs_end" -eq "$epochs_mid" ]' "the loader kept going while nobody read ($epochs_mid -> $epochs_end epoch lines)"
check 'kill -0 "$L" && kill -0 "$A"' "a stage died while stalled"
check '[ "$epochs_mid" -ge 1 ]' "the loader never finished an epoch (nothing streamed before the stall)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
