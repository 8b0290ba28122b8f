#!/usr/bin/env bash
# test_run_id.sh -- results of another run are kept out of a run (a joined evaluator outlives its
# run, and the next run on the same port would otherwise take its validation as its own):
#   - train.sh gives the run an id (RUN/run.id, kept by --resume) and passes it to the trainer,
#     whose eval jobs carry it, and to the exporter;
#   - a stale evaluator's metrics (another run's id, a step this run never reaches) sent to the
#     trainer's metrics socket are ignored and logged, and the exporter refuses them for good
#     (ack ok=false, retry=false): metrics.jsonl never holds them; the run's own validations do.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup runid 3 1 7 exporter loader augmenter trainer evaluator

RUN=$TMP/run
ARGS=(--preset tiny --patch 32 --batch 1 --ckpt-every 10 --val-every 10 --augmenters 1 --device cpu --window 32,32,32)
bash pipelines/train.sh "$TMP/data" "$RUN" "${ARGS[@]}" --steps 30 >"$TMP/run.out" 2>&1 &
tpid=$!
/usr/bin/python3 - "$RUN" >"$TMP/stale.out" 2>&1 <<'PY'
import os, sys, time
import msgpack, zmq
run = sys.argv[1]
deadline = time.time() + 120
while time.time() < deadline and not all(os.path.exists(os.path.join(run, "sock", s)) for s in ("metrics", "exporter")):
    time.sleep(0.1)
time.sleep(1.0)
h = dict(type="metrics", version=1, step=999, wall_time=time.time(), run="stale.0", source="evaluator",
         values={"mean_dice": 0.99}, arrays=[])
ctx = zmq.Context()
push = ctx.socket(zmq.PUSH); push.setsockopt(zmq.LINGER, 2000); push.connect("ipc://" + os.path.join(run, "sock", "metrics"))
push.send_multipart([msgpack.packb(h, use_bin_type=True)])
d = ctx.socket(zmq.DEALER); d.setsockopt(zmq.LINGER, 0); d.connect("ipc://" + os.path.join(run, "sock", "exporter"))
d.send_multipart([msgpack.packb(dict(h, id="stale.evaluator.1"), use_bin_type=True)])
if d.poll(30000):
    a = msgpack.unpackb(d.recv_multipart()[0], raw=False)
    print("exporter:", a.get("type"), a.get("ok"), a.get("retry"), a.get("error"))
push.close(); d.close(); ctx.term()
PY
wait "$tpid"
rc=$?
check "[[ $rc == 0 ]]" "train.sh exits 0 (exit $rc)"
id=$(cat "$RUN/run.id" 2>/dev/null)
check "[[ $id =~ ^[0-9a-f]{16}$ ]]" "RUN/run.id holds the run's id ($id)"
check "grep -q 'exporter: ack False False .*stale.0.*$id' '$TMP/stale.out'" \
    "the exporter refuses the stale metrics for good, naming both runs ($(tail -n 1 "$TMP/stale.out"))"
check "grep -q 'validation metrics ignored: metrics of run stale.0, not of this run ($id)' '$RUN/logs/trainer.log'" \
    "the trainer ignores the stale metrics and says so"
check "! grep -q '\"step\": *999' '$RUN/metrics.jsonl' && grep -q '\"mean_dice\"' '$RUN/metrics.jsonl'" \
    "metrics.jsonl holds the run's validations and not the stale line"
check "! grep -q 'final validation mean Dice 0.99' '$RUN/logs/trainer.log'" "the stale Dice is not the final validation"

bash pipelines/train.sh "$TMP/data" "$RUN" "${ARGS[@]}" --steps 30 --resume >"$TMP/resume.out" 2>&1
check "[[ \$(cat '$RUN/run.id') == '$id' ]]" "a resume keeps the run's id"
check_summary
