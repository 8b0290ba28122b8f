#!/usr/bin/python3
"""test_predict.py -- pipelines/predict.sh and pipelines/evaluate.sh (srm-evaluator file mode).

On a tiny phantom dataset (scripts/make_phantoms.py, RAS and LPS cases) with a randomly
initialised tiny model (safetensors written by the safetensors_tool helper), checks with nibabel:
every prediction has its source image's dims and affine, uint8 labels within the classes;
--logits gives (X, Y, Z, K) float32 whose argmax is the label map; an LPS image and its RAS copy
(nibabel as_closest_canonical) give the same segmentation in world space; weights without our
metadata (as imported from elsewhere) load with model flags and fail clearly without them; a
corrupt image is named and skipped; a native checkpoint of the same weights predicts the same;
two images of one file name, or an output folder holding an input, are refused before any work;
the preprocessing settings a model file carries are applied without flags (== the same flags
given), flags override their parts, and weights without settings get a warning;
sigmoid regions (--regions) give region Dice lines that match a recomputation; a model file
carrying its training patch and regions is evaluated with them when no flag says otherwise;
evaluate.sh prints per-case Dice lines that equal Dice
recomputed here from the written label maps and the reference labels; references the scoring
cannot place (another class count declared, a label >= K, a label in no region) are refused;
nnU-Net's one file per channel (CASE_0000, CASE_0001) is one case, predicted as its 4D copy.
"""
import os, re, subprocess, sys, tempfile, json, struct

import numpy as np
import nibabel as nib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BUILD, BIN, check, summary

ENV = dict(os.environ, BIN=BIN, SRM_QUIET="1")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, **kw)


def strip_metadata(src, dst):
    """Rewrite a safetensors file without __metadata__ (like weights exported by PyTorch)."""
    raw = open(src, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    text = json.dumps(hdr).encode()
    text += b" " * (-len(text) % 8)
    open(dst, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def dice(p, r, c):
    a, b = (p == c).sum(), (r == c).sum()
    if a + b == 0:
        return None
    return 2.0 * ((p == c) & (r == c)).sum() / (a + b)


def main():
    for exe in (os.path.join(BIN, "srm-evaluator"), os.path.join(BUILD, "tools", "safetensors_tool"),
                os.path.join(BUILD, "tools", "ckpt_make")):
        if not os.access(exe, os.X_OK):
            print("FAIL missing", exe, "(build it first)")
            print("0 passed, 1 failed")
            return 1
    tmp = tempfile.mkdtemp(prefix="srm-predict-")
    ds = os.path.join(tmp, "ph")
    r = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make_phantoms.py"), ds,
             "--cases", "3", "--val", "1", "--size", "32"])
    check(r.returncode == 0, "make_phantoms: " + r.stderr)
    model = os.path.join(tmp, "tiny.safetensors")
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", model, "--variant", "M", "--width", "8",
             "--in-channels", "1", "--classes", "4", "--seed", "3"])
    check(r.returncode == 0, "safetensors_tool write: " + r.stderr)
    images = sorted(os.path.join(ds, "imagesTr", f) for f in os.listdir(os.path.join(ds, "imagesTr")))
    codes = [nib.aff2axcodes(nib.load(f).affine) for f in images]
    check(("L", "P", "S") in codes and ("R", "A", "S") in codes, "phantoms should include LPS and RAS cases: %s" % codes)
    predict = os.path.join(ROOT, "pipelines", "predict.sh")
    win = ["--window", "32"]

    # labels on each source grid
    out = os.path.join(tmp, "pred")
    r = run([predict, model, out] + images + win)
    check(r.returncode == 0, "predict.sh: rc %d %s" % (r.returncode, r.stderr[-2000:]))
    for f in images:
        name = os.path.basename(f)
        src, p = nib.load(f), os.path.join(out, name)
        if not os.path.exists(p):
            check(False, "no prediction for " + name)
            continue
        pr = nib.load(p)
        data = np.asarray(pr.dataobj)
        check(pr.shape == src.shape, "%s: shape %s, source %s" % (name, pr.shape, src.shape))
        check(np.allclose(pr.affine, src.affine, atol=1e-4), "%s: affine\n%s\nsource\n%s" % (name, pr.affine, src.affine))
        check(pr.get_data_dtype() == np.uint8, "%s: dtype %s" % (name, pr.get_data_dtype()))
        check(data.min() >= 0 and data.max() <= 3, "%s: labels outside [0, 3]" % name)

    # logits: (X, Y, Z, K) float32, argmax = the label map
    outl = os.path.join(tmp, "logits")
    r = run([predict, model, outl, images[0], "--logits"] + win)
    check(r.returncode == 0, "predict.sh --logits: " + r.stderr[-2000:])
    if r.returncode == 0:
        lg = nib.load(os.path.join(outl, os.path.basename(images[0])))
        src = nib.load(images[0])
        check(lg.shape == src.shape + (4,), "logits shape %s" % (lg.shape,))
        check(lg.get_data_dtype() == np.float32, "logits dtype %s" % lg.get_data_dtype())
        check(np.allclose(lg.affine, src.affine, atol=1e-4), "logits affine")
        lab = np.asarray(nib.load(os.path.join(out, os.path.basename(images[0]))).dataobj)
        check((np.asarray(lg.dataobj).argmax(-1) == lab).all(), "argmax of the logits differs from the label map")
        # outside the image's foreground box the background is certain (nnU-Net: probability 1
        # there), not a softmax of (1, 0, 0, 0) = 0.48
        x = np.asarray(src.dataobj)
        x = x if x.ndim == 3 else x[..., 0]
        body = np.argwhere(x != x.min())
        lo, hi = body.min(0), body.max(0)
        outside = np.ones(x.shape, bool)
        outside[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = False
        v = np.asarray(lg.dataobj)[outside]
        check(outside.any() and (v == np.float32([20, -20, -20, -20])).all(),
              "logits outside the foreground box: %d voxels, %d not (20, -20, -20, -20)"
              % (outside.sum(), (v != np.float32([20, -20, -20, -20])).any(-1).sum()))

    # orientation: an LPS image and its RAS copy segment identically in world space
    lps = images[codes.index(("L", "P", "S"))]
    ras_img = nib.as_closest_canonical(nib.load(lps))
    ras_path = os.path.join(tmp, "ras_copy.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(ras_img.dataobj), ras_img.affine), ras_path)
    outr = os.path.join(tmp, "pred_ras")
    r = run([predict, model, outr, ras_path] + win)
    check(r.returncode == 0, "predict.sh RAS copy: " + r.stderr[-2000:])
    if r.returncode == 0:
        a = nib.as_closest_canonical(nib.load(os.path.join(out, os.path.basename(lps))))
        b = nib.load(os.path.join(outr, "ras_copy.nii.gz"))
        check(np.allclose(a.affine, b.affine, atol=1e-4), "RAS copy: affines differ")
        same = (np.asarray(a.dataobj) == np.asarray(b.dataobj)).mean()
        check(same == 1.0, "LPS prediction reoriented vs prediction of the RAS copy: %.4f of voxels agree" % same)
        check(len(np.unique(np.asarray(b.dataobj))) > 1, "the random model predicts a single class: weak test")

    # weights without metadata (trained elsewhere): flags give the configuration
    bare = os.path.join(tmp, "bare.safetensors")
    strip_metadata(model, bare)
    outb = os.path.join(tmp, "pred_bare")
    r = run([predict, bare, outb, images[0], "--variant", "M", "--width", "8", "--classes", "4"] + win)
    check(r.returncode == 0, "metadata-less weights with flags: " + r.stderr[-2000:])
    if r.returncode == 0:
        x = np.asarray(nib.load(os.path.join(outb, os.path.basename(images[0]))).dataobj)
        y = np.asarray(nib.load(os.path.join(out, os.path.basename(images[0]))).dataobj)
        check((x == y).all(), "metadata-less import predicts differently")
    r = run([predict, bare, os.path.join(tmp, "pred_bad"), images[0]] + win)
    check(r.returncode == 1 and "bare.safetensors" in r.stderr, "metadata-less weights without flags: rc %d %s" % (r.returncode, r.stderr[-500:]))

    # a native checkpoint (ckpt_make: same init seed) segments exactly like the safetensors export
    ckpt = os.path.join(tmp, "tiny.ckpt")
    r = run([os.path.join(BUILD, "tools", "ckpt_make"), ckpt, "--width", "8", "--classes", "4", "--seed", "3"])
    check(r.returncode == 0, "ckpt_make: " + r.stderr)
    outk = os.path.join(tmp, "pred_ckpt")
    r = run([predict, ckpt, outk, images[0]] + win)
    check(r.returncode == 0, "predict.sh with a native checkpoint: " + r.stderr[-2000:])
    if r.returncode == 0:
        x = np.asarray(nib.load(os.path.join(outk, os.path.basename(images[0]))).dataobj)
        y = np.asarray(nib.load(os.path.join(out, os.path.basename(images[0]))).dataobj)
        check((x == y).all(), "native checkpoint predicts differently from its safetensors twin")

    # the preprocessing the model was trained with travels in its file and is applied without
    # flags: a model carrying "CT window, 2 mm" predicts exactly as the same weights without
    # settings given --norm ct:-175,250 --spacing 2,2,2; flags override the settings' parts; and
    # weights without settings are predicted with a warning that says so
    settings = {"version": 1, "modality": ["CT"], "reorient": 1, "spacing": [2, 2, 2],
                "foreground": {"mode": "auto", "threshold": -500}, "crop": 1, "margin": [0, 0, 0],
                "ct": {"norm": "window", "window": [-175, 250], "range": [0, 1], "zscore": [0, 1]},
                "mr": {"norm": "zscore-fg"}}
    sfile = os.path.join(tmp, "settings.json")
    json.dump(settings, open(sfile, "w"))
    ctmodel = os.path.join(tmp, "ct.safetensors")
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", ctmodel, "--variant", "M", "--width", "8",
             "--in-channels", "1", "--classes", "4", "--seed", "3", "--preprocessing", sfile])
    check(r.returncode == 0, "safetensors_tool write --preprocessing: " + r.stderr)
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "prep", ctmodel])
    check(r.returncode == 0 and json.loads(r.stdout) == settings, "settings in the metadata: " + r.stdout + r.stderr)
    name = os.path.basename(images[0])

    def pred(m, d, *flags):
        res = run([predict, m, os.path.join(tmp, d), images[0]] + list(flags) + win)
        check(res.returncode == 0, "predict.sh %s %s: %s" % (d, flags, res.stderr[-1000:]))
        return res, (np.asarray(nib.load(os.path.join(tmp, d, name)).dataobj) if res.returncode == 0 else None)
    _, a = pred(ctmodel, "p_settings")
    loud = dict(ENV)
    loud.pop("SRM_QUIET")
    r_ct = subprocess.run([predict, ctmodel, os.path.join(tmp, "p_loud"), images[0]] + win, capture_output=True,
                          text=True, env=loud, timeout=300)
    check(r_ct.returncode == 0 and "preprocessing as trained" in r_ct.stderr, "the settings are reported: " + r_ct.stderr[-600:])
    r_fl, b = pred(model, "p_flags", "--norm", "ct:-175,250", "--spacing", "2,2,2")
    check("carries no preprocessing settings" not in r_fl.stderr, "no warning when both flags are given")
    check(a is not None and b is not None and (a == b).all(), "settings from the model == the same flags given")
    _, c = pred(model, "p_mr_2mm", "--spacing", "2,2,2")
    check(a is not None and c is not None and (a != c).any(), "CT settings differ from the MR default (weak test)")
    _, d = pred(ctmodel, "p_override", "--norm", "mr-fg")
    check(c is not None and d is not None and (c == d).all(), "--norm overrides the settings' normalisation only")
    r_plain = run([predict, model, os.path.join(tmp, "p_plain"), images[0]] + win)
    check(r_plain.returncode == 0 and "carries no preprocessing settings" in r_plain.stderr,
          "weights without settings: warned (%s)" % r_plain.stderr[-600:])

    # a corrupt image is named and skipped; the others are written
    bad = os.path.join(tmp, "broken.nii.gz")
    open(bad, "wb").write(open(images[0], "rb").read()[:300])
    outc = os.path.join(tmp, "pred_corrupt")
    r = run([predict, model, outc, bad, images[1]] + win)
    check(r.returncode == 2 and "broken" in r.stderr, "corrupt image: rc %d %s" % (r.returncode, r.stderr[-500:]))
    check(os.path.exists(os.path.join(outc, os.path.basename(images[1]))), "good image after a corrupt one not written")

    # outputs that would collide are refused before any work: two images of one file name in
    # different folders (KiTS' case_*/imaging.nii.gz), and an output folder holding the image
    kits = os.path.join(tmp, "kits")
    for i in (0, 1):
        os.makedirs(os.path.join(kits, "case_%d" % i))
        subprocess.run(["cp", images[i], os.path.join(kits, "case_%d" % i, "imaging.nii.gz")], check=True)
    twins = [os.path.join(kits, "case_%d" % i, "imaging.nii.gz") for i in (0, 1)]
    outk2 = os.path.join(tmp, "pred_kits")
    r = run([predict, model, outk2] + twins + win)
    check(r.returncode == 1 and twins[0] in r.stderr and twins[1] in r.stderr and "both be written" in r.stderr,
          "two images of one file name: rc %d %s" % (r.returncode, r.stderr[-500:]))
    check(not os.listdir(outk2), "two images of one file name: something was written: %s" % os.listdir(outk2))
    src = twins[0]
    before = open(src, "rb").read()
    r = run([predict, model, os.path.dirname(src), src] + win)
    check(r.returncode == 1 and "is this input file" in r.stderr and src in r.stderr,
          "output folder holding the image: rc %d %s" % (r.returncode, r.stderr[-500:]))
    check(open(src, "rb").read() == before, "the source image was changed")
    # the same image name in its own folder is fine when the output goes elsewhere
    r = run([predict, model, outk2, twins[0]] + win)
    check(r.returncode == 0 and os.path.exists(os.path.join(outk2, "imaging.nii.gz")), "one KiTS-style image: " + r.stderr[-500:])

    # evaluate.sh: Dice lines equal Dice recomputed from the written maps
    oute = os.path.join(tmp, "eval")
    r = run([os.path.join(ROOT, "pipelines", "evaluate.sh"), model, ds, "--split", "all", "--out", oute] + win)
    check(r.returncode == 0, "evaluate.sh: " + r.stderr[-2000:])
    lines = [l for l in r.stdout.splitlines() if l.startswith("case ")]
    check(len(lines) == 3 and re.search(r"^mean \(3 of 3 cases\): dice 1=", r.stdout, re.M), "evaluate.sh output:\n" + r.stdout)
    for l in lines:
        m = re.match(r"case (\S+): dice 1=(\S+) 2=(\S+) 3=(\S+) mean=(\S+) hd95 ", l)
        check(m is not None, "line format: " + l)
        if not m:
            continue
        cid = m.group(1)
        pred = np.asarray(nib.load(os.path.join(oute, cid + ".nii.gz")).dataobj)
        ref = np.asarray(nib.load(os.path.join(ds, "labelsTr", cid + ".nii.gz")).dataobj).astype(np.uint8)
        want = [dice(pred, ref, c) for c in (1, 2, 3)]
        got = [None if g == "null" else float(g) for g in m.groups()[1:4]]
        ok = all((w is None and g is None) or (w is not None and g is not None and abs(w - g) < 1e-4) for w, g in zip(want, got))
        check(ok, "%s: printed Dice %s, recomputed %s" % (cid, got, want))
    # sigmoid regions (BraTS style): a 3-output model, labels rebuilt by the region rule
    rmodel = os.path.join(tmp, "regions.safetensors")
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", rmodel, "--variant", "M", "--width", "8",
             "--in-channels", "1", "--classes", "3", "--seed", "4"])
    check(r.returncode == 0, "safetensors_tool write (regions): " + r.stderr)
    outg = os.path.join(tmp, "eval_regions")
    regions = {"WT": (1, 2, 3), "TC": (1, 2), "ET": (2,)}
    r = run([os.path.join(ROOT, "pipelines", "evaluate.sh"), rmodel, ds, "--split", "validation", "--out", outg,
             "--regions", "WT=1,2,3;TC=1,2;ET=2", "--no-hd95"] + win)
    check(r.returncode == 0, "evaluate.sh --regions: " + r.stderr[-2000:])
    for l in [l for l in r.stdout.splitlines() if l.startswith("case ")]:
        m = re.match(r"case (\S+): dice WT=(\S+) TC=(\S+) ET=(\S+) mean=", l)
        check(m is not None, "regions line format: " + l)
        if not m:
            continue
        pred = np.asarray(nib.load(os.path.join(outg, m.group(1) + ".nii.gz")).dataobj)
        ref = np.asarray(nib.load(os.path.join(ds, "labelsTr", m.group(1) + ".nii.gz")).dataobj).astype(np.uint8)
        check(set(np.unique(pred)) <= {0, 1, 2, 3}, "region labels %s (WT-TC -> 3, TC-ET -> 1, ET -> 2)" % np.unique(pred))
        for (name, vals), g in zip(regions.items(), m.groups()[1:]):
            a, b = np.isin(pred, vals), np.isin(ref, vals)
            want = None if a.sum() + b.sum() == 0 else 2.0 * (a & b).sum() / (a.sum() + b.sum())
            got = None if g == "null" else float(g)
            check((want is None and got is None) or (want is not None and got is not None and abs(want - got) < 1e-4),
                  "%s region %s: printed %s, recomputed %s" % (m.group(1), name, got, want))

    # a model file that says how it was trained ("training" in its settings, as srm-trainer writes
    # them): its patch is the default window and its regions decode its sigmoid outputs, so
    # evaluate.sh / predict.sh without --window / --regions do what the pipeline's evaluator did
    tsettings = {"version": 1, "modality": ["MR"], "reorient": 1, "spacing": [0, 0, 0],
                 "foreground": {"mode": "auto", "threshold": -500}, "crop": 1, "margin": [0, 0, 0],
                 "ct": {"norm": "window", "window": [-175, 250], "range": [0, 1], "zscore": [0, 1]},
                 "mr": {"norm": "zscore-fg"},
                 "training": {"patch": [32, 32, 32], "loss": "sigmoid-dice", "regions": "WT=1,2,3;TC=1,2;ET=2"}}
    tfile = os.path.join(tmp, "training_settings.json")
    json.dump(tsettings, open(tfile, "w"))
    tmodel = os.path.join(tmp, "regions_trained.safetensors")
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", tmodel, "--variant", "M", "--width", "8",
             "--in-channels", "1", "--classes", "3", "--seed", "4", "--preprocessing", tfile])
    check(r.returncode == 0, "safetensors_tool write (training settings): " + r.stderr)
    outa, outb = os.path.join(tmp, "eval_trained_a"), os.path.join(tmp, "eval_trained_b")
    ra = subprocess.run([os.path.join(ROOT, "pipelines", "evaluate.sh"), tmodel, ds, "--split", "validation", "--out", outa,
                         "--no-hd95"], capture_output=True, text=True, timeout=300,
                        env={k: v for k, v in ENV.items() if k != "SRM_QUIET"})
    rb = run([os.path.join(ROOT, "pipelines", "evaluate.sh"), tmodel, ds, "--split", "validation", "--out", outb, "--no-hd95",
              "--regions", "WT=1,2,3;TC=1,2;ET=2"] + win)
    check(ra.returncode == 0 and "window 32x32x32: the training patch" in ra.stderr and
          "regions WT=1,2,3;TC=1,2;ET=2 the model was trained on" in ra.stderr,
          "the model file's training patch and regions are used without flags: " + ra.stderr[-1500:])
    check(rb.returncode == 0 and "the training patch" not in rb.stderr, "flags given: " + rb.stderr[-800:])
    la = [l for l in ra.stdout.splitlines() if l.startswith("case ")]
    check(la and la == [l for l in rb.stdout.splitlines() if l.startswith("case ")] and all(" dice WT=" in l for l in la),
          "the same region scores as with --regions --window 32: %s" % la)
    for f in sorted(os.listdir(outb)) if os.path.isdir(outb) else []:
        a = np.asarray(nib.load(os.path.join(outa, f)).dataobj) if os.path.exists(os.path.join(outa, f)) else None
        check(a is not None and (a == np.asarray(nib.load(os.path.join(outb, f)).dataobj)).all(),
              "%s: the prediction differs from the one with --regions --window 32" % f)

    # references the scoring has no place for are refused, not scored as background: a dataset
    # declaring another class count than the model's, a label file holding a value >= K, and
    # with --regions a label in no region (each message names the file)
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", os.path.join(tmp, "k5.safetensors"),
             "--variant", "M", "--width", "8", "--in-channels", "1", "--classes", "5", "--seed", "5"])
    check(r.returncode == 0, "safetensors_tool write (5 classes): " + r.stderr)
    outm = os.path.join(tmp, "eval_k5")
    r = run([os.path.join(ROOT, "pipelines", "evaluate.sh"), os.path.join(tmp, "k5.safetensors"), ds, "--split", "all",
             "--out", outm] + win)
    check(r.returncode == 1 and "declares 4 classes" in r.stderr and "k5.safetensors has 5" in r.stderr,
          "5-class model on a 4-class dataset: rc %d %s" % (r.returncode, r.stderr[-500:]))
    check(not os.path.exists(outm) or not os.listdir(outm), "5-class model on a 4-class dataset: something was written")
    labels = [os.path.join(ds, "labelsTr", os.path.basename(f)) for f in images[:2]]
    lab7 = os.path.join(tmp, "lab7.nii.gz")
    ref0 = nib.load(labels[0])
    arr = np.asarray(ref0.dataobj).astype(np.uint8)
    check((arr == 3).any(), "phantom label 0 holds no class 3: weak test")
    arr[arr == 3] = 7
    nib.save(nib.Nifti1Image(arr, ref0.affine, ref0.header), lab7)
    outl = os.path.join(tmp, "pred_lab7")
    r = run([predict, model, outl, images[0], images[1], "--labels", lab7, labels[1]] + win)
    check(r.returncode == 2 and lab7 in r.stderr and "holds label 7" in r.stderr and "4 classes" in r.stderr,
          "label 7 for a 4-class model: rc %d %s" % (r.returncode, r.stderr[-800:]))
    case1 = os.path.basename(images[1]).replace(".nii.gz", "")
    check(re.search(r"^case %s: dice 1=" % re.escape(case1), r.stdout, re.M) is not None,
          "the other case is still scored:\n" + r.stdout)
    r = run([predict, rmodel, os.path.join(tmp, "pred_reg"), images[1], "--labels", labels[1],
             "--regions", "WT=1,2,4;TC=1,4;ET=4"] + win)
    # regions that overlap without nesting cannot be shown by a label map: refused
    rn = run([predict, rmodel, os.path.join(tmp, "pred_nn"), images[1], "--regions", "A=1,2;B=2,4;C=4"] + win)
    check(rn.returncode != 0 and "A and B overlap without one holding the other" in rn.stderr,
          "non-nested regions refused: rc %d %s" % (rn.returncode, rn.stderr[-400:]))
    # label 3 in no region: background for every region, as the training takes it (nnU-Net's rule)
    m = re.search(r"^case %s: dice WT=(\S+)" % re.escape(case1), r.stdout, re.M)
    pred = os.path.join(tmp, "pred_reg", case1 + ".nii.gz")
    if r.returncode == 0 and m and os.path.exists(pred):
        ref, got = np.asarray(nib.load(labels[1]).dataobj), np.asarray(nib.load(pred).dataobj)
        a, b = np.isin(got, [1, 2, 4]), np.isin(ref, [1, 2, 4])
        want = 2 * (a & b).sum() / (a.sum() + b.sum())
        check(abs(float(m.group(1)) - want) < 1e-4, "label 3 in no region: WT Dice %s, numpy %.5f" % (m.group(1), want))
    else:
        check(False, "label 3 in no region: scored as background (rc %d) %s %s" % (r.returncode, r.stdout[-400:], r.stderr[-400:]))
    # a blank scan (one value everywhere) is segmented, not refused: not cropped, normalised to 0,
    # warned; the label map is written on its grid
    blank = os.path.join(tmp, "blank.nii.gz")
    nib.save(nib.Nifti1Image(np.full(ref0.shape, 100, np.int16), ref0.affine), blank)
    r = run([predict, model, os.path.join(tmp, "pred_blank"), blank] + win)
    pb = os.path.join(tmp, "pred_blank", "blank.nii.gz")
    check(r.returncode == 0 and "blank image (no foreground)" in r.stderr and os.path.exists(pb) and
          nib.load(pb).shape == ref0.shape, "a blank scan: segmented with a warning: rc %d %s" % (r.returncode, r.stderr[-500:]))
    # a 2D image (header dim[0] = 2) gets a 2D label map: the same shape, as nibabel reads both
    twod = os.path.join(tmp, "twod.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(ref0.dataobj)[:, :, 5].astype(np.float32) * 50 + 10, ref0.affine), twod)
    r = run([predict, model, os.path.join(tmp, "pred_2d"), twod] + win)
    p2 = os.path.join(tmp, "pred_2d", "twod.nii.gz")
    check(r.returncode == 0 and os.path.exists(p2) and nib.load(p2).shape == nib.load(twod).shape,
          "a 2D image: a 2D label map of its shape: rc %d %s %s" % (r.returncode, nib.load(p2).shape if os.path.exists(p2) else "-",
                                                                 r.stderr[-300:]))
    # a window far larger than the host can run: refused naming the window (it died in an
    # allocation of 400+ GB); on a host with that much memory the check has nothing to refuse
    if os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") < 300e9:
        r = run([predict, model, os.path.join(tmp, "pred_huge"), images[0], "--window", "1024"])
        check(r.returncode != 0 and "window 1024x1024x1024" in r.stderr and "give a smaller --window" in r.stderr,
              "a window too large for the host: refused naming it: rc %d %s" % (r.returncode, r.stderr[-300:]))
    # an empty reference: every HD95 undefined, still printed (null) so the line keeps its fields,
    # and the missed / invented structures left out of the mean HD95 are counted on stderr
    lab0 = os.path.join(tmp, "lab_empty.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(ref0.shape, np.uint8), ref0.affine, ref0.header), lab0)
    r = run([predict, model, os.path.join(tmp, "pred_empty"), images[0], "--labels", lab0] + win)
    line = [l for l in r.stdout.splitlines() if l.startswith("case ")]
    check(r.returncode == 0 and len(line) == 1 and line[0].endswith("hd95 1=null 2=null 3=null"),
          "empty reference: rc %d %s" % (r.returncode, r.stdout))
    check(re.search(r"hd95 \d: 1 of 1 cases have one mask empty", r.stderr) is not None,
          "empty reference: the left-out HD95 is not reported: " + r.stderr[-600:])

    # nnU-Net's one file per channel: CASE_0000 / CASE_0001 make case CASE, predicted as the same
    # image stored 4D; a channel missing, or a single-channel file for a 2-channel model, named
    r = run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", os.path.join(tmp, "c2.safetensors"),
             "--variant", "M", "--width", "8", "--in-channels", "2", "--classes", "4", "--seed", "6"])
    check(r.returncode == 0, "safetensors_tool write (2 channels): " + r.stderr)
    m2 = os.path.join(tmp, "c2.safetensors")
    chd = os.path.join(tmp, "chan")
    os.makedirs(chd)
    files, stacked = [], []
    for i in (0, 1):
        img = nib.load(images[i])
        a = np.asarray(img.dataobj).astype(np.float32)
        b = np.sqrt(np.abs(a)) + 0.25 * a[::-1, :, :]
        for c, x in enumerate((a, b)):
            f = os.path.join(chd, "pt%d_%04d.nii.gz" % (i, c))
            nib.save(nib.Nifti1Image(x, img.affine), f)
            files.append(f)
        nib.save(nib.Nifti1Image(np.stack([a, b], -1), img.affine), os.path.join(chd, "pt%d.nii.gz" % i))
        stacked.append(os.path.join(chd, "pt%d.nii.gz" % i))
    outs, out4 = os.path.join(tmp, "pred_chan"), os.path.join(tmp, "pred_4d")
    # channel files given out of order: _0001 before _0000
    r = run([predict, m2, outs, files[1], files[0], files[3], files[2]] + win)
    check(r.returncode == 0 and sorted(os.listdir(outs)) == ["pt0.nii.gz", "pt1.nii.gz"],
          "channel files: rc %d %s %s" % (r.returncode, os.listdir(outs) if os.path.isdir(outs) else "", r.stderr[-800:]))
    r4 = run([predict, m2, out4] + stacked + win)
    check(r4.returncode == 0, "4D copies: " + r4.stderr[-800:])
    for i in (0, 1):
        pa, pb = os.path.join(outs, "pt%d.nii.gz" % i), os.path.join(out4, "pt%d.nii.gz" % i)
        if os.path.exists(pa) and os.path.exists(pb):
            x, y = np.asarray(nib.load(pa).dataobj), np.asarray(nib.load(pb).dataobj)
            check((x == y).all(), "pt%d: channel files and the 4D copy predict differently" % i)
            check(len(np.unique(x)) > 1, "pt%d: the random 2-channel model predicts one class: weak test" % i)
    # one channel file written with its folder another way (./x beside x, or absolute beside
    # relative): still one case
    rel = os.path.relpath(files[1], os.getcwd())
    outw = os.path.join(tmp, "pred_paths")
    r = run([predict, m2, outw, os.path.join(chd, ".", os.path.basename(files[0])), rel] + win)
    check(r.returncode == 0 and os.listdir(outw) == ["pt0.nii.gz"],
          "channel files named with their folder written two ways: rc %d %s" % (r.returncode, r.stderr[-500:]))
    gap = os.path.join(chd, "pt0_0002.nii.gz")
    subprocess.run(["cp", files[1], gap], check=True)
    r = run([predict, m2, os.path.join(tmp, "pred_gap"), files[0], gap] + win)
    check(r.returncode == 1 and files[0] in r.stderr and "has no channel 0001" in r.stderr,
          "a channel file missing: rc %d %s" % (r.returncode, r.stderr[-500:]))
    # a 4D image beside channel files: each is a case (pt0 from its files, pt1's 4D copy)
    outm = os.path.join(tmp, "pred_mixed")
    r = run([predict, m2, outm, files[0], stacked[1], files[1]] + win)
    check(r.returncode == 0 and sorted(os.listdir(outm)) == ["pt0.nii.gz", "pt1.nii.gz"],
          "channel files beside a 4D image: rc %d %s" % (r.returncode, r.stderr[-500:]))
    # _DDDD names that are not channel files: for a 1-channel model a series img_0000, img_0001
    # stays two cases, and a lone patient_0003 is a case of its own (with any model)
    ser = [os.path.join(chd, n) for n in ("img_0000.nii.gz", "img_0001.nii.gz", "patient_0003.nii.gz")]
    for f, src_img in zip(ser, (images[0], images[1], images[0])):
        subprocess.run(["cp", src_img, f], check=True)
    outser = os.path.join(tmp, "pred_series")
    r = run([predict, model, outser] + ser + win)
    check(r.returncode == 0 and sorted(os.listdir(outser)) == ["img_0000.nii.gz", "img_0001.nii.gz", "patient_0003.nii.gz"],
          "a numbered series for a 1-channel model: rc %d %s %s" % (r.returncode, os.listdir(outser) if os.path.isdir(outser) else "", r.stderr[-500:]))
    # a lone CASE_0000 for a 1-channel model is case CASE, as nnU-Net names its prediction
    lone = os.path.join(chd, "liver_7_0000.nii.gz")
    subprocess.run(["cp", images[0], lone], check=True)
    outlone = os.path.join(tmp, "pred_lone")
    r = run([predict, model, outlone, lone] + win)
    check(r.returncode == 0 and os.listdir(outlone) == ["liver_7.nii.gz"],
          "a lone CASE_0000 for a 1-channel model: rc %d %s %s" % (r.returncode, os.listdir(outlone) if os.path.isdir(outlone) else "", r.stderr[-500:]))
    r = run([predict, m2, os.path.join(tmp, "pred_one"), images[0]] + win)
    check(r.returncode == 1 and images[0] in r.stderr and "the model takes 2" in r.stderr and "CASE_0000" in r.stderr,
          "a 1-channel image for a 2-channel model: rc %d %s" % (r.returncode, r.stderr[-500:]))
    r = run([predict, m2, os.path.join(tmp, "pred_labn"), files[0], files[1], "--labels", labels[0], labels[1]] + win)
    check(r.returncode == 1 and "2 files for 1 cases" in r.stderr, "labels per case: rc %d %s" % (r.returncode, r.stderr[-500:]))
    status = summary()
    if status == 0:
        subprocess.run(["rm", "-rf", tmp])
    return status


if __name__ == "__main__":
    sys.exit(main())
