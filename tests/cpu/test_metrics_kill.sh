#!/usr/bin/env bash
# test_metrics_kill.sh -- no metrics line is lost when the exporter dies (system.md "Reliability":
# any stage can be killed at any moment and the run goes on without losing work). The trainer
# sends a line every step and the evaluator one per validation; three times during training the
# exporter is frozen (SIGSTOP, so lines pile up in flight to it) and then killed (SIGKILL) and
# train.sh restarts it; once it is frozen past the resend time and thawed, so it receives lines
# and their copies. The trainer and evaluator keep what the exporter has not acknowledged and
# send it again (--exporter-resend 1), and the exporter files each message id once:
#   - copies of filed lines are recognised ("came again"),
#   - metrics.jsonl has exactly one trainer line for every step 1..STEPS,
#   - exactly one evaluator line for every validation the evaluator finished, the final one too,
#   - no message id twice, and the final predictions are written,
#   - train.sh exits 0 and no process is left.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup metricskill 3 1 17 exporter loader augmenter trainer evaluator

RUN=$TMP/run STEPS=60

bash pipelines/train.sh "$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps $STEPS --ckpt-every 100 \
    --val-every 10 --augmenters 1 --trainer-args "--log-every 1 --exporter-resend 1" \
    --evaluator-args "--exporter-resend 1" --final-timeout 120 >"$TMP/train.out" 2>&1 &
PIPE=$!
ex_pid() { pgrep -f "srm-exporter .*--run-dir $RUN( |$)" | head -n 1; }
kills=0 thawed=0
for at in 12 22 32 45; do
    pipeline_wait "$RUN/logs/trainer.log" "^step $at/" $PIPE || break
    pid=$(ex_pid)
    [[ -n $pid ]] || continue
    if ((at == 22)); then       # frozen past the resend time, then thawed: it gets originals and copies
        kill -STOP "$pid"; sleep 2.5; kill -CONT "$pid" && thawed=1
    else
        kill -STOP "$pid"; sleep 1.5; kill -KILL "$pid" && kills=$((kills + 1))
    fi
done
wait $PIPE
rc=$?
check "((kills == 3 && thawed == 1))" "the exporter was frozen and killed 3 times and frozen and thawed once ($kills, $thawed)"
check "grep -q 'came again: already recorded' '$RUN/logs/exporter.log'" "copies of filed lines reached the exporter and were not filed again"
check "[[ $rc == 0 ]]" "train.sh exits 0 (rc $rc)"
report=$(/usr/bin/python3 - "$RUN/metrics.jsonl" "$STEPS" "$RUN/logs/evaluator.log" <<'PY'
import collections, json, re, sys
path, steps, evlog = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [json.loads(l) for l in open(path)]
tr = collections.Counter(o["step"] for o in lines if o.get("source") == "trainer")
ev = collections.Counter(o["step"] for o in lines if o.get("source") == "evaluator")
ids = collections.Counter(o.get("id") for o in lines)
done = [int(s) for s in re.findall(r"job step (\d+) done", open(evlog).read())]
bad_tr = [s for s in range(1, steps + 1) if tr[s] != 1]
bad_ev = [s for s in done if ev[s] != 1]
print("trainer_missing_or_twice=%s evaluator_missing_or_twice=%s validations=%d duplicate_ids=%d no_id=%d final=%d"
      % (bad_tr[:10], bad_ev, len(done), sum(1 for i, n in ids.items() if i and n > 1), ids[None], int(steps in ev)))
PY
)
echo "metrics.jsonl: $report"
check "[[ '$report' == *'trainer_missing_or_twice=[] '* ]]" "one trainer line for every step 1..$STEPS"
check "[[ '$report' == *'evaluator_missing_or_twice=[] '* && '$report' != *'validations=0 '* ]]" "one evaluator line for every finished validation"
check "[[ '$report' == *'final=1'* ]]" "the final validation's line is there"
check "[[ '$report' == *'duplicate_ids=0 no_id=0 '* ]]" "every line has an id, none twice"
check "ls '$RUN'/predictions/*.nii.gz >/dev/null 2>&1" "the validation case's prediction is written"
check "[[ \$(pgrep -f '$RUN/' | wc -l) == 0 ]]" "no process left"
if ((failed)); then tail -n 5 "$TMP/train.out"; grep -hE "sent again|dropped|unreachable|not ack" "$RUN"/logs/{trainer,evaluator}.log | tail -n 8; fi
check_summary
