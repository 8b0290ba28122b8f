#!/usr/bin/env bash
# test_trainer_resume.sh -- a killed trainer loses nothing (system.md "Reliability"): train.sh
# runs the tiny model with a checkpoint every 3 steps; once the exporter has acknowledged step 6
# we kill -9 the trainer. train.sh restarts it with --resume, and the test checks that
#   - it resumed from a checkpoint (the exporter's latest or a newer spooled one) at or after the
#     acknowledged step 6, with the Adam step equal to the resumed step,
#   - the first step after the resume is R+1 and its lr equals lr_cosine(base, R, total),
#   - the run reaches its last step, whose checkpoint is the exporter's latest,
#   - no process is left behind.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup resume 3 1 5 exporter loader augmenter trainer

STEPS=12 LR=1e-3 RUN=$TMP/run
bash pipelines/train.sh "$TMP/data" "$RUN" --preset tiny --patch 32 --batch 1 --steps $STEPS --lr $LR \
    --ckpt-every 3 --augmenters 1 --no-evaluator --trainer-args "--log-every 1" >"$TMP/train.out" 2>&1 &
PIPE=$!

# wait for the ack of step 6, then kill -9 the trainer
killed=""
for ((i = 0; i < 600; i++)); do
    if grep -q "checkpoint step 6 acknowledged" "$RUN/logs/trainer.log" 2>/dev/null; then
        pid=$(pgrep -f "srm-trainer .*$RUN/sock/patches" | head -n 1)
        if [[ -n $pid ]]; then
            reached=$(grep -c '^step ' "$RUN/logs/trainer.log")
            kill -KILL "$pid" && killed=$pid
        fi
        break
    fi
    kill -0 $PIPE 2>/dev/null || break
    sleep 0.5
done
wait $PIPE
rc=$?
echo "killed trainer pid ${killed:-none} after ${reached:-?} steps; train.sh exited $rc"

/usr/bin/python3 - "$RUN" "$rc" "$STEPS" "$LR" "${killed:-}" "${reached:-0}" <<'EOF'
import math, os, re, subprocess, sys
run, rc, steps, base, killed, reached = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
passed = failed = 0

def check(ok, what):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print("ok  " if ok else "FAIL", what)

def lr_cosine(step, total):     # common/model.h, in float like the trainer
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / total))

check(killed != "", "the trainer was killed with SIGKILL after step 6 was acknowledged")
check(rc == 0, "train.sh finished (exit 0) after restarting the trainer")
log = open(os.path.join(run, "logs", "trainer.log")).read().splitlines()
res = [l for l in log if "resuming from step" in l]
check(len(res) == 1, "the restarted trainer resumed exactly once: %s" % res)
if res:
    print("log:", res[0])
    m = re.search(r"resuming from step (\d+) \((\w+).*adam step (\d+)", res[0])
    R, src, adam = int(m.group(1)), m.group(2), int(m.group(3))
    check(R >= 6 and R % 3 == 0 and R <= max(reached, 6) + 3, "resumed at step %d (acked 6, %d steps done when killed)" % (R, reached))
    check(adam == R, "Adam step %d == resumed step" % adam)
    after = log[log.index(res[0]):]
    prog = [l for l in after if l.startswith("step ")]
    first = re.match(r"step (\d+)/(\d+) loss (\S+) lr (\S+)", prog[0]) if prog else None
    check(first and int(first.group(1)) == R + 1, "first step after the resume is %d: %s" % (R + 1, prog[:1]))
    if first:
        lr, want = float(first.group(4)), lr_cosine(R, steps)
        check(abs(lr - want) <= 1e-3 * want, "lr %.4g == lr_cosine(%g, %d, %d) = %.4g" % (lr, base, R, steps, want))
    last = re.match(r"step (\d+)/", prog[-1]) if prog else None
    check(last and int(last.group(1)) == steps, "the run reached step %d" % steps)
    losses = [float(re.match(r"step \d+/\d+ loss (\S+)", l).group(1)) for l in log if l.startswith("step ")]
    check(all(math.isfinite(x) for x in losses), "losses finite across the restart")
latest = os.path.join(run, "checkpoints", "latest.ckpt")
check(os.path.basename(os.path.realpath(latest)) == "step-%08d.ckpt" % steps, "latest.ckpt -> step %d" % steps)
r = subprocess.run(["pgrep", "-f", run + "/"], capture_output=True, text=True)
check(r.returncode == 1, "no process left (%s)" % r.stdout.split())
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
EOF
