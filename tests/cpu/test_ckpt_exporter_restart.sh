#!/usr/bin/env bash
# test_ckpt_exporter_restart.sh -- a checkpoint in flight to an exporter that is killed is sent
# again as soon as the restarted exporter answers, not after --ack-timeout (here 300 s, longer
# than this test may take): the trainer sees the new exporter acknowledge metrics lines sent after
# the checkpoint (trainer_ckpt.c). Twice during a run that checkpoints every step the exporter is
# frozen (a checkpoint and metrics lines wait in flight to it) and killed; train.sh restarts it.
#   - the trainer says why it sends again, and checkpoints after each kill are filed before the
#     run's end (they were stuck until the ack timeout before);
#   - train.sh exits 0 in time, latest is the last step, every sidecar verifies, no process left.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup ckptrestart 3 0 23 exporter loader augmenter trainer

RUN=$TMP/run STEPS=60
timeout 240 bash pipelines/train.sh "$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps $STEPS --ckpt-every 1 \
    --augmenters 1 --no-evaluator --trainer-args "--log-every 1 --ack-timeout 300 --exporter-resend 1" \
    --exporter-args "--keep 2" >"$TMP/train.out" 2>&1 &
PIPE=$!
ex_pid() { pgrep -f "srm-exporter .*--run-dir $RUN( |$)" | head -n 1; }
kills=0
for at in 10 30; do
    pipeline_wait "$RUN/logs/trainer.log" "^step $at/" $PIPE || break
    pid=$(ex_pid)
    [[ -n $pid ]] || continue
    kill -STOP "$pid"; sleep 1.5; kill -KILL "$pid" && kills=$((kills + 1))
done
wait $PIPE
rc=$?
check "((kills == 2))" "the exporter was frozen and killed twice ($kills)"
check "[[ $rc == 0 ]]" "train.sh exits 0 in time (rc $rc; 124: the checkpoint waited for the ack timeout)"
check "grep -q 'answered later messages but not this one' '$RUN/logs/trainer.log'" "the trainer sent the lost checkpoint again once the new exporter answered"
# checkpoints filed after each kill and before the final one
filed=$(grep -oE 'checkpoint step [0-9]+ \(periodic' "$RUN"/logs/exporter*.log | grep -oE '[0-9]+' | sort -n | uniq)
after() { for s in $filed; do ((s > $1 && s < STEPS)) && return 0; done; return 1; }
check "after 12 && after 32" "periodic checkpoints filed after both kills, before the end"
check "[[ \$(readlink '$RUN/checkpoints/latest.ckpt') == step-000000$STEPS.ckpt ]]" "latest is step $STEPS"
check "(cd '$RUN/checkpoints' && sha256sum --quiet -c step-*.sha256)" "every sidecar verifies"
check "[[ \$(pgrep -f '$RUN/' | wc -l) == 0 ]]" "no process left"
if ((failed)); then tail -n 5 "$TMP/train.out"; grep -hE "sending again|acknowledged|sent to" "$RUN/logs/trainer.log" | tail -n 12; fi
check_summary
