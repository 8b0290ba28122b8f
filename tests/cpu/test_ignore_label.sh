#!/usr/bin/env bash
# test_ignore_label.sh -- nnU-Net v2's "ignore" label end to end, on phantoms whose labels lose a
# slab (the first third of axis i) to the value 4, declared {"ignore": 4} in an nnU-Net
# dataset.json:
#   - srm-inspect counts 4 classes (0..3) and names 4 as ignored; the report counts its voxels;
#   - train.sh trains and validates through the loader, augmenters, trainer and evaluator (the
#     ignored voxels travel as 255 and every stage takes them), and says what it does with them;
#   - srm-evaluator's Dice of each case equals the Dice numpy computes from the written label
#     maps with the ignored voxels left out, and differs from the Dice with them counted as
#     background (so the test fails if the scoring stops leaving them out);
#   - a 0/255 mask given to srm-evaluator --labels (no dataset.json) is refused, not ignored;
#   - a dataset declaring the ignore label below a class is refused by train.sh, naming the file.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup ignore 4 2 9 exporter loader augmenter trainer inspect evaluator

DS=$TMP/ign
mkdir -p "$DS/imagesTr" "$DS/labelsTr"
for f in "$TMP"/data/imagesTr/*.nii.gz; do
    b=$(basename "$f" .nii.gz)
    cp "$f" "$DS/imagesTr/${b}_0000.nii.gz"
done
/usr/bin/python3 - "$TMP/data/labelsTr" "$DS/labelsTr" <<'PY' || { echo "FAIL: label slabs"; echo "0 passed, 1 failed"; exit 1; }
import os, sys
import numpy as np, nibabel as nib
src, dst = sys.argv[1:]
for f in sorted(os.listdir(src)):
    im = nib.load(os.path.join(src, f))
    lab = np.asarray(im.dataobj).astype(np.uint8)
    lab[: lab.shape[0] // 3] = 4
    nib.save(nib.Nifti1Image(lab, im.affine), os.path.join(dst, f))
PY
cat >"$DS/dataset.json" <<'JSON'
{"channel_names": {"0": "MR"}, "labels": {"background": 0, "organ": 1, "lesion": 2, "vessel": 3, "ignore": 4},
 "numTraining": 4, "file_ending": ".nii.gz"}
JSON

shape=$("$BIN/srm-inspect" --dataset "$DS" --shape 2>&1)
check "[[ '$shape' == *'\"classes\": 4'* && '$shape' == *'\"ignore\": 4'* ]]" "inspect --shape: 4 classes, label 4 ignored ($shape)"
"$BIN/srm-inspect" --dataset "$DS" >"$TMP/report.json" 2>&1
check "/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r[\"ignore_label\"] == 4 and r[\"num_problems\"] == 0 and all(int(c[\"label_voxels\"][\"4\"]) > 0 for c in r[\"cases\"]), r' '$TMP/report.json'" \
    "dataset report: ignore_label 4, its voxels counted under 4, no problems"

timeout 400 bash pipelines/train.sh "$DS" "$TMP/run" --preset tiny --patch 32 --batch 1 --steps 4 --ckpt-every 2 \
    --augmenters 1 --device cpu --window 32,32,32 >"$TMP/run.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "train.sh on the ignore dataset exits 0 (exit $rc)"
check "grep -q 'label 4 is nnU-Net' '$TMP/run.out'" "train.sh says label 4 is ignored"
check "grep -q '\"mean_dice\"' '$TMP/run/metrics.jsonl'" "the validation scored the fold's cases"
check "! grep -qiE 'label .*(>=|not below) ' '$TMP/run.out' '$TMP/run'/logs/*.log 2>/dev/null" "no stage refused the ignored voxels"

# Scoring: a random tiny model (all four classes predicted somewhere, the ignored slab included).
"$BUILD/tools/safetensors_tool" write "$TMP/m.safetensors" --variant M --width 8 --in-channels 1 --classes 4 \
    --seed 5 >/dev/null 2>&1
"$BIN/srm-evaluator" --model "$TMP/m.safetensors" --dataset "$DS" --split all --out "$TMP/pred" --window 32 \
    --no-hd95 >"$TMP/eval.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "srm-evaluator scores the ignore dataset (exit $rc)"
check "/usr/bin/python3 - '$TMP/eval.out' '$DS/labelsTr' '$TMP/pred' <<'PY'
import os, re, sys
import numpy as np, nibabel as nib
out, labdir, preddir = sys.argv[1:]
def dice(p, r, c):
    a, b = p == c, r == c
    return 2.0 * (a & b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() else float('nan')
cases = 0; differs = 0
for line in open(out):
    m = re.match(r'case (\S+): dice (.*?) mean', line)
    if not m:
        continue
    got = {int(k): float(v) for k, v in re.findall(r'(\d+)=([0-9.]+)', m.group(2))}
    ref = np.asarray(nib.load(os.path.join(labdir, m.group(1) + '.nii.gz')).dataobj).astype(int)
    pred = np.asarray(nib.load(os.path.join(preddir, m.group(1) + '.nii.gz')).dataobj).astype(int)
    keep = ref != 4
    for c in (1, 2, 3):
        want = dice(pred[keep], ref[keep], c)
        naive = dice(pred, np.where(keep, ref, 0), c)
        if c in got:
            assert abs(got[c] - want) < 6e-5, (m.group(1), c, got[c], want)
            differs += abs(naive - want) > 1e-3
        else:
            assert np.isnan(want), (m.group(1), c, want)
    cases += 1
assert cases == 4 and differs > 0, (cases, differs)
PY" "evaluator Dice = numpy Dice without the ignored voxels (4 cases), not the Dice counting them as background"

# Without a dataset.json declaring it, 255 is no ignore label: a 0/255 mask given with --labels is
# refused (it would otherwise lose its foreground from every score), naming the file.
/usr/bin/python3 - "$TMP/data/labelsTr/phantom_000.nii.gz" "$TMP/mask255.nii.gz" <<'PY'
import sys, numpy as np, nibabel as nib
im = nib.load(sys.argv[1])
nib.save(nib.Nifti1Image((np.asarray(im.dataobj) > 0).astype(np.uint8) * 255, im.affine), sys.argv[2])
PY
"$BIN/srm-evaluator" --model "$TMP/m.safetensors" --images "$TMP/data/imagesTr/phantom_000.nii.gz" \
    --labels "$TMP/mask255.nii.gz" --window 32 --no-hd95 >"$TMP/mask.out" 2>&1
rc=$?
check "[[ $rc != 0 ]] && grep -q 'mask255.nii.gz: label value 255 at ([0-9, ]*) outside \[0, 254\] (a dataset.json can declare 255 as .ignore.)' '$TMP/mask.out'" \
    "a 0/255 mask as --labels: refused naming the file (exit $rc)"

# The ignore label must lie above every class (nnU-Net's rule): refused before anything starts.
sed 's/"ignore": 4/"ignore": 2, "extra": 5/' "$DS/dataset.json" >"$TMP/bad.json" && cp "$TMP/bad.json" "$DS/dataset.json"
timeout 60 bash pipelines/train.sh "$DS" "$TMP/run2" --preset tiny --patch 32 --steps 2 --device cpu >"$TMP/run2.out" 2>&1
rc=$?
check "[[ $rc != 0 ]] && grep -q 'dataset.json.*\"ignore\" (2) must be larger than every class' '$TMP/run2.out'" \
    "ignore below a class refused, naming dataset.json (exit $rc)"
check_summary
