#!/usr/bin/env bash
# test_script_kill.sh -- kill -9 of pipelines/train.sh itself (system.md "Reliability"). Its
# stages run in their own sessions, so nothing passes the kill on; they must stop by themselves
# (lib.sh's SRM_PARENT_PID: the parent-death signal, common/stage.c) and a --resume must then
# continue the run alone. Checks:
#   - after kill -9 of train.sh at step >= 10, no process of the run is left (within 60 s), and the
#     trainer's final checkpoint of the stop was filed (the exporter serves on for it),
#   - a second train.sh on a run folder whose pipeline is alive refuses (SRM_RUN_WAIT_S=2),
#     naming the live exporter, and leaves the live run untouched,
#   - `train.sh ... --resume` resumes at or after the acknowledged step 10 (its data stream seeded
#     anew) and finishes the run:
#     latest.ckpt is the last step and its sidecar matches.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup scriptkill 3 1 7 exporter loader augmenter trainer

RUN=$TMP/run STEPS=40
args=("$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps $STEPS --ckpt-every 5 --augmenters 1
      --no-evaluator --trainer-args "--log-every 1 --final-ack-timeout 5")
left() { pgrep -f "$RUN/" | wc -l; }

bash pipelines/train.sh "${args[@]}" >"$TMP/train1.out" 2>&1 &
PIPE=$!
pipeline_wait "$RUN/logs/trainer.log" "checkpoint step 10 acknowledged" $PIPE
check "grep -q 'checkpoint step 10 acknowledged' '$RUN/logs/trainer.log'" "the first run reached an acknowledged step 10"

# a second pipeline on the live run folder refuses and touches nothing
before=$(ls "$RUN/checkpoints" | sort | tr '\n' ' ')
SRM_RUN_WAIT_S=2 bash pipelines/train.sh "${args[@]}" >"$TMP/train2.out" 2>&1
rc2=$?
check "[[ $rc2 != 0 ]] && grep -q 'is in use by a running pipeline (srm-exporter pid' '$TMP/train2.out'" \
      "a second train.sh on the live run refuses (rc $rc2): $(tail -n 1 "$TMP/train2.out")"
check "kill -0 $PIPE 2>/dev/null" "the live run goes on"

# nothing reaches the exporter for 11 s before the kill (the trainer held with SIGSTOP), so its
# wait for the last messages must count from the script's death, not from the last message
tpid=$(pgrep -f "srm-trainer .*$RUN/" | head -n 1)
kill -STOP $tpid
sleep 11
kill -KILL $PIPE
wait $PIPE 2>/dev/null
sleep 1
kill -CONT $tpid
for ((i = 0; i < 300 && $(left) > 0; i++)); do sleep 0.2; done
check "[[ $(left) == 0 ]]" "no stage left 60 s after kill -9 of train.sh ($(pgrep -af "$RUN/" | cut -c1-80 | tr '\n' ';'))"
# every stage got the stop at once; the exporter, told the script is gone, served on until the
# trainer's final checkpoint was filed (it once stopped at once: that checkpoint was never
# acknowledged, and a validation line in flight was lost)
stop=$(grep -o 'stopping on signal [0-9]* at step [0-9]*' "$RUN/logs/trainer.log" | tail -n 1 | grep -o '[0-9]*$')
check "grep -q 'the pipeline script is gone: taking the other stages' '$RUN/logs/exporter.log' &&
       grep -q 'checkpoint step ${stop:-x} acknowledged' '$RUN/logs/trainer.log' && [[ -s '$RUN/checkpoints/step-$(printf %08d "${stop:-0}").ckpt' ]]" \
      "the trainer's final checkpoint (step ${stop:-?}) was filed after the kill"
acked=$(grep -o 'checkpoint step [0-9]* acknowledged' "$RUN/logs/trainer.log" | tail -n 1 | grep -o '[0-9]*')

timeout 400 bash pipelines/train.sh "${args[@]}" --resume >"$TMP/train3.out" 2>&1
rc3=$?
check "[[ $rc3 == 0 ]]" "train.sh --resume finishes (rc $rc3)"
res=$(grep -o 'resuming from step [0-9]*' "$RUN/logs/trainer.log" | tail -n 1 | grep -o '[0-9]*$')
check "[[ -n '$res' ]] && ((res >= ${acked:-10}))" "resumed from step ${res:-?} (acknowledged ${acked:-?} before the kill)"
# seed 0: a resumed run's data stream is seeded with the step of the exporter's latest checkpoint
# (the first run's stream would repeat else); the trainer may resume from a newer spooled one
dseed=$(grep -o 'the data stream is seeded [0-9]*' "$TMP/train3.out" | grep -o '[0-9]*$')
check "[[ -n '$dseed' && -n '$res' ]] && ((dseed > 0 && dseed <= res))" "the resumed run's data stream is seeded ${dseed:-?} (resumed from ${res:-?})"
ck=$RUN/checkpoints
check "[[ \$(readlink '$ck/latest.ckpt') == step-$(printf %08d $STEPS).ckpt ]]" "latest.ckpt is the last step $STEPS"
check "(cd '$ck' && sha256sum -c --quiet \$(readlink latest.ckpt).sha256)" "its sidecar matches"
check "[[ $(left) == 0 ]]" "no process left after the resumed run"
if ((failed)); then tail -n 5 "$TMP"/train*.out; tail -n 8 "$RUN"/logs/*.log; fi
check_summary
