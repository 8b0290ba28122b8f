#!/usr/bin/env bash
# test_train_dataset_shape.sh -- train.sh takes the model's classes and channels from the dataset
# as the loader reads it, and stops (rather than waits forever) when a stage it needs is gone:
#   - a plain imagesTr/ + labelsTr/ folder without dataset.json (labels 0..3): 4 classes counted
#     from the label files (the old default of 2 made the loader skip every case, then hang);
#   - an nnU-Net dataset.json whose labels include regions ({"all": [1, 2, 3], "core": [2, 3]}):
#     region-based training as nnU-Net does it (sigmoid outputs, regions_class_order's labels),
#     or 4 classes from the largest value with --classes; a value below the largest that no label
#     declares is named by srm-inspect --shape and train.sh;
#   - --norm ct-nnunet takes nnU-Net's CT normalisation from srm-inspect --intensities into the
#     run's preprocessing settings, and is refused for a dataset whose channels are not all CT;
#   - no validation split declared: fold 0 of the 5-fold split is validated (nnU-Net's default);
#     a splits_final.json whose fold 0 cannot be made stops the run;
#     a step validated off the checkpoint grid is checkpointed, so best.ckpt points at the best;
#     a --fold past the split's folds is nnU-Net's seeded 80:20 split, --fold all trains and
#     validates on every case (nnU-Net's fold all);
#     the choice is kept in RUN/cases.args for a resume, which refuses another --fold, and the
#     folder is refused without --resume; cases
#     chosen by --loader-args (--fold 1) win over the defaults;
#   - a loader that cannot start (--norm bogus) stops the run with its error, exit 1, no process
#     left; --augmenters 0 without --remote-augmenters is refused at once;
#   - the last augmenter gone for good stops the run; an evaluator that cannot start (exit 78)
#     stops it, one that fails again and again leaves training going on without validation;
#   - a trainer that only gets batches it must drop (channels differ) stops the run after
#     --batch-timeout with a reason (exit status 78: no restart), logging drops rate-limited;
#   - seeds a checkpoint's JSON cannot hold are refused by srm-trainer and train.sh.
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup dsshape 5 1 5 exporter loader augmenter trainer inspect evaluator

ARGS=(--preset tiny --patch 32 --batch 1 --steps 2 --ckpt-every 2 --augmenters 1 --no-evaluator --device cpu)
EV_ARGS=(--preset tiny --patch 32 --batch 1 --steps 2 --ckpt-every 2 --augmenters 1 --device cpu --window 32,32,32)
left() { pgrep -f "$TMP/$1" >/dev/null; }

# plain layout
mkdir -p "$TMP/plain"
cp -r "$TMP/data/imagesTr" "$TMP/data/labelsTr" "$TMP/plain/"
timeout 300 bash pipelines/train.sh "$TMP/plain" "$TMP/run1" "${ARGS[@]}" >"$TMP/run1.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "plain layout: train.sh exits 0 (exit $rc)"
check "grep -q '4 classes (label files of' '$TMP/run1.out'" "plain layout: 4 classes counted from the label files"
check "grep -q '\[loader\] W: .*has no dataset.json: its channels are normalised as MR' '$TMP/run1.out'" \
    "plain layout: the console says the channels are taken as MR (no modality without dataset.json)"
check "[[ -e '$TMP/run1/checkpoints/latest.ckpt' ]]" "plain layout: a checkpoint was written"
# a resume keeps the first run's preprocessing: without --spacing it trains on as before (it once
# switched silently to the default, the rest of the run on other inputs), another one is refused
timeout 300 bash pipelines/train.sh "$TMP/plain" "$TMP/run1s" "${ARGS[@]}" --spacing 1.5,1.5,1.5 >"$TMP/run1s.out" 2>&1
timeout 300 bash pipelines/train.sh "$TMP/plain" "$TMP/run1s" "${ARGS[@]}" --resume >"$TMP/run1sb.out" 2>&1
rc=$?
sp=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["spacing"])' "$TMP/run1s/preprocessing.json" 2>&1)
check "[[ $rc == 0 ]] && grep -q \"resuming with the first run's preprocessing: --spacing 1.5,1.5,1.5\" '$TMP/run1sb.out' && [[ '$sp' == '[1.5, 1.5, 1.5]' ]]" \
    "a resume without --spacing keeps the first run's (exit $rc, preprocessing.json spacing $sp)"
timeout 60 bash pipelines/train.sh "$TMP/plain" "$TMP/run1s" "${ARGS[@]}" --resume --spacing 2,2,2 >"$TMP/run1sc.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'trained with --spacing 1.5,1.5,1.5: resume without --spacing, or with the same' '$TMP/run1sc.out'" \
    "a resume with another --spacing: refused (exit $rc)"
# --spacing auto: srm-inspect --spacing's plan becomes the run's spacing; a resume keeps it
timeout 300 bash pipelines/train.sh "$TMP/plain" "$TMP/run1a" "${ARGS[@]}" --spacing auto >"$TMP/run1a.out" 2>&1
rc=$?
same=$("$BIN/srm-inspect" --dataset "$TMP/plain" --spacing | /usr/bin/python3 -c '
import json, sys
plan, prep = json.load(sys.stdin)["target_spacing"], json.load(open(sys.argv[1]))["spacing"]
print("same" if all(abs(a - b) <= 1e-6 * a for a, b in zip(plan, prep)) else "%s != %s" % (plan, prep))' "$TMP/run1a/preprocessing.json" 2>&1)
check "[[ $rc == 0 && '$same' == same ]] && grep -q -- \"--spacing auto: .*nnU-Net's plan over [0-9]* training cases\" '$TMP/run1a.out'" \
    "--spacing auto: the run resamples to srm-inspect's plan (exit $rc, $same)"
timeout 300 bash pipelines/train.sh "$TMP/plain" "$TMP/run1a" "${ARGS[@]}" --resume --spacing auto --steps 4 >"$TMP/run1ab.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q \"resuming with the first run's preprocessing: --spacing auto\" '$TMP/run1ab.out' && ! grep -q 'nnU-Net.s plan over' '$TMP/run1ab.out'" \
    "a resume with --spacing auto keeps the first run's plan without planning again (exit $rc)"

# nnU-Net layout, region labels
mkdir -p "$TMP/nnu/imagesTr" "$TMP/nnu/labelsTr"
for f in "$TMP"/data/imagesTr/*.nii.gz; do
    b=$(basename "$f" .nii.gz)
    cp "$f" "$TMP/nnu/imagesTr/${b}_0000.nii.gz"
    cp "$TMP/data/labelsTr/$b.nii.gz" "$TMP/nnu/labelsTr/"
done
cat >"$TMP/nnu/dataset.json" <<'EOF'
{"channel_names": {"0": "MR"}, "labels": {"background": 0, "all": [1, 2, 3], "core": [2, 3]},
 "numTraining": 4, "file_ending": ".nii.gz"}
EOF
timeout 300 bash pipelines/train.sh "$TMP/nnu" "$TMP/run2" "${ARGS[@]}" >"$TMP/run2.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "nnU-Net region labels: train.sh exits 0 (exit $rc)"
check "grep -q 'declares nnU-Net regions: region-based training, --loss sigmoid-dice --regions \"all=1,2,3;core=2,3\"' '$TMP/run2.out' &&
       grep -q 'the model has 2 sigmoid outputs' '$TMP/run2.out'" "nnU-Net region labels: region-based training, as nnU-Net"
check "[[ \$(cat '$TMP/run2/regions.auto') == 'all=1,2,3;core=2,3' ]]" "nnU-Net region labels: the choice kept in RUN/regions.auto"
timeout 300 bash pipelines/train.sh "$TMP/nnu" "$TMP/run2" "${ARGS[@]}" --steps 3 --resume >"$TMP/run2r.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q \"resuming with the first run's regions\" '$TMP/run2r.out'" "a resume trains the first run's regions (exit $rc)"
shape=$("$BIN/srm-inspect" --dataset "$TMP/nnu" --shape 2>&1)
check "[[ '$shape' == *'\"classes\": 4'* && '$shape' == *'\"regions\": \"all=1,2,3;core=2,3\"'* ]] &&
       '$BIN/srm-inspect' --dataset '$TMP/nnu' | grep -q 'regions_class_order is absent'" \
    "nnU-Net region labels: inspect --shape gives the regions (no regions_class_order: said) ($shape)"
# regions_class_order gives each region's output label; --classes asks for classes instead
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["regions_class_order"] = [1, 3]; json.dump(d, open(sys.argv[1], "w"))' \
    "$TMP/nnu/dataset.json"
shape=$("$BIN/srm-inspect" --dataset "$TMP/nnu" --shape 2>&1)
check "[[ '$shape' == *'\"regions\": \"all=1,2,3:1;core=2,3:3\"'* ]]" "regions_class_order: the output labels ($shape)"
timeout 300 bash pipelines/train.sh "$TMP/nnu" "$TMP/run2b" "${ARGS[@]}" --classes 4 >"$TMP/run2b.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q 'WARNING: .* declares nnU-Net regions (all=1,2,3:1;core=2,3:3), but --classes / --loss ask for classes' '$TMP/run2b.out'" \
    "nnU-Net region labels with --classes 4: softmax classes, with a warning (exit $rc)"

# labels with a gap (value 4 declared by no label, 5 is): said before training, the model keeps 6 classes
mkdir -p "$TMP/nngap"
cp -r "$TMP/nnu/imagesTr" "$TMP/nnu/labelsTr" "$TMP/nngap/"
cat >"$TMP/nngap/dataset.json" <<'EOF'
{"channel_names": {"0": "MR"}, "labels": {"background": 0, "organ": 1, "lesion": 2, "vessel": 3, "other": 5},
 "numTraining": 4, "file_ending": ".nii.gz"}
EOF
shape=$("$BIN/srm-inspect" --dataset "$TMP/nngap" --shape 2>&1)
check "[[ '$shape' == *'\"classes\": 6'* && '$shape' == *'\"undeclared\": [4]'* ]]" "a gap in the labels: inspect --shape names value 4 ($shape)"
timeout 300 bash pipelines/train.sh "$TMP/nngap" "$TMP/run9" "${ARGS[@]}" >"$TMP/run9.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q 'WARNING: label value(s) 4 of 0..5 declared by no label' '$TMP/run9.out'" \
    "a gap in the labels: train.sh warns and trains (exit $rc)"

# --norm ct-nnunet: nnU-Net's CT normalisation from the dataset's fingerprint (the same layout
# with its channel named CT), carried into the run's preprocessing settings; refused with no CT
# channel
mkdir -p "$TMP/nnct"
cp -r "$TMP/nnu/imagesTr" "$TMP/nnu/labelsTr" "$TMP/nnct/"
sed 's/"MR"/"CT"/' "$TMP/nnu/dataset.json" >"$TMP/nnct/dataset.json"
timeout 300 bash pipelines/train.sh "$TMP/nnct" "$TMP/run8" "${ARGS[@]}" --norm ct-nnunet >"$TMP/run8.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "--norm ct-nnunet: train.sh exits 0 (exit $rc)"
check "grep -q -- '--norm ct-nnunet: ct-z:' '$TMP/run8.out'" "--norm ct-nnunet: the setting is printed"
check "\"$BIN/srm-inspect\" --dataset '$TMP/nnct' --intensities >'$TMP/fp8.json' && /usr/bin/python3 -c '
import json, sys
fp = json.load(open(sys.argv[1]))[\"channels\"][0]; ct = json.load(open(sys.argv[2]))[\"ct\"]
want = [fp[\"mean\"], fp[\"std\"], fp[\"percentile_00_5\"], fp[\"percentile_99_5\"]]
got = ct[\"zscore\"] + ct[\"window\"]
sys.exit(not (ct[\"norm\"] == \"zscore\" and all(abs(g - w) <= 1e-6 * max(1, abs(w)) for g, w in zip(got, want))))
' '$TMP/fp8.json' '$TMP/run8/preprocessing.json'" "--norm ct-nnunet: preprocessing.json holds the fingerprint's mean, std and percentiles"
timeout 60 bash pipelines/train.sh "$TMP/nnu" "$TMP/run9" "${ARGS[@]}" --norm ct-nnunet >"$TMP/run9.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'not every channel is CT' '$TMP/run9.out'" "--norm ct-nnunet without a CT channel: refused (exit $rc)"

# no validation split declared (5 cases): the evaluator validates fold 0's case, as nnU-Net
# would, instead of nothing
mkdir -p "$TMP/nosplit"
cp -r "$TMP/data/imagesTr" "$TMP/data/labelsTr" "$TMP/nosplit/"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d.pop("split", None); json.dump(d, open(sys.argv[2], "w"))' \
    "$TMP/data/dataset.json" "$TMP/nosplit/dataset.json"
EVAL_ARGS=("${EV_ARGS[@]}" --val-every 1)
timeout 300 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7" "${EVAL_ARGS[@]}" >"$TMP/run7.out" 2>&1
rc=$?
check "[[ $rc == 0 ]]" "no validation split: train.sh exits 0 (exit $rc)"
check "grep -q \"fold 0 of nnU-Net's generated 5-fold split (4 training, 1 validation cases\" '$TMP/run7.out'" "no validation split: fold 0 chosen"
check "grep -q '\"source\": *\"evaluator\"' '$TMP/run7/metrics.jsonl'" "no validation split: the final validation was recorded"
check "[[ \$(ls '$TMP/run7/predictions' 2>/dev/null | wc -l) == 1 ]]" "no validation split: one prediction (fold 0's validation case)"
# --val-every 1 off the --ckpt-every 2 grid: step 1 is checkpointed too, and best points at the
# validated step with the highest mean Dice (the first of equals)
want=$(/usr/bin/python3 -c '
import json, sys
best = None
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o.get("source") == "evaluator" and o.get("mean_dice") is not None and (best is None or o["mean_dice"] > best[1]):
        best = (o["step"], o["mean_dice"])
print(best[0] if best else "none")' "$TMP/run7/metrics.jsonl" 2>/dev/null)
got=$(readlink "$TMP/run7/checkpoints/best.ckpt" 2>/dev/null | grep -o '[0-9]*' | sed 's/^0*//')
check "grep -q 'step 1\b' '$TMP/run7/logs/exporter.log'" "--val-every off the checkpoint grid: step 1 was checkpointed"
check "[[ -n '$got' && '$got' == '$want' ]]" "best.ckpt points at step ${got:-?}, the best validated step ${want:-?}"
check "[[ \$(cat '$TMP/run7/cases.args') == '--fold 0 --val-split fold0/val' ]]" "the run's cases are kept in RUN/cases.args"
check "[[ \"\$('$BIN/srm-inspect' --dataset '$TMP/nosplit' --folds 2>/dev/null)\" == \"\$(cat '$TMP/run7/splits_final.json')\" ]] &&
       grep -q 'folds from $TMP/run7/splits_final.json' '$TMP/run7/logs/loader.log'" \
    "the fold's cases are kept in RUN/splits_final.json, and the loader takes its folds from there"
# a fold past the split's five: nnU-Net's seeded random 80:20 split (RandomState(12345 + 7)),
# kept with the run (RUN/splits_final.json runs on to fold 7); it was refused ("not 0..4")
timeout 300 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7g" "${EV_ARGS[@]}" --fold 7 >"$TMP/run7g.out" 2>&1
rc=$?
want7=$(/usr/bin/python3 -c '
import json, sys, numpy as np
ids = json.load(open(sys.argv[1]))[0]
keys = np.sort(ids["train"] + ids["val"])
tr = np.random.RandomState(12345 + 7).choice(len(keys), int(len(keys) * 0.8), replace=False)
print(" ".join(str(keys[i]) for i in range(len(keys)) if i not in tr))' "$TMP/run7/splits_final.json" 2>&1)
got7=$(/usr/bin/python3 -c 'import json, sys; f = json.load(open(sys.argv[1])); print(len(f), " ".join(f[7]["val"]))' "$TMP/run7g/splits_final.json" 2>&1)
check "[[ $rc == 0 ]] && grep -q -- '--fold 7 is past the 5 folds (generated): as nnU-Net does, a seeded random 80:20 split' '$TMP/run7g.out'" "--fold 7: nnU-Net's random 80:20 split, said (exit $rc)" ||
    grep -i fold "$TMP/run7g.out" "$TMP/run7g/logs/loader.log" | head -5
check "[[ '$got7' == '8 $want7' && \$(ls '$TMP/run7g/predictions') == '$want7.nii.gz' ]]" \
    "--fold 7: validates nnU-Net's case ($want7), kept as fold 7 of RUN/splits_final.json ($got7)"
timeout 300 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7h" "${EV_ARGS[@]}" --fold all >"$TMP/run7h.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q '5 training cases (foldall/train), 5 served on request (foldall/val)' '$TMP/run7h/logs/loader.log' &&
       [[ \$(ls '$TMP/run7h/predictions' | wc -l) == 5 ]]" "--fold all: every case trains and validates, as nnU-Net's fold all (exit $rc)"
timeout 60 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7i" "${EV_ARGS[@]}" --fold 1000 >"$TMP/run7i.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q -- \"--fold: '1000' is not a fold number (0..999) or all\" '$TMP/run7i.out'" "--fold 1000: refused (exit $rc)"
# a validation case whose label file cannot be used (its affine moved): the final validation
# scores nothing, and train.sh says the run has no validation result, and why
mkdir -p "$TMP/badval"
cp -r "$TMP/data/imagesTr" "$TMP/data/labelsTr" "$TMP/data/dataset.json" "$TMP/badval/"
/usr/bin/python3 -c '
import json, sys, numpy as np, nibabel as nib
d = sys.argv[1]
for cid in json.load(open(d + "/dataset.json"))["split"]["validation"]:
    f = "%s/labelsTr/%s.nii.gz" % (d, cid)
    im = nib.load(f); a = im.affine.copy(); a[:3, 3] += 7
    nib.save(nib.Nifti1Image(np.asarray(im.dataobj), a), f)' "$TMP/badval"
timeout 300 bash pipelines/train.sh "$TMP/badval" "$TMP/run7e" "${EV_ARGS[@]}" >"$TMP/run7e.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q 'could not score 1 case(s); the first: .*geometry mismatch' '$TMP/run7e.out' &&
       grep -q 'WARNING: the run has no validation result' '$TMP/run7e.out' && ! grep -q 'no validation metrics were recorded' '$TMP/run7e.out'" \
    "a validation case that cannot be scored: named, and the run said to have no validation result (exit $rc)"
# a splits_final.json whose fold 0 names a case the dataset lacks (a typo) stops the run naming
# it -- it once trained on every case, the intended validation cases too, and exited 0
mkdir -p "$TMP/badsplit"
cp -r "$TMP/nosplit/imagesTr" "$TMP/nosplit/labelsTr" "$TMP/nosplit/dataset.json" "$TMP/badsplit/"
/usr/bin/python3 -c 'import json, sys; json.dump([{"train": ["phantom_000", "phantom_001"], "val": ["phantom_02"]}], open(sys.argv[1], "w"))' \
    "$TMP/badsplit/splits_final.json"
timeout 60 bash pipelines/train.sh "$TMP/badsplit" "$TMP/run7d" "${EVAL_ARGS[@]}" >"$TMP/run7d.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'fold 0 cannot be made: .*splits_final.json: unknown case \"phantom_02\"' '$TMP/run7d.out'" \
    "a splits_final.json naming an unknown case stops the run, naming it (exit $rc)"
# a resume keeps the first run's cases even when the dataset now declares a validation split
cp "$TMP/data/dataset.json" "$TMP/nosplit/dataset.json"
timeout 300 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7" "${EVAL_ARGS[@]}" --resume >"$TMP/run7b.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q \"resuming with the first run's cases: --fold 0 --val-split fold0/val\" '$TMP/run7b.out'" \
    "a resume keeps the first run's cases (exit $rc)"
# that resume found the run finished: its final validation is the one already filed, and train.sh
# does not wait for a copy the exporter files no more (it waited 60 s)
gap=$(/usr/bin/python3 -c '
import re, sys
t = {}
for l in open(sys.argv[1]):
    m = re.match(r"(\d\d):(\d\d):(\d\d) \[train\] (the trainer finished|predictions:)", l)
    if m: t[m.group(4)] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
print(t["predictions:"] - t["the trainer finished"] if len(t) == 2 else "none")' "$TMP/run7b.out" 2>&1)
check "[[ '$gap' =~ ^[0-9]+$ ]] && ((gap < 30))" "a resume of a finished run: no wait for its final line ($gap s after the trainer finished)"
timeout 60 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7" "${EVAL_ARGS[@]}" --resume --fold 2 >"$TMP/run7c.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'another choice now would validate on cases it trained on' '$TMP/run7c.out'" \
    "a resume with another --fold is refused (exit $rc)"
# the same folder without --resume: refused before anything starts (a fresh run there once mixed
# its checkpoints, best.ckpt and metrics.jsonl with the first run's)
timeout 60 bash pipelines/train.sh "$TMP/nosplit" "$TMP/run7" "${EVAL_ARGS[@]}" >"$TMP/run7f.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'run7 holds a run ([0-9]* checkpoint file(s), metrics.jsonl): --resume continues it' '$TMP/run7f.out' &&
       ! grep -q 'started exporter' '$TMP/run7f.out'" "a folder holding a run, without --resume: refused at once (exit $rc)"
# --loader-args that choose the cases win over the defaults (the declared validation split
# once went to the loader beside them, and beat their fold's validation cases)
timeout 300 bash pipelines/train.sh "$TMP/data" "$TMP/run11" "${EV_ARGS[@]}" --loader-args "--fold 1" >"$TMP/run11.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q '(fold1/train)' '$TMP/run11/logs/loader.log' && grep -q '(fold1/val)' '$TMP/run11/logs/loader.log'" \
    "--loader-args --fold 1: the loader trains and validates fold 1 (exit $rc)"
check "[[ \$(cat '$TMP/run11/cases.args') == --loader-args ]]" "--loader-args --fold 1: cases.args says the loader's arguments chose"

# a stage gone for good stops the run
start=$(date +%s)
timeout 300 bash pipelines/train.sh "$TMP/data" "$TMP/run3" "${ARGS[@]}" --norm bogus --restarts 1 >"$TMP/run3.out" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
check "[[ $rc == 1 ]] && ((took < 120))" "loader that cannot start: train.sh exits 1 (exit $rc after $took s)"
check "grep -q 'loader stopped for good: E: ' '$TMP/run3.out'" "loader that cannot start: its error is on the console"
check "! left run3" "loader that cannot start: no process left"
check "! ls '$TMP'/run3/spool/step-* '$TMP'/run3/checkpoints/step-* >/dev/null 2>&1" \
    "loader that cannot start: no step-0 checkpoint left (the trainer had trained nothing)"
# that run trained nothing: a resume may choose other cases (it once refused, naming cases it
# never trained on)
timeout 300 bash pipelines/train.sh "$TMP/data" "$TMP/run3" "${ARGS[@]}" --resume --fold 1 >"$TMP/run3b.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && ! grep -q 'another choice now would' '$TMP/run3b.out'" "a run that trained nothing resumes with another choice of cases (exit $rc)"
# the last augmenter gone for good (every one refuses its arguments) stops the run too; it once
# looped for ever, the dead augmenter never leaving the supervisor's list
start=$(date +%s)
timeout 120 bash pipelines/train.sh "$TMP/data" "$TMP/run8b" "${ARGS[@]}" --augmenters 2 --restarts 1 \
    --augmenter-args "--bogus 1" >"$TMP/run8b.out" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
check "[[ $rc == 1 ]] && grep -q 'augmenter-[01] stopped for good: E: ' '$TMP/run8b.out'" \
    "every augmenter gone: train.sh exits 1 with the reason (exit $rc after $took s)"
check "! left run8b" "every augmenter gone: no process left"
# a patch or batch given to one stage only (it would part the trainer from the augmenters):
# refused before anything starts, pointing at train.sh's own flags
timeout 60 bash pipelines/train.sh "$TMP/data" "$TMP/run8c" "${ARGS[@]}" --augmenter-args "--patch 16" >"$TMP/run8c.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q -- '--patch inside --trainer-args / --augmenter-args: give --patch / --batch to train.sh itself' '$TMP/run8c.out' &&
       ! grep -q 'started ' '$TMP/run8c.out'" "--patch inside --augmenter-args: refused at once (exit $rc)"
# an evaluator that cannot start (bad arguments: exit 78) stops the run; one that fails again
# and again otherwise leaves training going on without validation
timeout 120 bash pipelines/train.sh "$TMP/data" "$TMP/run9b" "${EV_ARGS[@]}" --overlap 1.5 \
    >"$TMP/run9b.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'evaluator stopped for good: E: evaluator: --overlap' '$TMP/run9b.out'" \
    "an evaluator with bad arguments stops the run (exit $rc)"
check "! grep -q 'restarting it' '$TMP/run9b.out'" "an evaluator with bad arguments is not restarted"
timeout 120 bash pipelines/train.sh "$TMP/data" "$TMP/run10" "${EV_ARGS[@]}" --restarts 1 \
    --evaluator-args "--dataset $TMP/no-such-dataset" --trainer-args "--final-eval-timeout 2" >"$TMP/run10.out" 2>&1
rc=$?
check "[[ $rc == 0 ]] && grep -q 'warning: the evaluator stopped for good' '$TMP/run10.out'" \
    "an evaluator failing again and again: training goes on without validation (exit $rc)"
check "[[ -e '$TMP/run10/checkpoints/latest.ckpt' ]]" "an evaluator failing again and again: the run's checkpoint is written"
timeout 60 bash pipelines/train.sh "$TMP/data" "$TMP/run4" "${ARGS[@]}" --augmenters 0 >"$TMP/run4.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'give at least 1' '$TMP/run4.out'" "--augmenters 0 is refused (exit $rc)"
check "! left run4" "--augmenters 0: no process started"
# a trainer whose batches never fit (--in-channels 2 against 1-channel augmenters) stops the run
# after --batch-timeout, with a few log lines, not one per dropped batch, and is not restarted
start=$(date +%s)
timeout 300 bash pipelines/train.sh "$TMP/data" "$TMP/run5" "${ARGS[@]}" --trainer-args "--in-channels 2 --batch-timeout 4" \
    >"$TMP/run5.out" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
drops=$(grep -c 'batch dropped' "$TMP/run5/logs/trainer.log" 2>/dev/null)
check "[[ $rc == 1 ]] && ((took < 120))" "batches that never fit: train.sh exits 1 (exit $rc after $took s)"
check "grep -q 'trainer stopped for good: E: trainer: for [0-9]* s every patch batch was dropped' '$TMP/run5.out'" \
    "batches that never fit: the reason is on the console"
check "((drops >= 10 && drops <= 15))" "batches that never fit: $drops 'batch dropped' lines (rate-limited)"
check "! grep -q 'restarting it with --resume' '$TMP/run5.out'" "batches that never fit: the trainer is not restarted"
check "! left run5" "batches that never fit: no process left"
# seeds the checkpoint cannot hold (>= 2^63, or past strtol's range) are refused, not saturated
"$BIN/srm-trainer" --seed 9223372036854775808 >"$TMP/seed.out" 2>&1; rc=$?
check "[[ $rc == 78 ]] && grep -q -- '--seed' '$TMP/seed.out'" "srm-trainer --seed 2^63: refused with exit 78 (exit $rc)"
"$BIN/srm-trainer" --seed 99999999999999999999 >"$TMP/seed.out" 2>&1; rc=$?
check "[[ $rc == 78 ]]" "srm-trainer --seed 1e20 (strtol saturates): refused (exit $rc)"
timeout 60 bash pipelines/train.sh "$TMP/data" "$TMP/run6" "${ARGS[@]}" --seed 9999999999999999 >"$TMP/run6.out" 2>&1
rc=$?
check "[[ $rc == 1 ]] && grep -q 'at most 15 digits' '$TMP/run6.out'" "train.sh --seed of 16 digits refused (exit $rc)"
if ((failed)); then for f in "$TMP"/run*.out; do echo "--- $f"; tail -n 12 "$f"; done; fi
check_summary
