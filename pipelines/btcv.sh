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
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -uo pipefail
SRM_SCRIPT=btcv
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
RECIPE_STEP_MS=110
recipe_begin "$@"

# ---- the dataset view: ct_large -> train, ct_small -> test --------------------------------------
recipe_view <<'PY'
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
recipe_train "$SRM_ROOT/pipelines/train.sh" "$VIEW" "$RUN" \
     --model M --width 48 --patch 96,96,96 --batch 2 "${LEN_ARGS[@]}" --lr 1e-4 --classes 14 \
     --loss dice-ce --overlap 0.5 --val-every "$VAL_EVERY" --ckpt-every "$CKPT_EVERY" \
     --seed "$SEED" --device "$DEVICE" --spacing 1.5,1.5,2 --norm ct:-175,250 \
     --loader-args "--val-split test" "${EXTRA[@]}"

# ---- report -----------------------------------------------------------------------------------------
recipe_report "$SRM_BIN/srm-report" "$RUN" --out "$RUN/report" --dataset "$VIEW" --key mean_dice \
     --thresholds 0.5,0.7,0.8 --window -175,250
exit
}
