#!/usr/bin/env bash
# test_eval_kill.sh -- the final validation survives the evaluator's death (system.md
# "Reliability"). The final eval job lives only in the evaluator's memory; here the evaluator is
# frozen (SIGSTOP) before the trainer sends it and killed (SIGKILL) once it was sent, so the job
# is lost with it. train.sh restarts the evaluator and the trainer, which offers the job again
# while no validation came (--final-eval-resend 2), must get the final validation after all:
#   - the trainer logs the final validation's mean Dice (not "no validation metrics"),
#   - metrics.jsonl has an evaluator line for the last step, and the validation case's
#     prediction is written,
#   - train.sh exits 0 and no process is left.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup evalkill 3 1 13 exporter loader augmenter trainer evaluator

RUN=$TMP/run STEPS=30

bash pipelines/train.sh "$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps $STEPS --ckpt-every 100 \
    --augmenters 1 --trainer-args "--log-every 1 --final-eval-resend 2 --final-eval-timeout 120" \
    --final-timeout 120 >"$TMP/train.out" 2>&1 &
PIPE=$!
ev_pid() { pgrep -f "srm-evaluator .*$RUN/sock/" | head -n 1; }
stopped="" killed=""
if pipeline_wait "$RUN/logs/trainer.log" "^step 2[0-9]/" $PIPE; then
    stopped=$(ev_pid)
    [[ -n $stopped ]] && kill -STOP "$stopped"
fi
if [[ -n $stopped ]] && pipeline_wait "$RUN/logs/trainer.log" "final eval job step $STEPS sent" $PIPE; then
    sleep 0.5
    kill -KILL "$stopped" && killed=$stopped
fi
wait $PIPE
rc=$?
check "[[ -n '$killed' ]]" "the evaluator (pid ${killed:-?}) was frozen before the final job and killed after it was sent"
check "[[ $rc == 0 ]]" "train.sh exits 0 (rc $rc)"
check "grep -q 'final validation mean Dice' '$RUN/logs/trainer.log'" "the trainer got the final validation: $(grep -E 'final validation|no validation metrics' "$RUN/logs/trainer.log" | tail -n 1)"
check "grep -q 'the final eval job is offered again' '$RUN/logs/trainer.log'" "the final job was offered again"
check "grep '\"source\": *\"evaluator\"' '$RUN/metrics.jsonl' | grep -q '\"step\": *$STEPS[,}]'" "metrics.jsonl has the validation of step $STEPS"
check "ls '$RUN'/predictions/*.nii.gz >/dev/null 2>&1" "the validation case's prediction is written"
check "[[ \$(pgrep -f '$RUN/' | wc -l) == 0 ]]" "no process left"
if ((failed)); then tail -n 5 "$TMP/train.out"; tail -n 6 "$RUN"/logs/{trainer,evaluator}.log; fi
check_summary
