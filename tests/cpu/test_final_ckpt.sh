#!/usr/bin/env bash
# test_final_ckpt.sh -- the final checkpoint is never lost behind a periodic one of the same step.
# A trainer resumed from a checkpoint whose schedule is 1000 steps, with --ckpt-every 1 and a
# 3-second --max-minutes budget, saves a periodic checkpoint of its last step (total 1000) and
# then the final one of that same step (total = the step: "a resume has nothing left to do"). The
# periodic one's ack must not retire the final one (it once did: the ack matched on the step
# alone), and the exporter must replace the filed step with it. The test checks that
#   - the exporter's latest.ckpt is that step with total == step (tests/tools/ckpt_verify),
#   - its .sha256 sidecar matches, and the trainer's spool is empty (everything acknowledged),
#   - the exporter logged the replacement.
set -u
cd "$(dirname "$0")/../.." || exit 1
BIN=${BIN:-bin} BUILD=${BUILD:-build}
for x in "$BIN/srm-exporter" "$BIN/srm-trainer" "$BUILD/tools/ckpt_make" "$BUILD/tools/ckpt_verify" \
         "$BUILD/tools/patch_blast"; do
    [[ -x $x ]] || { echo "FAIL: $x not built"; echo "0 passed, 1 failed"; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/srm-final-XXXXXX")
trap 'kill $EXP $BLAST 2>/dev/null; rm -rf "$T"' EXIT
source tests/pipeline_test.sh                    # check, check_summary

"$BUILD/tools/ckpt_make" "$T/start.ckpt" --step 5 --classes 4 >/dev/null
"$BIN/srm-exporter" --run-dir "$T/run" --bind "ipc://$T/exporter" >"$T/exporter.log" 2>&1 &
EXP=$!
"$BUILD/tools/patch_blast" "ipc://$T/patches" --seconds 60 --patch 32 --channels 1 --batch 1 >/dev/null 2>&1 &
BLAST=$!
timeout 120 "$BIN/srm-trainer" --model M --width 8 --classes 4 --in-channels 1 --patch 32,32,32 --batch 1 \
    --device cpu --resume-file "$T/start.ckpt" --steps 2000 --max-minutes 0.05 --ckpt-every 1 \
    --patches "ipc://$T/patches" --exporter "ipc://$T/exporter" --spool "$T/spool" >"$T/trainer.log" 2>&1
rc=$?
kill $BLAST 2>/dev/null
kill -TERM $EXP; wait $EXP 2>/dev/null

check "[[ $rc == 0 ]]" "the trainer finished (exit $rc)"
last=$(grep -o 'budget ran out at step [0-9]*' "$T/trainer.log" | grep -o '[0-9]*$')
check "[[ -n '$last' ]] && ((last > 5))" "the budget ended the run at step ${last:-?}"
ck=$T/run/checkpoints
v=$("$BUILD/tools/ckpt_verify" "$ck/latest.ckpt" 2>&1)
check "[[ '$v' == *' step $last total $last '* ]]" "latest.ckpt is the final checkpoint of step $last (total $last): $v"
name=$(basename "$(readlink -f "$ck/latest.ckpt")")
check "(cd '$ck' && sha256sum -c --quiet '$name.sha256')" "its sidecar matches"
check "[[ -z \$(ls '$T/spool' 2>/dev/null) ]]" "the trainer's spool holds no checkpoint (everything acknowledged)"
check "grep -q 'replaced by a new checkpoint of step $last' '$T/exporter.log'" "the exporter replaced the periodic checkpoint of step $last"
if ((failed)); then tail -n 5 "$T/trainer.log" "$T/exporter.log"; fi
check_summary
