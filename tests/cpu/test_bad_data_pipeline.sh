#!/usr/bin/env bash
# test_bad_data_pipeline.sh -- bad cases through the whole pipeline (issue 8).
# An MSD dataset mixes 4 good phantoms (scripts/make_phantoms.py) with the bad-file corpus: the
# cases of tests/corpus/bad_pairs (shape mismatch, geometry mismatch, labels outside the classes,
# non-integer labels) and images from tests/corpus/bad (truncated gzip, NaN voxel, Inf voxel, a
# header that lies about its size, absurd dims), plus a listed file that does not exist.
# pipelines/train.sh (tiny, CPU) runs on it. Checks: the loader's log (RUN/logs) names every bad
# case with the file and the problem and skips it; each epoch sends exactly the 4 good volumes and
# skips the 10 bad ones, and the console of train.sh shows them; the good cases train (the trainer
# reaches its last step); nothing died.
set -u
source "$(dirname "$0")/../tally.sh"
need_exec "$BIN"/srm-{exporter,loader,augmenter,trainer}
work=$(mktemp -d /tmp/srm-baddata-XXXXXX)
trainpid=""
cleanup() { [ -n "$trainpid" ] && kill -TERM "$trainpid" 2>/dev/null && wait "$trainpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ds=$work/ds
/usr/bin/python3 "$ROOT/scripts/make_phantoms.py" --cases 4 --val 0 --test 0 --size 24 --seed 11 "$ds" >/dev/null || { bad "make_phantoms"; finish; }
# bad case id -> image, label (copied in), and the words the loader's reason must contain
/usr/bin/python3 - "$ds" "$ROOT/tests/corpus" >"$work/expect.txt" <<'EOF' || { bad "building the mixed dataset"; finish; }
import json, os, shutil, sys
ds, corpus = sys.argv[1], sys.argv[2]
d = json.load(open(f"{ds}/dataset.json"))
good_label = d["training"][0]["label"]
bad = {  # id: (image source, label source or None = a good phantom label, expected words)
    "bad_shape": ("bad_pairs/shape_mismatch/imagesTr/case_000.nii.gz", "bad_pairs/shape_mismatch/labelsTr/case_000.nii.gz", "differ"),
    "bad_geometry": ("bad_pairs/geometry_mismatch/imagesTr/case_000.nii.gz", "bad_pairs/geometry_mismatch/labelsTr/case_000.nii.gz", "geometry"),
    "bad_classes": ("bad_pairs/labels_outside_classes/imagesTr/case_000.nii.gz", "bad_pairs/labels_outside_classes/labelsTr/case_000.nii.gz", "outside"),
    "bad_nonint": ("bad_pairs/non_integer_labels/imagesTr/case_000.nii.gz", "bad_pairs/non_integer_labels/labelsTr/case_000.nii.gz", "non-integer"),
    "bad_truncated": ("bad/truncated.nii.gz", None, "truncated gzip"),
    "bad_nan": ("bad/nan_voxel.nii", None, "NaN"),
    "bad_inf": ("bad/inf_voxel.nii.gz", None, "Inf"),
    "bad_lying": ("bad/dims_larger_than_data.nii", None, "shorter than the header"),
    "bad_absurd": ("bad/absurd_dims.nii", None, "absurd dims"),
}
for cid, (img, lab, words) in bad.items():
    ext = ".nii.gz" if img.endswith(".gz") else ".nii"
    shutil.copy(f"{corpus}/{img}", f"{ds}/imagesTr/{cid}{ext}")
    if lab:
        shutil.copy(f"{corpus}/{lab}", f"{ds}/labelsTr/{cid}.nii.gz")
    else:
        shutil.copy(os.path.join(ds, good_label), f"{ds}/labelsTr/{cid}.nii.gz")
    d["training"].append({"image": f"./imagesTr/{cid}{ext}", "label": f"./labelsTr/{cid}.nii.gz"})
    print(cid, words)
d["training"].append({"image": "./imagesTr/bad_missing.nii.gz", "label": "./labelsTr/bad_missing.nii.gz"})
print("bad_missing", "No such file")
d["numTraining"] = len(d["training"])
json.dump(d, open(f"{ds}/dataset.json", "w"), indent=1)
EOF
run=$work/run
bash "$ROOT/pipelines/train.sh" "$ds" "$run" --preset tiny --device cpu --patch 16 --batch 1 --steps 30 --ckpt-every 10 \
    --augmenters 1 --samples-per-volume 2 --no-evaluator --trainer-args "--log-every 5" >"$work/train.out" 2>&1 &
trainpid=$!
for ((i = 0; i < 480; i++)); do kill -0 "$trainpid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$trainpid" 2>/dev/null && { bad "train.sh not finished in 4 min"; kill -TERM "$trainpid"; }
wait "$trainpid"; rc=$?; trainpid=""
[ "$rc" -eq 0 ] && ok "train.sh exits 0 on the mixed dataset" || { bad "train.sh exit $rc"; tail -n 10 "$work/train.out"; }
llog=$run/logs/loader.log
while read -r cid words; do
  line=$(grep -F "$cid" "$llog" | grep -F "$words" | head -n 1)
  [ -n "$line" ] && ok "$cid reported by name with its problem: $(cut -c1-150 <<<"$line")" \
    || { bad "$cid: no loader line naming it with '$words'"; grep -F "$cid" "$llog" | head -n 2; }
done <"$work/expect.txt"
# the console names each skipped case too (5 a tick at most, the rest counted with the log's path)
n_con=$(grep -c '^  \[loader\] W: loader: skipping case bad_' "$work/train.out")
[ "$n_con" -ge 5 ] && ok "the console shows the skipped cases ($n_con lines)" \
  || bad "the console shows $n_con skipped cases: $(grep -F '[loader]' "$work/train.out" | head -n 3)"
grep -q "^step 30/30 " "$run/logs/trainer.log" && ok "the good cases train: step 30/30 reached" || bad "the trainer did not reach step 30"
n_ep=$(grep -cE "epoch [0-9]+:" "$llog"); n_ok=$(grep -cE "epoch [0-9]+: 4 volumes sent, 10 skipped" "$llog")
[ "$n_ep" -ge 1 ] && [ "$n_ok" -eq "$n_ep" ] && ok "every epoch: 4 good volumes sent, 10 bad skipped ($n_ep epochs)" \
  || bad "epochs: $(grep -E 'epoch [0-9]+:' "$llog" | head -n 3)"
grep -q "died" "$work/train.out" && bad "a stage died: $(grep died "$work/train.out" | head -n 2)" || ok "no stage died"
finish
