#!/usr/bin/env bash
# test_faults.sh -- kill -9 every stage of a running pipelines/train.sh, at random moments (issue 8).
# For each seed in SRM_FAULT_SEEDS (default "1 2 3"): a tiny CPU run on synthetic phantoms (120 steps,
# a checkpoint every 6, validation every 12) while the loader, an augmenter, the evaluator, the
# exporter and the trainer are each killed once with SIGKILL, in a seeded random order, each at
# a random step of its 20-step slot; train.sh's supervisor restarts them (the trainer with
# --resume). Checks:
#   the run reaches its last step and train.sh exits 0; the restarted trainer resumed from a step
#   >= the newest acknowledged checkpoint at the kill, with its Adam step equal to that step and
#   the schedule (total steps, base lr) intact; every logged lr equals lr_cosine (the schedule
#   continues); every .ckpt/.safetensors matches its .sha256 sidecar and loads; every
#   acknowledged step is on disk (the exporter keeps all here); no process of the run is left.
# Prints "N passed, N failed" and the kill count.
set -u
source "$(dirname "$0")/../tally.sh"
kills=0
VERIFY=$BUILD/tools/ckpt_verify ST=$BUILD/tools/safetensors_tool
need_exec "$BIN"/srm-{exporter,loader,augmenter,trainer,evaluator} "$VERIFY" "$ST"

work=$(mktemp -d /tmp/srm-faults-XXXXXX)
trainpid=""
cleanup() {
  [ -n "$trainpid" ] && kill -TERM "$trainpid" 2>/dev/null && wait "$trainpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
/usr/bin/python3 "$ROOT/scripts/make_phantoms.py" --cases 6 --val 2 --test 0 --size 24 --seed 3 "$work/ph" >/dev/null \
  || { bad "make_phantoms failed"; echo "$pass passed, $fail failed"; exit 1; }

STEPS=120 CKPT=6
# the pid of one running stage of run $1: loader | augmenter | evaluator | exporter | trainer
stage_pid() {
  local run=$1 name=$2 pat
  case $name in
    exporter)  pat="srm-exporter .*$run/sock/" ;;
    loader)    pat="srm-loader .*$run/sock/" ;;
    augmenter) pat="srm-augmenter .*$run/sock/" ;;
    evaluator) pat="srm-evaluator .*$run/sock/" ;;
    trainer)   pat="srm-trainer .*$run/sock/" ;;
  esac
  if [ "${3:-}" = count ]; then pgrep -c -f -- "$pat"; else pgrep -f -- "$pat" | head -n 1; fi
}
latest_acked() { local l; l=$(readlink "$1/checkpoints/latest.ckpt" 2>/dev/null) || { echo -1; return; }; l=${l#step-}; echo $((10#${l%.ckpt})); }

for seed in ${SRM_FAULT_SEEDS:-1 2 3}; do
  run=$work/run-$seed
  RANDOM=$seed
  start=$(date +%s)
  bash "$ROOT/pipelines/train.sh" "$work/ph" "$run" --preset tiny --device cpu --patch 16 --batch 1 \
      --steps $STEPS --ckpt-every $CKPT --val-every 12 --augmenters 2 --samples-per-volume 2 --seed "$seed" \
      --restarts 10 --trainer-args "--log-every 1 --ack-timeout 20" --exporter-args "--keep 1000" \
      >"$work/train-$seed.out" 2>&1 &
  trainpid=$!
  victims=(loader augmenter evaluator exporter trainer)
  for ((i = ${#victims[@]} - 1; i > 0; i--)); do j=$((RANDOM % (i + 1))); t=${victims[$i]}; victims[$i]=${victims[$j]}; victims[$j]=$t; done
  acked_at_trainer_kill=-1
  # wait for the first step so every stage is up
  for ((w = 0; w < 120; w++)); do grep -q '^step ' "$run/logs/trainer.log" 2>/dev/null && break; sleep 0.5; done
  k=0
  for v in "${victims[@]}"; do
    # kill at a random step of its slot: slots of 20 steps from step 6, so kills land anywhere
    # in the run whatever the machine's speed
    target=$((6 + 20 * k + RANDOM % 18)); k=$((k + 1))
    while kill -0 "$trainpid" 2>/dev/null; do
      cur=$(grep '^step ' "$run/logs/trainer.log" 2>/dev/null | tail -n 1 | cut -d' ' -f2); cur=${cur%/*}
      [ "${cur:-0}" -ge "$target" ] && break; sleep 0.2
    done
    kill -0 "$trainpid" 2>/dev/null || { bad "seed $seed: the run ended before the $v kill"; break; }
    pid=$(stage_pid "$run" "$v")
    [ -n "$pid" ] || { bad "seed $seed: no running $v to kill"; continue; }
    [ "$v" = trainer ] && acked_at_trainer_kill=$(latest_acked "$run")
    step_now=$(grep '^step ' "$run/logs/trainer.log" | tail -n 1 | cut -d' ' -f2)
    before=$(stage_pid "$run" "$v" count)
    kill -9 "$pid" && kills=$((kills + 1))
    echo "seed $seed: kill -9 $v (pid $pid) at trainer step ${step_now:-?}, $(( $(date +%s) - start )) s"
    # the supervisor restarts it (checked each second): the killed pid gone, as many running again
    back=0
    for ((w = 0; w < 40; w++)); do
      if ! kill -0 "$pid" 2>/dev/null && [ "$(stage_pid "$run" "$v" count)" -ge "$before" ]; then back=1; break; fi
      kill -0 "$trainpid" 2>/dev/null || break
      sleep 0.5
    done
    [ $back -eq 1 ] && ok "seed $seed: $v restarted" || bad "seed $seed: $v not restarted"
  done
  # bounded wait for the end of the run
  for ((w = 0; w < 480; w++)); do kill -0 "$trainpid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$trainpid" 2>/dev/null; then bad "seed $seed: train.sh still running after 4 min"; kill -TERM "$trainpid"; fi
  wait "$trainpid"; rc=$?; trainpid=""
  echo "seed $seed: train.sh exit $rc after $(( $(date +%s) - start )) s"
  [ "$rc" -eq 0 ] && ok "seed $seed: train.sh exits 0" || { bad "seed $seed: train.sh exit $rc"; tail -n 15 "$work/train-$seed.out"; }
  tlog=$run/logs/trainer.log
  grep -q "^step $STEPS/$STEPS " "$tlog" && ok "seed $seed: reached step $STEPS" || bad "seed $seed: step $STEPS never logged"
  # resume: from at least the newest acknowledged checkpoint, optimizer and schedule intact
  res=$(grep 'resuming from step' "$tlog" | tail -n 1)
  if [ -z "$res" ]; then bad "seed $seed: the restarted trainer did not resume from a checkpoint"
  else
    rs=$(sed -E 's/.*resuming from step ([0-9]+).*/\1/' <<<"$res")
    as=$(sed -E 's/.*adam step ([0-9]+).*/\1/' <<<"$res")
    sched=$(sed -E 's/.*schedule ([0-9]+) steps from lr ([0-9.e+-]+).*/\1 \2/' <<<"$res")
    echo "seed $seed: $res (newest acknowledged at the kill: $acked_at_trainer_kill)"
    [ "$rs" -ge "$acked_at_trainer_kill" ] && ok "seed $seed: resumed at step $rs >= acknowledged $acked_at_trainer_kill" \
      || bad "seed $seed: resumed at step $rs < acknowledged $acked_at_trainer_kill"
    [ "$as" = "$rs" ] && ok "seed $seed: Adam step $as restored with the step" || bad "seed $seed: Adam step $as at step $rs"
    [ "$sched" = "$STEPS 0.0001" ] && ok "seed $seed: schedule intact ($sched)" || bad "seed $seed: schedule '$sched'"
  fi
  # the logged lr follows lr_cosine across the restarts, and the step sequence continues
  if /usr/bin/python3 - "$run/metrics.jsonl" "$STEPS" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("source") == "trainer" and "lr" in r]
total, bad = int(sys.argv[2]), 0
for r in rows:   # the lr logged at step s is the one step s used: lr_cosine(base, s - 1, total)
    want = 0.5 * 1e-4 * (1 + math.cos(math.pi * (r["step"] - 1) / total))
    if abs(r["lr"] - want) > 1e-3 * 1e-4:
        print(f"step {r['step']}: lr {r['lr']} != lr_cosine {want}"); bad += 1
steps = sorted({r["step"] for r in rows})
if not steps or steps[-1] != total: print(f"last logged step {steps[-1] if steps else None}"); bad += 1
if any(not math.isfinite(r.get("loss", 0)) for r in rows): print("non-finite loss"); bad += 1
print(f"{len(rows)} trainer metric rows, steps {steps[0] if steps else '-'}..{steps[-1] if steps else '-'}")
sys.exit(1 if bad else 0)
EOF
  then ok "seed $seed: lr follows lr_cosine over the whole run"; else bad "seed $seed: lr schedule broken"; fi
  # checkpoints: sidecars, loading, none missing
  ck=$run/checkpoints
  n=$(ls "$ck"/step-*.ckpt 2>/dev/null | wc -l)
  (cd "$ck" && sha256sum --quiet -c ./*.sha256) && ok "seed $seed: $n checkpoints + safetensors match their .sha256" \
    || bad "seed $seed: a checksum sidecar does not match"
  "$VERIFY" "$ck"/step-*.ckpt >"$work/verify.out" 2>&1 && ok "seed $seed: every .ckpt loads (ckpt_verify)" \
    || { bad "seed $seed: a checkpoint does not load"; cat "$work/verify.out"; }
  stbad=0
  for f in "$ck"/step-*.safetensors; do "$ST" read "$f" --width 8 --in-channels 1 --classes 2 >/dev/null 2>&1 \
    || "$ST" read "$f" --width 8 --in-channels 1 --classes 4 >/dev/null 2>&1 || { stbad=1; echo "does not load: $f"; }; done
  [ $stbad -eq 0 ] && ok "seed $seed: every .safetensors loads" || bad "seed $seed: a safetensors file does not load"
  missing=0
  for s in $(grep -o 'checkpoint step [0-9]* acknowledged' "$tlog" | awk '{print $3}' | sort -un); do
    [ -f "$(printf '%s/step-%08d.ckpt' "$ck" "$s")" ] || { missing=1; echo "acknowledged step $s is missing"; }
  done
  [ $missing -eq 0 ] && ok "seed $seed: every acknowledged checkpoint is on disk" || bad "seed $seed: acknowledged checkpoint missing"
  left=$(pgrep -f -- "$run/" | tr '\n' ' ')
  [ -z "$left" ] && ok "seed $seed: no process left behind" || { bad "seed $seed: left behind: $left"; ps -o pid,cmd -p ${left// /,} | head; }
  if [ "$fail" -gt 0 ]; then for f in trainer exporter; do echo "--- $f.log"; tail -n 8 "$run/logs/$f.log"; done; fi
done
echo "faults: $kills kills survived"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
