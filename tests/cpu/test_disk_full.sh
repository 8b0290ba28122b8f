#!/usr/bin/env bash
# test_disk_full.sh -- the exporter's disk fills up, then the run directory turns unwritable (issue 8).
# Needs root (mount): fails loudly when the tmpfs cannot be mounted.
# RUN/checkpoints is a 16 MiB tmpfs, smaller than one tiny-model checkpoint (~37 MB with its
# safetensors), under a pipelines/train.sh run (tiny, CPU, phantoms). Checks: the exporter says the
# checkpoint was not stored (and why), the trainer keeps it and retries, no stage dies; after the
# tmpfs is enlarged (mount -o remount,size=) the newest kept checkpoint lands (the trainer keeps
# only the newest unacknowledged one) and the run completes; the checkpoints on disk match their
# .sha256 sidecars and load. Then the folder is made unwritable (a read-only remount: as root,
# chmod would not stop the exporter): the exporter refuses again, and after a read-write remount
# the final checkpoint lands. Prints "N passed, N failed".
set -u
source "$(dirname "$0")/../tally.sh"
need_exec "$BIN"/srm-{exporter,loader,augmenter,trainer} "$BUILD/tools/ckpt_verify"

work=$(mktemp -d /tmp/srm-diskfull-XXXXXX)
run=$work/run ck=$work/run/checkpoints
trainpid=""
cleanup() {
  [ -n "$trainpid" ] && kill -TERM "$trainpid" 2>/dev/null && wait "$trainpid" 2>/dev/null
  mountpoint -q "$ck" && umount "$ck"
  mountpoint -q "$work/run3/checkpoints" && umount "$work/run3/checkpoints"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$ck"
if ! mount -t tmpfs -o size=16m srm-diskfull "$ck" 2>"$work/mount.err"; then
  bad "cannot mount a tmpfs on $ck ($(cat "$work/mount.err")): this test needs root"; finish
fi
ok "16 MiB tmpfs on $ck"
/usr/bin/python3 "$ROOT/scripts/make_phantoms.py" --cases 5 --val 1 --test 0 --size 24 --seed 7 "$work/ph" >/dev/null || { bad "make_phantoms"; finish; }

step_of() { grep '^step ' "$run/logs/trainer.log" 2>/dev/null | tail -n 1 | cut -d' ' -f2 | cut -d/ -f1; }
wait_log() {  # wait_log FILE REGEX SECONDS
  local i
  for ((i = 0; i < $3 * 5; i++)); do grep -Eq "$2" "$1" 2>/dev/null && return 0; kill -0 "$trainpid" 2>/dev/null || return 1; sleep 0.2; done
  return 1
}
# 200 steps, a checkpoint every 20: the run is still going while the disk is full.
bash "$ROOT/pipelines/train.sh" "$work/ph" "$run" --preset tiny --device cpu --patch 16 --batch 1 --steps 200 \
    --ckpt-every 20 --augmenters 1 --samples-per-volume 2 --no-evaluator \
    --trainer-args "--log-every 1" --exporter-args "--keep 100" >"$work/train.out" 2>&1 &
trainpid=$!
xlog=$run/logs/exporter.log tlog=$run/logs/trainer.log

# ---- 1. disk full ----
wait_log "$xlog" "NOT stored" 120 && ok "exporter says the checkpoint was not stored: $(grep -m1 'NOT stored' "$xlog" | cut -c1-140)" \
  || bad "exporter never reported the full disk"
grep -Eiq "NOT stored.*(space|No space|ENOSPC|write)" "$xlog" && ok "the exporter names the cause" || bad "the exporter's message does not name the cause"
wait_log "$tlog" "could not store checkpoint step .*kept in" 30 && ok "trainer keeps the unacknowledged checkpoint: $(grep -m1 'could not store' "$tlog" | cut -c1-140)" \
  || bad "trainer did not report keeping the checkpoint"
s1=$(step_of); sleep 3; s2=$(step_of)
[ "${s2:-0}" -gt "${s1:-0}" ] && ok "training goes on while the disk is full (step $s1 -> $s2)" || bad "training stalled at step ${s1:-?}"
n_fail=$(grep -c "NOT stored" "$xlog")
mount -o remount,size=600m "$ck" && ok "tmpfs enlarged to 600 MiB" || bad "remount failed"
wait_log "$tlog" "checkpoint step [0-9]+ acknowledged" 60 && ok "after space returns the newest kept checkpoint lands: $(grep -m1 -E 'checkpoint step [0-9]+ acknowledged' "$tlog" | cut -c1-100)" \
  || bad "no checkpoint acknowledged after the remount"

# ---- 2. read-only run directory ----
cur=$(step_of)
mount -o remount,ro "$ck" && ok "checkpoints folder remounted read-only at step $cur" || bad "read-only remount failed"
n_before=$(grep -c "NOT stored" "$xlog")
for ((i = 0; i < 300; i++)); do [ "$(grep -c 'NOT stored' "$xlog")" -gt "$n_before" ] && break; kill -0 "$trainpid" 2>/dev/null || break; sleep 0.2; done
[ "$(grep -c 'NOT stored' "$xlog")" -gt "$n_before" ] && ok "exporter refuses on a read-only folder: $(grep 'NOT stored' "$xlog" | tail -n 1 | cut -c1-140)" \
  || bad "exporter did not report the read-only folder"
mount -o remount,rw "$ck" && ok "read-write again" || bad "rw remount failed"

for ((i = 0; i < 600; i++)); do kill -0 "$trainpid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$trainpid" 2>/dev/null && { bad "run not finished in 5 min"; kill -TERM "$trainpid"; }
wait "$trainpid"; rc=$?; trainpid=""
[ "$rc" -eq 0 ] && ok "train.sh exits 0" || { bad "train.sh exit $rc"; tail -n 10 "$work/train.out"; }
grep -q "died" "$work/train.out" && bad "a stage died: $(grep died "$work/train.out" | head -n 2)" || ok "no stage died"
[ -f "$ck/step-00000200.ckpt" ] && ok "the final checkpoint landed" || bad "step-00000200.ckpt missing"
(cd "$ck" && sha256sum --quiet -c ./*.sha256) && ok "every file matches its .sha256" || bad "checksum mismatch"
"$BUILD/tools/ckpt_verify" "$ck"/step-*.ckpt >/dev/null && ok "every stored checkpoint loads" || bad "a stored checkpoint does not load"
ls "$ck" | grep -q '\.tmp' && bad "temporary files left: $(ls "$ck" | grep '\.tmp')" || ok "no half-written temporary file left"
echo "disk full: $n_fail checkpoint(s) refused for space, then landed"

# ---- 3. full to the end: the run fails saying where its final checkpoint is; --resume files it ----
ck3=$work/run3/checkpoints
mkdir -p "$ck3"
mount -t tmpfs -o size=16m srm-diskfull3 "$ck3" || bad "cannot mount the second tmpfs"
args3=("$work/ph" "$work/run3" --preset tiny --device cpu --patch 16 --batch 1 --steps 30 --ckpt-every 10 --augmenters 1
       --samples-per-volume 2 --no-evaluator --trainer-args "--final-ack-timeout 10")
timeout 300 bash "$ROOT/pipelines/train.sh" "${args3[@]}" >"$work/train3.out" 2>&1; rc=$?
[ "$rc" -eq 1 ] && ok "a run whose final checkpoint cannot be stored exits 1" || bad "exit $rc (want 1)"
grep -q "ERROR: the run's final checkpoint is not in $ck3.*kept in $work/run3/spool" "$work/train3.out" \
  && ok "the console says where the final checkpoint is and what to do" || bad "no console error: $(tail -n 3 "$work/train3.out")"
grep -q "\[exporter\] E: .*NOT stored" "$work/train3.out" && ok "the exporter's refusals reach the console" \
  || bad "the exporter's errors are not on the console"
[ -f "$work/run3/spool/step-00000030.ckpt" ] && ok "the final checkpoint is kept in the spool" || bad "spool: $(ls "$work/run3/spool")"
mount -o remount,size=600m "$ck3" || bad "remount of the second tmpfs failed"
timeout 300 bash "$ROOT/pipelines/train.sh" "${args3[@]}" --resume >"$work/train3b.out" 2>&1; rc=$?
[ "$rc" -eq 0 ] && [ -f "$ck3/step-00000030.ckpt" ] && ok "after making room, --resume files the final checkpoint" \
  || bad "resume: exit $rc, $(ls "$ck3" | tr '\n' ' ')"
[ "$fail" -gt 0 ] && { echo "--- exporter.log"; tail -n 8 "$xlog"; echo "--- trainer.log"; grep -v '^step' "$tlog" | tail -n 8; }
finish
