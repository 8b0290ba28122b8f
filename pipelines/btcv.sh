#!/usr/bin/env bash
# btcv.sh DATA_DIR RUN_DIR [--minutes M] [--seed S] [options] -- issue 9's abdominal CT run on
# abdomen-ct-btcv13, a check that multi-class training works, then srm-report's tables/pictures.
#   - trains on ct_large and evaluates ct_small every --val-every steps (final model reported);
#   - softmax Dice + cross-entropy over 14 classes (background + 13 organs; the esophagus is
#     absent from both cases: its Dice is null, "n/a" in the tables and left out of means, as
#     system.md says); resampling to 1.5 x 1.5 x 2 mm; CT window [-175, 250] HU scaled to [0, 1]
#     (the MONAI BTCV tutorial's ScaleIntensityRanged); Adam 1e-4, weight decay 1e-5, cosine
#     schedule; variant M, width 48; 96^3 patches, batch 2; sliding-window evaluation, overlap 0.5;
#   - the budget: srm-trainer --max-minutes M trains for M minutes from its start (its cosine
#     schedule fitted to the budget from the measured step time); --step-ms (default 110 ms) only
#     sizes the validation and checkpoint intervals (about 16 and 4 per run). --steps N trains
#     exactly N steps instead (no wall-clock stop).
# RUN_DIR/started_at (unix seconds, written first) is time zero of the time-to-Dice table.
# RUN_DIR/dataset is a view of DATA_DIR (symlinked folders, a dataset.json whose split puts
# ct_large into "train" and ct_small into "test"), which the loader, evaluator and srm-report read.
# Other options go to pipelines/train.sh unchanged (later ones win, e.g. --preset tiny --width 8
# --patch 32 --batch 1 --device cpu --val-every 2 for a CPU smoke test). Prints every command it runs; ends with srm-report's markdown
# (also in RUN_DIR/report.md, pictures in RUN_DIR/report/).
set -uo pipefail
SRM_SCRIPT=btcv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
(($# >= 2)) || { usage >&2; exit 2; }
DATA=$(cd "$1" 2>/dev/null && pwd) || srm_die "dataset folder '$1' not found"
mkdir -p "$2" || srm_die "cannot create run folder '$2'"
RUN=$(cd "$2" && pwd)
shift 2
date +%s.%N >"$RUN/started_at" || srm_die "cannot write $RUN/started_at"

MINUTES=8 SEED=0 STEP_MS=110 STEPS="" DEVICE=gpu EXTRA=()
while (($#)); do
    case $1 in
        --minutes) MINUTES=${2:?--minutes needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --step-ms) STEP_MS=${2:?--step-ms needs a value}; shift 2 ;;
        --steps) STEPS=${2:?--steps needs a value}; shift 2 ;;
        --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ && $STEP_MS =~ ^[0-9]+([.][0-9]+)?$ && $SEED =~ ^[0-9]+$ ]] ||
    srm_die "--minutes, --step-ms and --seed take numbers"
LEN_ARGS=(--steps "$STEPS")
if [[ -z $STEPS ]]; then
    STEPS=$(awk -v m="$MINUTES" -v s="$STEP_MS" 'BEGIN { n = int(m * 60000 / s); print n < 1 ? 1 : n }')
    LEN_ARGS=(--max-minutes "$MINUTES")
    srm_log "budget: $MINUTES min of training (--max-minutes); about $STEPS steps at $STEP_MS ms per step"
fi
[[ $STEPS =~ ^[0-9]+$ && $STEPS -ge 1 ]] || srm_die "--steps: '$STEPS' is not a positive integer"
VAL_EVERY=$(( STEPS / 16 )); ((VAL_EVERY < 1)) && VAL_EVERY=1      # about 16 points on the curve
CKPT_EVERY=$(( STEPS / 4 )); ((CKPT_EVERY < 1)) && CKPT_EVERY=1     # 1 GB each: a few, for resumes

# ---- the dataset view: ct_large -> train, ct_small -> test --------------------------------------
VIEW=$RUN/dataset
mkdir -p "$VIEW" || srm_die "cannot create $VIEW"
for sub in imagesTr labelsTr; do
    [[ -d $DATA/$sub ]] || srm_die "$DATA/$sub: not found"
    ln -sfn "$DATA/$sub" "$VIEW/$sub" || srm_die "cannot link $VIEW/$sub"
done
$SRM_PY - "$DATA/dataset.json" "$VIEW/dataset.json" <<'PY' || srm_die "$DATA/dataset.json: cannot make the ct_large/ct_small split"
import json, sys
d = json.load(open(sys.argv[1]))
ids = [e["image"].split("/")[-1].split(".nii")[0] for e in d["training"]]
if "ct_large" not in ids or "ct_small" not in ids:
    sys.exit("btcv.sh: cases ct_large and ct_small expected, found %s" % ids)
d["split"] = {"train": ["ct_large"], "test": ["ct_small"]}
d["description"] = "view for pipelines/btcv.sh: ct_large trains, ct_small is evaluated. " + d.get("description", "")
json.dump(d, open(sys.argv[2], "w"), indent=1)
PY

# ---- train ------------------------------------------------------------------------------------------
cmd=("$SRM_ROOT/pipelines/train.sh" "$VIEW" "$RUN"
     --model M --width 48 --patch 96,96,96 --batch 2 "${LEN_ARGS[@]}" --lr 1e-4 --classes 14
     --loss dice-ce --overlap 0.5 --val-every "$VAL_EVERY" --ckpt-every "$CKPT_EVERY"
     --seed "$SEED" --device "$DEVICE" --spacing 1.5,1.5,2 --norm ct:-175,250
     --loader-args "--val-split test" "${EXTRA[@]}")
printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
# train.sh runs in the background (where bash ignores SIGINT for it), and this script passes
# SIGTERM or Ctrl-C on as one SIGTERM: train.sh then writes a final checkpoint and stops every
# stage, and this script waits for that before it reports.
"${cmd[@]}" &
TRAIN_PID=$!
trap 'kill -TERM "$TRAIN_PID" 2>/dev/null' TERM INT
rc=0
while kill -0 "$TRAIN_PID" 2>/dev/null; do wait "$TRAIN_PID"; rc=$?; done
trap - TERM INT
((rc == 0)) || srm_log "train.sh ended with status $rc; reporting what was recorded"

# ---- report -----------------------------------------------------------------------------------------
rep=("$SRM_BIN/srm-report" "$RUN" --out "$RUN/report" --dataset "$VIEW" --key mean_dice
     --thresholds 0.5,0.7,0.8 --window -175,250)
printf '+'; printf ' %q' "${rep[@]}"; printf '\n'
"${rep[@]}" | tee "$RUN/report.md"
rrc=${PIPESTATUS[0]}
((rc == 0)) || exit "$rc"
exit "$rrc"
