#!/usr/bin/env bash
# soak.sh -- resident memory of every stage over a long pipelines/train.sh run (issue 8).
#   scripts/soak.sh [--minutes M (30)] [--interval S (60)] [--warmup S (max(30, M*60/10))]
#                   [--out CSV (soak.csv)] [--keep DIR]
# Runs a tiny CPU training on synthetic phantoms (scripts/make_phantoms.py) with all five stages,
# samples VmRSS of the loader, augmenter-0, trainer, evaluator and exporter every S seconds into
# CSV (seconds, phase, one kB column per stage), and after the warm-up (>= S seconds, and until
# a checkpoint is acknowledged and two validations are back) SIGSTOPs the trainer for
# the middle fifth of the rest (phase "stopped": back-pressure, producers wait). After the warm-up,
# each stage's floor (lowest RSS) over the second half of the samples must stay within 5 % of
# its highest RSS over the first half (a leak raises the floor; checkpoint buffers are bounded
# peaks), floors and peaks are reported, and no stage may have been restarted. Prints a summary;
# exit 0 when flat, 1 otherwise.
# `make soak` runs it with the defaults (>= 30 minutes); tests/cpu/test_soak.sh runs a short one.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
export BIN
MIN=30 IVL=60 WARM="" OUT=soak.csv KEEP=""
while (($#)); do
  case $1 in
    --minutes) MIN=$2 ;; --interval) IVL=$2 ;; --warmup) WARM=$2 ;; --out) OUT=$2 ;; --keep) KEEP=$2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
total=$(awk -v m="$MIN" 'BEGIN { printf "%d", m * 60 }')
[ -n "$WARM" ] || WARM=$(( total / 10 > 30 ? total / 10 : 30 ))
for b in srm-exporter srm-loader srm-augmenter srm-trainer srm-evaluator; do
  [ -x "$BIN/$b" ] || { echo "soak.sh: $BIN/$b not built (make)" >&2; exit 1; }
done
work=${KEEP:-$(mktemp -d /tmp/srm-soak-XXXXXX)}
mkdir -p "$work"
trainpid="" stopped_pid=""
cleanup() {
  [ -n "$stopped_pid" ] && kill -CONT "$stopped_pid" 2>/dev/null
  [ -n "$trainpid" ] && kill -TERM "$trainpid" 2>/dev/null && wait "$trainpid" 2>/dev/null
  [ -z "$KEEP" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 "$ROOT/scripts/make_phantoms.py" --cases 6 --val 2 --test 0 --size 24 --seed 13 "$work/ph" >/dev/null \
  || { echo "soak.sh: make_phantoms failed" >&2; exit 1; }
run=$work/run
bash "$ROOT/pipelines/train.sh" "$work/ph" "$run" --preset tiny --device cpu --patch 16 --batch 1 --steps 100000000 \
    --ckpt-every 100 --val-every 200 --augmenters 1 --samples-per-volume 2 --trainer-args "--log-every 50" \
    >"$work/train.out" 2>&1 &
trainpid=$!

stages=(loader augmenter evaluator exporter trainer)
stage_pid() {
  local pat
  case $1 in
    exporter)  pat="srm-exporter .*$run/sock/" ;;
    loader)    pat="srm-loader .*$run/sock/" ;;
    augmenter) pat="srm-augmenter .*$run/sock/" ;;
    evaluator) pat="srm-evaluator .*$run/sock/" ;;
    trainer)   pat="srm-trainer .*$run/sock/" ;;
  esac
  pgrep -f -- "$pat" | head -n 1
}
for ((i = 0; i < 120; i++)); do grep -q '^step ' "$run/logs/trainer.log" 2>/dev/null && break; sleep 0.5; done
declare -A PID0=()
for s in "${stages[@]}"; do PID0[$s]=$(stage_pid "$s"); [ -n "${PID0[$s]}" ] || { echo "soak.sh: $s did not start" >&2; exit 1; }; done
echo "seconds,phase,$(IFS=,; echo "${stages[*]/%/_kb}")" >"$OUT"
t0=$(date +%s) restarted="" warm_end=""
while :; do
  now=$(( $(date +%s) - t0 ))
  # warm-up: at least WARM s and until a checkpoint is acknowledged and two validations are back
  # (checkpoint buffers and the evaluator's case cache are part of the steady state); then the
  # trainer is stopped for the middle fifth of what is left.
  if [ -z "$warm_end" ] && ((now >= WARM)) && grep -q 'acknowledged' "$run/logs/trainer.log" &&
     [ "$(grep -c 'validation at step' "$run/logs/trainer.log")" -ge 2 ]; then
    warm_end=$now; stop_at=$(( now + (total - now) * 2 / 5 )); cont_at=$(( now + (total - now) * 3 / 5 ))
  fi
  phase=running
  if [ -z "$warm_end" ]; then phase=warmup
  elif ((now >= stop_at && now < cont_at)); then
    phase=stopped
    [ -z "$stopped_pid" ] && { stopped_pid=${PID0[trainer]}; kill -STOP "$stopped_pid"; }
  elif [ -n "$stopped_pid" ]; then kill -CONT "$stopped_pid"; stopped_pid=""; fi
  row="$now,$phase"
  for s in "${stages[@]}"; do
    p=$(stage_pid "$s")
    [ "$p" = "${PID0[$s]}" ] || restarted="$restarted $s"
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/${PID0[$s]}/status" 2>/dev/null)
    row="$row,${kb:-0}"
  done
  echo "$row" >>"$OUT"
  ((now >= total)) && break
  ((now > 3 * total)) && { echo "soak.sh: no checkpoint/validation after $now s" >&2; exit 1; }
  sleep "$IVL"
done
[ -n "$stopped_pid" ] && { kill -CONT "$stopped_pid"; stopped_pid=""; }
steps=$(grep '^step ' "$run/logs/trainer.log" | tail -n 1 | cut -d' ' -f2)
kill -TERM "$trainpid"; wait "$trainpid"; rc=$?; trainpid=""
echo "soak.sh: $MIN min, samples every $IVL s, warm-up ${warm_end:-?} s, trainer at step ${steps:-?}, train.sh exit $rc; CSV $OUT"
[ -n "$warm_end" ] || { echo "soak.sh: the run never left its warm-up" >&2; exit 1; }
/usr/bin/python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
late = [r for r in rows if r["phase"] != "warmup"]
bad = 0
for col in [c for c in rows[0] if c.endswith("_kb")]:
    v = [int(r[col]) for r in late]
    vs = [int(r[col]) for r in late if r["phase"] == "stopped"]
    # A leak raises the floor (the lowest level) over time. Checkpoints and validations add
    # short-lived buffers, and glibc may keep a freed 28 MB buffer in the heap once (a one-time
    # step, bounded). So: the floor of the second half must stay within 5 % of the first half's
    # highest level; the floor-to-floor change is reported as well.
    h = max(1, len(v) // 2)
    f1, f2, p1 = min(v[:h]), min(v[h:]), max(v[:h])
    growth = (f2 - f1) / f1 if f1 else 1.0
    flat = f1 > 0 and f2 <= 1.05 * p1
    bad += not flat
    print(f"  {col[:-3]:10s} floor {f1 / 1024:7.1f} -> {f2 / 1024:7.1f} MB ({100 * growth:+5.2f} %)  "
          f"first-half peak {p1 / 1024:7.1f}  peak {max(v) / 1024:7.1f} MB  "
          f"trainer stopped: {min(vs) / 1024 if vs else 0:.1f}..{max(vs) / 1024 if vs else 0:.1f} MB  "
          f"{'flat' if flat else 'NOT FLAT'}")
print(f"soak: {len(late)} samples after warm-up, {bad} stage(s) not flat within 5 %")
sys.exit(1 if bad else 0)
EOF
flat=$?
[ -n "$restarted" ] && { echo "soak.sh: restarted during the soak:$(tr ' ' '\n' <<<"$restarted" | sort -u | tr '\n' ' ')"; exit 1; }
# 130: train.sh's own status after our SIGTERM (final checkpoint written, everything stopped)
[ "$rc" -eq 0 ] || [ "$rc" -eq 130 ] || { echo "soak.sh: train.sh exit $rc"; exit 1; }
exit $flat
