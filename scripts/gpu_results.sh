#!/usr/bin/env bash
# gpu_results.sh [brats|btcv] [--minutes M] [--seed S] [--call-s S] [-- RECIPE ARGS] -- issue 9's real-data run in
# ONE device call: runs pipelines/brats.sh (or btcv.sh) on the carried data copy with a wall-clock
# training budget, then srm-report, checks that a prediction overlays its source scan (nibabel
# when a python3 with it exists, else srm-inspect's dims and affine), and copies at most 8 files
# (each far below 16 MiB) into $OUT: report.md, metrics.jsonl, dice_vs_time.png, curves.png,
# overlay PNGs (up to 2), summary.txt (commands, card, geometry check, trainer log tail) and the
# first prediction (CASE.nii.gz), to check against the original scan with nibabel back home:
#   /usr/bin/python3 scripts/check_overlay.py OUT/CASE.nii.gz ../shared/data/.../CASE_0000.nii.gz
#
# Before the call (on the development machine, in the checkout's root):
#   mkdir -p data-local && cp -r ../shared/data/brats2013-6 ../shared/data/abdomen-ct-btcv13 data-local/
#   (data-local/ is git-ignored; brats2013-6 is 35 MB, abdomen-ct-btcv13 2.7 MB: the carried total
#   with bin/ and bundle/ must stay under 64 MiB, so carry only the dataset of the run)
# Device calls (kind nvidia-h100-x1; bin/ must hold the CUDA build: `make CUDA=1` in an earlier
# call on the same warm machine, whose build outputs are kept):
#   run: command "bash scripts/gpu_results.sh brats --minutes 7", carry ["data-local/brats2013-6", "bundle"]
#   run: command "bash scripts/gpu_results.sh btcv --minutes 6", carry ["data-local/abdomen-ct-btcv13", "bundle"]
# --call-s: seconds this call may take in all (default 590, the device tool's 600 s limit less a
# margin); the recipe is stopped (SIGTERM: final checkpoint, clean stop) if it would overrun, and
# what was recorded is still reported. Env: BIN (default bin), DATA_ROOT (default data-local),
# RUN_ROOT (default runs), OUT (default runs/gpu-out).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
T_START=$(date +%s)
WHICH=brats MINUTES=7 SEED=0 CALL_S=590 EXTRA=()
[[ ${1:-} == brats || ${1:-} == btcv ]] && { WHICH=$1; shift; }
while (($#)); do
    case $1 in
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --seed) SEED=${2:?}; shift 2 ;;
        --call-s) CALL_S=${2:?}; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_results.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
export BIN=${BIN:-bin}
OUT=${OUT:-$ROOT/runs/gpu-out}
mkdir -p "$OUT" || exit 1
case $WHICH in
    brats) DATA=${DATA_ROOT:-data-local}/brats2013-6 ;;
    btcv)  DATA=${DATA_ROOT:-data-local}/abdomen-ct-btcv13 ;;
esac
RUN=${RUN_ROOT:-runs}/gpu-$WHICH
SUMMARY=$OUT/summary.txt
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"

[[ -f bundle/activate ]] && source bundle/activate
for b in srm-trainer srm-evaluator srm-loader srm-augmenter srm-exporter srm-report srm-inspect; do
    [[ -x $BIN/$b ]] || { say "error: $BIN/$b missing: build first (make CUDA=1)"; exit 1; }
done
[[ -f $DATA/dataset.json ]] || { say "error: $DATA/dataset.json missing: copy the data into data-local/ and carry it"; exit 1; }
say "# gpu_results.sh $WHICH: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$SUMMARY"
say "cores: $(nproc)  budget: $MINUTES min training, seed $SEED, call limit ${CALL_S}s"

# ---- the run (stopped cleanly if it would overrun the call) --------------------------------------
rm -rf "$RUN"
left=$(( CALL_S - ($(date +%s) - T_START) - 60 ))       # 60 s: a clean stop, the report, the copies
cmd=(bash "pipelines/$WHICH.sh" "$DATA" "$RUN" --minutes "$MINUTES" --seed "$SEED" "${EXTRA[@]}")
say "+ timeout --foreground -s TERM $left ${cmd[*]}"
timeout --foreground -s TERM "$left" "${cmd[@]}" >"$OUT/pipeline.log" 2>&1
rc=$?
say "recipe exit status: $rc$( ((rc == 124)) && echo ' (stopped at the call limit: the report holds what was recorded by then)')"
if [[ ! -f $RUN/report.md && -f $RUN/metrics.jsonl ]]; then   # stopped before its report
    "$BIN/srm-report" "$RUN" --out "$RUN/report" --dataset "$RUN/dataset" >"$RUN/report.md" 2>>"$SUMMARY"
fi

# ---- geometry: one prediction against its source scan ------------------------------------------
pred=$(ls "$RUN"/predictions/*.nii.gz 2>/dev/null | head -n 1)
if [[ -n $pred ]]; then
    id=$(basename "$pred" .nii.gz)
    src=$RUN/dataset/imagesTr/${id}_0000.nii.gz
    [[ -f $src ]] || src=$RUN/dataset/imagesTr/$id.nii.gz
    py=""
    for p in /usr/bin/python3 python3; do
        command -v "$p" >/dev/null && "$p" -c 'import nibabel, numpy' 2>/dev/null && { py=$p; break; }
    done
    if [[ -n $py ]]; then
        say "geometry check (nibabel, $py): $pred vs $src"
        "$py" scripts/check_overlay.py "$pred" "$src" 2>&1 | tee -a "$SUMMARY"
    else
        say "geometry check (no nibabel here: srm-inspect dims + affine): $pred vs $src"
        a=$("$BIN/srm-inspect" "$pred") && b=$("$BIN/srm-inspect" "$src")
        py=$(command -v python3 || command -v /usr/bin/python3)
        if [[ -n $py ]]; then
            "$py" -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = max(abs(x - y) for r, q in zip(a["affine"], b["affine"]) for x, y in zip(r, q))
ok = a["dims"][:3] == b["dims"][:3] and d <= 1e-3
print("dims", a["dims"], b["dims"], "max |affine diff|", d)
print("GEOMETRY", "OK" if ok else "MISMATCH")' "$a" "$b" 2>&1 | tee -a "$SUMMARY"
        else
            say "no python3 at all: srm-inspect outputs follow"; say "$a"; say "$b"
        fi
    fi
else
    say "no prediction was written: no geometry check"
fi

# ---- the files that come back (at most 8) ------------------------------------------------------------
{
    echo; echo "trainer log (last 15 lines):"; tail -n 15 "$RUN/logs/trainer.log" 2>/dev/null
    echo; echo "evaluator log (last 8 lines):"; tail -n 8 "$RUN/logs/evaluator.log" 2>/dev/null
    echo; echo "pipeline log (last 10 lines):"; tail -n 10 "$OUT/pipeline.log"
} >>"$SUMMARY"
rm -f "$OUT/pipeline.log"                                 # its tail is in summary.txt
for f in "$RUN/report.md" "$RUN/metrics.jsonl" "$RUN/report/dice_vs_time.png" "$RUN/curves.png" "$pred"; do
    [[ -f $f ]] && cp "$f" "$OUT/"
done
n=0
for f in "$RUN"/report/overlay_*.png; do
    [[ -f $f ]] && ((n < 2)) && { cp "$f" "$OUT/"; n=$((n + 1)); }
done
ls -la "$OUT" | tee -a "$SUMMARY"
cat "$RUN/report.md" 2>/dev/null
exit "$rc"
