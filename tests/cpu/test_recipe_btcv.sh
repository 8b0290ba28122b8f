#!/usr/bin/env bash
# test_recipe_btcv.sh -- the paper's BTCV recipe end to end on the shared abdominal CTs, tiny and
# short (pipelines/btcv.sh with the tiny preset, 32³ patches, 8 steps, on the CPU): it exits 0
# and leaves what docs/results.md says a recipe run leaves -- report.md with the time-to-Dice
# table and the per-case table under the dataset's 13 organ names, the Dice-vs-time picture and
# an overlay, the validation case's prediction on its source grid (shape and affine, checked
# with nibabel), MONAI's BTCV preprocessing (CT window -175..250 HU, spacing 1.5 x 1.5 x 2 mm)
# in RUN/preprocessing.json and in the checkpoints with the training's patch, and no process.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup recipebtcv 1 0 1 exporter loader augmenter trainer evaluator report
DATA=""
for d in ../shared/data/abdomen-ct-btcv13 /work/shared/data/abdomen-ct-btcv13; do [[ -d $d ]] && DATA=$d && break; done
[[ -n $DATA ]] || { echo "FAIL: shared data abdomen-ct-btcv13 not found"; echo "0 passed, 1 failed"; exit 1; }

RUN=$TMP/btcv
timeout 600 bash pipelines/btcv.sh "$DATA" "$RUN" --steps 8 --device cpu --preset tiny --width 8 --patch 32 --batch 1 \
    >"$TMP/out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "btcv.sh exits 0 (rc $rc)"
check "grep -q '^## Time to Dice' '$RUN/report.md'" "report.md has the time-to-Dice table"
check "grep -q 'left adrenal gland' '$RUN/report.md' && grep -q '| ct_small |' '$RUN/report.md'" "the per-case table names the organs and the case"
check "[[ -s $RUN/report/dice_vs_time.png && -s $RUN/report/overlay_ct_small.png ]]" "the Dice-vs-time picture and the overlay"
check "[[ \$(pgrep -f '$RUN/' | wc -l) == 0 ]]" "no process left"
check "/usr/bin/python3 - '$RUN' '$DATA' <<'PY'
import json, struct, sys
import nibabel as nib, numpy as np
run, data = sys.argv[1], sys.argv[2]
prep = json.load(open(run + '/preprocessing.json'))
assert prep['modality'] == ['CT'] and prep['ct']['norm'] == 'window' and prep['ct']['window'] == [-175, 250], prep
assert prep['spacing'] == [1.5, 1.5, 2.0], prep['spacing']
raw = open(run + '/checkpoints/latest.safetensors', 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
meta = json.loads(raw[8:8 + n])['__metadata__']
carried = json.loads(meta['preprocessing'])
assert meta['classes'] == '14' and carried['training']['patch'] == [32, 32, 32], meta
src, pred = nib.load(data + '/imagesTr/ct_small.nii.gz'), nib.load(run + '/predictions/ct_small.nii.gz')
assert pred.shape == src.shape and np.allclose(pred.affine, src.affine, atol=1e-4), (pred.shape, src.shape)
labels = np.unique(np.asarray(pred.dataobj))
assert labels.min() >= 0 and labels.max() <= 13, labels
PY" "CT window and BTCV spacing in preprocessing.json and the checkpoint (14 classes, patch 32); the prediction on the source grid"
((failed)) && tail -n 20 "$TMP/out"
check_summary
