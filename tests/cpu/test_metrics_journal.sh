#!/usr/bin/env bash
# test_metrics_journal.sh -- metrics lines the exporter never acknowledged survive the trainer's
# death (system.md "Reliability": killing any process loses nothing). A trainer logs every step
# and checkpoints every 5; its exporter is frozen at step 2, so lines 3.. and checkpoint 5 wait
# unacknowledged; at step 7 both are killed -9. A new exporter and a trainer resumed from the
# spool's step 5 follow. The test checks that
#   - the resumed trainer sends the lines of steps <= 5 again from SPOOL/metrics.pending (its
#     log says so) and leaves out the later ones, which it trains and reports afresh,
#   - metrics.jsonl ends with exactly one trainer line for every step 1..12, no id twice,
#   - an unreadable line in the journal is skipped with a warning naming the file and the line,
#   - the trainer exits 0 and leaves no journal behind (everything acknowledged).
# Without the journal the lines of steps 3..5 were lost with the first trainer's memory.
set -u
cd "$(dirname "$0")/../.." || exit 1
BIN=${BIN:-bin} BUILD=${BUILD:-build}
for x in "$BIN/srm-exporter" "$BIN/srm-trainer" "$BUILD/tools/patch_blast"; do
    [[ -x $x ]] || { echo "FAIL: $x not built"; echo "0 passed, 1 failed"; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-journal-XXXXXX")
trap 'kill -9 $EXP $TR 2>/dev/null; kill $BLAST 2>/dev/null; rm -rf "$T"' EXIT
source tests/pipeline_test.sh                    # check, check_summary, pipeline_wait

exporter() { "$BIN/srm-exporter" --run-dir "$T/run" --bind "ipc://$T/exporter" >>"$T/exporter.log" 2>&1 & EXP=$!; }
TRAIN=(--model M --width 8 --classes 4 --in-channels 1 --patch 32,32,32 --batch 1 --device cpu --seed 3
       --steps 12 --ckpt-every 5 --log-every 1 --exporter-resend 1 --patches "ipc://$T/patches"
       --exporter "ipc://$T/exporter" --spool "$T/spool")
"$BUILD/tools/patch_blast" "ipc://$T/patches" --seconds 280 --patch 32 --channels 1 --batch 1 >/dev/null 2>&1 &
BLAST=$!
exporter
"$BIN/srm-trainer" "${TRAIN[@]}" >"$T/trainer1.log" 2>&1 &
TR=$!
pipeline_wait "$T/trainer1.log" '^step 2/' $TR && kill -STOP $EXP
pipeline_wait "$T/trainer1.log" '^step 7/' $TR
kill -9 $TR $EXP; wait $TR $EXP 2>/dev/null
check "grep -q '^step 7/' '$T/trainer1.log' && ! grep -q '^step 9/' '$T/trainer1.log' && [[ -s '$T/spool/metrics.pending' ]]" \
    "the first trainer was killed at step 7 with lines waiting in the journal"
echo 'not a line of JSON' >>"$T/spool/metrics.pending"

exporter
timeout 300 "$BIN/srm-trainer" "${TRAIN[@]}" --resume >"$T/trainer2.log" 2>&1
rc=$?
kill -TERM $EXP; wait $EXP 2>/dev/null
check "[[ $rc == 0 ]]" "the resumed trainer finished (exit $rc)"
again=$(grep -o '[0-9]* metrics line(s) an earlier trainer left unacknowledged sent again; [0-9]* of steps after step 5' "$T/trainer2.log")
check "[[ -n '$again' ]]" "the resumed trainer sent the journal's lines up to step 5 again: ${again:-nothing said}"
check "grep -q 'metrics.pending: line [0-9]* unreadable' '$T/trainer2.log'" "the unreadable line is named and skipped"
report=$(/usr/bin/python3 - "$T/run/metrics.jsonl" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
tr = collections.Counter(o["step"] for o in lines if o.get("source") == "trainer")
ids = collections.Counter(o.get("id") for o in lines)
print("bad=%s duplicate_ids=%d" % ([s for s in range(1, 13) if tr[s] != 1], sum(1 for n in ids.values() if n > 1)))
PY
)
check "[[ '$report' == 'bad=[] duplicate_ids=0' ]]" "one trainer line for every step 1..12, no id twice ($report)"
check "[[ ! -e '$T/spool/metrics.pending' ]]" "no journal left once everything is acknowledged"
if ((failed)); then tail -n 5 "$T/trainer1.log" "$T/trainer2.log" "$T/exporter.log"; fi
check_summary
