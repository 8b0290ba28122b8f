#!/usr/bin/env bash
# test_train_pipeline.sh -- the CI bar of issue 6: pipelines/train.sh on a small synthetic
# dataset (4 phantoms, 1 for validation) with the tiny model for a few CPU steps must leave
#   - checkpoints whose .sha256 sidecars match sha256sum, latest pointing at the last step,
#   - metrics.jsonl lines from the trainer (loss, lr, ...) and the evaluator (Dice),
#   - a prediction per validation case whose NIfTI affine and dims equal the source image's,
#   - a safetensors export that an independent reader (json + struct) parses, with the names
#     and shapes of `srm-trainer --describe --preset tiny`,
#   - the loader's preprocessing settings (RUN/preprocessing.json, the phantoms' MR channel) in
#     that export's __metadata__ and in the native checkpoint, so predict.sh applies them,
# and no process running afterwards (pgrep -f on the run directory).
set -u
source "$(dirname "$0")/../pipeline_test.sh"
pipeline_test_setup trainpipe 4 1 11 exporter loader augmenter trainer evaluator

STEPS=4
start=$(date +%s)
timeout 400 bash pipelines/train.sh "$TMP/data" "$TMP/run" --preset tiny --patch 32 --batch 1 --steps $STEPS \
    --ckpt-every 2 --augmenters 1 --seed 3 --lr 1e-3 >"$TMP/train.out" 2>&1
rc=$?
echo "train.sh exited $rc after $(( $(date +%s) - start )) s"
if [[ $rc != 0 ]]; then
    tail -n 20 "$TMP/train.out"
    for f in "$TMP"/run/logs/*.log; do echo "--- $f"; tail -n 8 "$f"; done
fi
"$BIN/srm-trainer" --describe --preset tiny --classes 4 --in-channels 1 >"$TMP/describe.txt" ||
    echo "FAIL: srm-trainer --describe"

/usr/bin/python3 - "$TMP" "$rc" "$STEPS" <<'EOF'
import glob, hashlib, json, os, struct, subprocess, sys
import nibabel as nib
import numpy as np

tmp, rc, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
run, data = os.path.join(tmp, "run"), os.path.join(tmp, "data")
passed = failed = 0

def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print("ok  ", what)
    else:
        failed += 1
        print("FAIL", what)

check(rc == 0, "train.sh exits 0")

# checkpoints + sidecars
ck = os.path.join(run, "checkpoints")
files = sorted(glob.glob(os.path.join(ck, "step-*.ckpt")) + glob.glob(os.path.join(ck, "step-*.safetensors")))
check(os.path.exists(os.path.join(ck, "step-%08d.ckpt" % steps)), "final checkpoint step-%08d.ckpt exists" % steps)
check(len(files) >= 2, "checkpoints and safetensors exports written (%d files)" % len(files))
for f in files:
    side = f + ".sha256"
    ok = os.path.exists(side)
    if ok:
        r = subprocess.run(["sha256sum", "-c", os.path.basename(side)], cwd=ck, capture_output=True, text=True)
        ok = r.returncode == 0
    check(ok, "sha256sum -c %s" % os.path.basename(side))
latest = os.path.join(ck, "latest.ckpt")
check(os.path.exists(latest) and os.path.basename(os.path.realpath(latest)) == "step-%08d.ckpt" % steps,
      "latest.ckpt -> the last step")

# metrics
rows = []
try:
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
except Exception as e:
    print("metrics.jsonl:", e)
tr = [r for r in rows if r.get("source") == "trainer"]
ev = [r for r in rows if r.get("source") == "evaluator"]
check(tr and all(isinstance(r.get("loss"), float) and r.get("lr", 0) > 0 and "data_wait" in r for r in tr),
      "trainer metrics lines (loss, lr, data_wait): %d" % len(tr))
check(tr and max(r["step"] for r in tr) == steps, "trainer reported the last step")
check(any(r["step"] == steps and isinstance(r.get("mean_dice"), float) for r in ev),
      "evaluator metrics with mean_dice at the last step")

# predictions on the source grid
meta = json.load(open(os.path.join(data, "dataset.json")))
val = meta["split"]["validation"]
for cid in val:
    p = os.path.join(run, "predictions", cid + ".nii.gz")
    if not os.path.exists(p):
        check(False, "prediction %s exists" % cid)
        continue
    src, pred = nib.load(os.path.join(data, "imagesTr", cid + ".nii.gz")), nib.load(p)
    check(pred.shape == src.shape, "prediction %s dims %s == source %s" % (cid, pred.shape, src.shape))
    check(np.allclose(pred.affine, src.affine, atol=1e-4), "prediction %s affine == source affine" % cid)
    lab = np.asarray(pred.dataobj)
    check(lab.min() >= 0 and lab.max() < 4, "prediction %s labels within 0..3" % cid)

# safetensors, read with nothing but json + struct
want = {}
for line in open(os.path.join(tmp, "describe.txt")):
    name, _, shape = line.strip().partition(" ")
    if name != "parameters":
        want[name] = json.loads(shape)
st = os.path.join(ck, "step-%08d.safetensors" % steps)
try:
    raw = open(st, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    contiguous = spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) \
        and spans[-1][1] == len(raw) - 8 - n
    sizes_ok = all(v["dtype"] == "F32" and (e - b) == 4 * int(np.prod(v["shape"] or [1]))
                   for (b, e, k), v in ((s, header[s[2]]) for s in spans))
    check(contiguous and sizes_ok, "safetensors: %d tensors tile the data buffer" % len(header))
    got = {k: v["shape"] for k, v in header.items()}
    check(got == want, "safetensors names and shapes == srm-trainer --describe (%d tensors)" % len(want))
    finite = all(np.isfinite(np.frombuffer(raw[8 + n + b:8 + n + e], "<f4")).all() for b, e, _ in spans)
    check(finite, "safetensors values finite")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    written = json.load(open(os.path.join(run, "preprocessing.json")))
    carried = json.loads(meta.get("preprocessing", "{}"))
    training = carried.pop("training", None)
    check(carried == written and written["modality"] == ["MR"] and
          training == {"patch": [32, 32, 32], "loss": "dice", "regions": ""},
          "safetensors __metadata__ carries the loader's preprocessing settings and the training's patch, loss and "
          "regions: %s" % meta.get("preprocessing"))
    ckraw = open(os.path.join(ck, "step-%08d.ckpt" % steps), "rb").read()
    np_ = struct.unpack("<I", ckraw[92:96])[0]
    check(ckraw[8] == 2 and ckraw[96:96 + np_].decode() == meta.get("preprocessing"),
          "the native checkpoint carries them too (version 2)")
except Exception as e:
    check(False, "safetensors parses: %s" % e)

# nothing left running
r = subprocess.run(["pgrep", "-f", run + "/"], capture_output=True, text=True)
check(r.returncode == 1, "no process left (pgrep -f %s/: %s)" % (run, r.stdout.split()))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
EOF
