#!/usr/bin/env bash
# demo.sh -- what `make demo` runs, on a fresh machine: installs the build dependencies, builds
# the stages (with CUDA when a GPU answers, else the CPU reference), generates the synthetic
# phantom dataset (scripts/make_phantoms.py), trains the `demo` model for a few minutes with
# pipelines/train.sh, evaluates it on the validation phantoms and prints the Dice per class.
# Leaves in runs/demo/: checkpoints/ (+ .safetensors exports and .sha256 sidecars),
# predictions/, metrics.jsonl, curves.png, logs/.
# The recipe differs from the paper's on purpose, to learn in minutes on 2 CPU cores: the `tiny`
# widths (8-64; the `demo` preset's 16-128 gave the same Dice per step at 2.7x the time per step,
# BENCHMARKS.md "make demo") in variant P (each stage one ToM + one Conv3, the paper's minimal
# form: 1.45x M's steps/s, better Dice in the same minutes), lr 1e-2 (paper 1e-4; 2e-2 started
# worse and ended no better) with Dice + cross-entropy, one 32^3 patch per step that covers a
# whole phantom (size-28 phantoms are cropped to their body, < 32 voxels a side, so validation
# is one window; at 32^3 the deepest CMMB runs at 1^3, acceptable for this demo only), the
# trainer stopped by --max-minutes so that the whole demo, build included, takes about --minutes
# minus the unused part of a 30 s reserve (9.4 -> about 9 minutes; the bar is 10).
# Options: --minutes M (whole demo)  --steps N (instead of the budget)  --lr F  --size S (phantom
#          size)  --cases N  --val N  --patch P  --seed S
#          --out DIR (default runs/demo; emptied first)
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -uo pipefail
SRM_SCRIPT=demo
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
source pipelines/lib.sh

STEPS="" LR=1e-2 SIZE=28 CASES=24 VAL=3 OUT=runs/demo PATCH=32 SEED=7 MINUTES=9.4 RESERVE=30
while (($#)); do
    (($# >= 2)) || srm_die "$1: missing value"
    case $1 in
        --steps) STEPS=$2 ;;  --lr) LR=$2 ;;  --size) SIZE=$2 ;;  --cases) CASES=$2 ;;
        --val) VAL=$2 ;;  --out) OUT=$2 ;;  --patch) PATCH=$2 ;;  --seed) SEED=$2 ;;
        --minutes) MINUTES=$2 ;;
        *) srm_die "unknown option $1 (--steps --lr --size --cases --val --out --patch --seed --minutes)" ;;
    esac
    shift 2
done
T0=$(date +%s)
[[ -n $OUT && $OUT != / ]] || srm_die "--out: refusing '$OUT'"
export BIN=$SRM_BIN
rm -rf "$OUT"
mkdir -p "$OUT/logs" || srm_die "cannot create $OUT"

# ---- dependencies and build ---------------------------------------------------------------
if ! scripts/install-deps.sh --check >/dev/null 2>&1; then
    srm_log "installing build dependencies (scripts/install-deps.sh)"
    scripts/install-deps.sh || srm_die "scripts/install-deps.sh failed"
fi
GPU=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && GPU=1
# Without a GPU: CUDA=0 into its own build folder (objects built with CUDA must not be mixed in).
CUDA_FLAG=CUDA=0 BUILD_DIR=${BUILD:-build}-cpu
((GPU)) && CUDA_FLAG=CUDA=1 BUILD_DIR=${BUILD:-build}
STAGES=(exporter loader augmenter trainer evaluator)
srm_log "building the stages ($CUDA_FLAG into $BUILD_DIR; a GPU was $( ((GPU)) || echo "not ")found)"
make -j"$(srm_cores)" "$CUDA_FLAG" BUILD="$BUILD_DIR" BIN="$SRM_BIN" "${STAGES[@]/#/$SRM_BIN/srm-}" \
    >"$OUT/logs/build.log" 2>&1 ||
    { tail -n 30 "$OUT/logs/build.log" >&2; srm_die "build failed (full log: $OUT/logs/build.log)"; }

# ---- data ---------------------------------------------------------------------------------------
DATA=$OUT/phantoms
$SRM_PY scripts/make_phantoms.py "$DATA" --cases "$CASES" --val "$VAL" --size "$SIZE" --seed 2025 ||
    srm_die "scripts/make_phantoms.py failed (needs /usr/bin/python3 with numpy and nibabel)"

# ---- train + evaluate -------------------------------------------------------------------------------
# The trainer gets what is left of the --minutes budget (whole demo, build included) after the
# build, the data and a reserve for the final validation, predictions and shutdown; it fits its
# cosine schedule to that (srm-trainer --max-minutes). --steps N trains N steps instead.
LEN_ARGS=()
if [[ -n $STEPS ]]; then
    LEN_ARGS=(--steps "$STEPS")
    srm_log "training the demo model: $STEPS steps, patch $PATCH, lr $LR (build + data took $(( $(date +%s) - T0 )) s)"
else
    TRAIN_MIN=$(awk -v m="$MINUTES" -v e="$(( $(date +%s) - T0 ))" -v r="$RESERVE" \
        'BEGIN { t = (m * 60 - e - r) / 60; printf "%.2f", t < 0.5 ? 0.5 : t }')
    LEN_ARGS=(--max-minutes "$TRAIN_MIN")
    srm_log "training the demo model for $TRAIN_MIN minutes, patch $PATCH, lr $LR (build + data took $(( $(date +%s) - T0 )) s)"
fi
bash pipelines/train.sh "$DATA" "$OUT" --preset tiny --model P --patch "$PATCH" --batch 1 "${LEN_ARGS[@]}" --lr "$LR" \
    --loss dice-ce --ckpt-every 250 --val-every 250 --augmenters 1 --seed "$SEED" --overlap 0.5 \
    --augmenter-args "--samples-per-volume 2" || srm_die "pipelines/train.sh failed (logs: $OUT/logs)"

# ---- report ---------------------------------------------------------------------------------------
$SRM_PY - "$OUT/metrics.jsonl" "$DATA/dataset.json" <<'EOF' || srm_die "no validation result in $OUT/metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if r.get("source") == "evaluator"]
if not ev:
    sys.exit("demo: no validation metrics recorded")
last = max(ev, key=lambda r: r["step"])
names = json.load(open(sys.argv[2])).get("labels", {})
print(f"\nDice per class on {len(last.get('cases') or [])} validation phantoms (step {last['step']}):")
k = 1
while f"dice_{k}" in last:
    v = last[f"dice_{k}"]
    print(f"  class {k} {names.get(str(k), ''):<8} {'n/a' if v is None else f'{v:.4f}'}")
    k += 1
print(f"  mean foreground Dice {last['mean_dice']:.4f}")
EOF
srm_log "done in $(( $(date +%s) - T0 )) s: results in $OUT/ (checkpoints/, predictions/, metrics.jsonl, curves.png)"
exit
}
