#!/usr/bin/env bash
# test_augmenter_kill.sh -- augmenters can leave and join while streaming.
# pipelines/stream-patches.sh runs a loader and 2 augmenters (seed 1) into a patch_sink that
# logs every batch; one augmenter is killed with SIGKILL: the sink must keep receiving batches
# afterwards; then a new augmenter (seed 7) connects to the same loader and sink, and batches
# carrying its seed must arrive. The script must survive the kill and stop cleanly at the end.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}; BIN=${BIN:-bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
export BIN
DATA=$ROOT/../shared/data/brats2013-6
[ -d "$DATA" ] || DATA=/work/shared/data/brats2013-6
SINK=$BUILD/tools/patch_sink
[ -x "$SINK" ] || { echo "missing $SINK (make tools)"; echo "0 passed, 1 failed"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-kill.XXXXXX")
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
cleanup() {
  [ -n "${NEW:-}" ] && kill -TERM "$NEW" 2>/dev/null && wait "$NEW" 2>/dev/null
  [ -n "${SP:-}" ] && kill -TERM "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
  [ -n "${SK:-}" ] && kill -TERM "$SK" 2>/dev/null && wait "$SK" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
now() { date +%s.%N; }
after() { awk -v t="$1" -v s="$2" '$1 == "batch" && $2 > t && (s == "" || $3 == s)' "$T/sink.out" | wc -l; }

mkdir -p "$T/run"
"$SINK" "ipc://$T/patches" --log-batches 1 > "$T/sink.out" 2> "$T/sink.err" & SK=$!
SRM_RUN_DIR=$T/run bash pipelines/stream-patches.sh "$DATA" "ipc://$T/patches" 2 --patch 48 \
  --batch-size 2 --seed 1 --cache "$T/cache" --stats-every 0 2> "$T/stream.err" & SP=$!
for _ in $(seq 300); do [ "$(after 0 1)" -ge 6 ] && break; sleep 0.1; done
check '[ "$(after 0 1)" -ge 6 ]' "no batches before the kill"
VICTIM=$(pgrep -P "$SP" -x srm-augmenter | head -n 1)
check '[ -n "$VICTIM" ]' "no augmenter to kill"
kill -KILL "$VICTIM"
t_kill=$(now)
sleep 4
n_after_kill=$(after "$t_kill" 1)
check '[ "$n_after_kill" -ge 4 ]' "only $n_after_kill batches in the 4 s after kill -9"
check 'kill -0 "$SP"' "stream-patches.sh died with the augmenter"
check '! kill -0 "$VICTIM" 2>/dev/null' "the killed augmenter is still there"

t_join=$(now)
OMP_NUM_THREADS=1 "$BIN/srm-augmenter" --volumes "ipc://$T/run/volumes" --patches "ipc://$T/patches" \
  --patch 48 --batch-size 2 --seed 7 --stats-every 0 2> "$T/new.err" & NEW=$!
for _ in $(seq 100); do [ "$(after "$t_join" 7)" -ge 3 ] && break; sleep 0.1; done
n_new=$(after "$t_join" 7); n_old=$(after "$t_join" 1)
echo "batches: $n_after_kill in 4 s after kill -9; after the join: $n_new from the new augmenter, $n_old from the survivor"
check '[ "$n_new" -ge 3 ]' "the new augmenter's batches did not arrive ($n_new)"
kill -TERM "$NEW"; wait "$NEW"; rc_new=$?; NEW=
check '[ "$rc_new" -eq 0 ]' "the new augmenter did not stop cleanly on SIGTERM ($rc_new)"
kill -TERM "$SP"; wait "$SP"; SP=
left=$(pgrep -f "$T" | grep -v "^$SK\$" | wc -l)
check '[ "$left" -eq 0 ]' "$left processes left after stopping the pipeline"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
