#!/usr/bin/env bash
# brats.sh DATA_DIR RUN_DIR [--minutes M] [--seed S] [options] -- issue 9's BraTS run: the paper's
# recipe on brats2013-6 within a fixed wall-clock budget, then srm-report's tables and pictures.
#   - trains on the dataset's train + validation cases and evaluates the two test cases every
#     --val-every steps (no checkpoint selection on them: the final model's scores are reported);
#   - region-based sigmoid Dice over WT {1,2,3,4}, TC {1,3,4}, ET {4} as the authors' DiceLoss
#     (squared_pred, smooth_nr 0, smooth_dr 1e-5); Adam 1e-4, weight decay 1e-5, cosine schedule
#     over the steps, not per epoch (srm-trainer's defaults); variant M, width 48, 2 input channels;
#     128^3 patches, batch 1 (the paper's); sliding-window evaluation with overlap 0.5;
#   - the budget: srm-trainer --max-minutes M trains for M minutes from its start (its cosine
#     schedule fitted to the budget from the measured step time); --step-ms (default 150 ms) only
#     sizes the validation and checkpoint intervals (about 16 and 4 per run). --steps N trains
#     exactly N steps instead (no wall-clock stop).
# RUN_DIR/started_at (unix seconds, written first) is time zero of the time-to-Dice table.
# RUN_DIR/dataset is a view of DATA_DIR (symlinked folders, a dataset.json whose split puts
# train + validation into "train"), which the loader, the evaluator and srm-report read.
# Other options go to pipelines/train.sh unchanged (later ones win, e.g. --preset tiny --width 8
# --patch 32 --batch 1 --device cpu --val-every 2 for a CPU smoke test). Prints every command it runs; ends with srm-report's markdown
# (also in RUN_DIR/report.md, pictures in RUN_DIR/report/).
{   # (the whole script is read before it runs: a git pull during a long run cannot change the running copy)
set -uo pipefail
SRM_SCRIPT=brats
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
RECIPE_STEP_MS=150
recipe_begin "$@"

# ---- the dataset view: train + validation -> train, test stays test ----------------------------
recipe_view <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["split"]
d["split"] = {"train": list(s["train"]) + list(s.get("validation", [])), "test": list(s["test"])}
d["description"] = "view for pipelines/brats.sh: train + validation train, test is evaluated. " + d.get("description", "")
json.dump(d, open(sys.argv[2], "w"), indent=1)
print("brats.sh: train", d["split"]["train"], "test", d["split"]["test"], file=sys.stderr)
PY

# ---- train ------------------------------------------------------------------------------------------
recipe_train "$SRM_ROOT/pipelines/train.sh" "$VIEW" "$RUN" \
     --model M --width 48 --patch 128,128,128 --batch 1 "${LEN_ARGS[@]}" --lr 1e-4 \
     --regions "WT=1,2,3,4;TC=1,3,4;ET=4" --overlap 0.5 --val-every "$VAL_EVERY" --ckpt-every "$CKPT_EVERY" \
     --seed "$SEED" --device "$DEVICE" --spacing none \
     --loader-args "--val-split test" "${EXTRA[@]}"

# ---- report -----------------------------------------------------------------------------------------
recipe_report "$SRM_BIN/srm-report" "$RUN" --out "$RUN/report" --dataset "$VIEW" --key dice_WT --thresholds 0.7,0.8,0.85
exit
}
