#!/usr/bin/python3
"""test_predict_nnunet.py -- nnU-Net's inference habits in srm-evaluator's file mode.

An ensemble (predict.sh MODEL_A,MODEL_B ...; srm-evaluator --model A B): the written logits are
the mean of each model's own logits, and the labels their argmax; members that disagree on
classes or on the preprocessing they were trained with are refused, naming the file.
Test-time mirroring (--mirror): with it, segmenting a mirrored image gives the mirrored logits of
the image (the 8 passes make the whole prediction equivariant to flips); without it the random
model does not, so the check can fail. Both through evaluate.sh too.
--continue (nnU-Net's --continue_prediction): a predict.sh killed part way is finished by the
same command with --continue, leaving the predictions already written as they are and giving
what a clean run gives; evaluate.sh --continue scores kept label maps as it scored them; a kept
file that is no label map of the image's grid is named.
--keep-largest (nnU-Net's remove_all_but_largest_component, MONAI's KeepLargestConnectedComponent):
the label map equals scipy.ndimage.label's largest 26-connected component per chosen class of
the plain prediction, other classes untouched.
"""
import json, os, shutil, subprocess, sys, tempfile, time

import numpy as np
import nibabel as nib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BUILD, BIN, check, summary

ENV = dict(os.environ, BIN=BIN, SRM_QUIET="1")
PREDICT = os.path.join(ROOT, "pipelines", "predict.sh")
EVALUATE = os.path.join(ROOT, "pipelines", "evaluate.sh")


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def write_model(path, classes, seed, settings=None):
    cmd = [os.path.join(BUILD, "tools", "safetensors_tool"), "write", path, "--variant", "M", "--width", "8",
           "--in-channels", "1", "--classes", str(classes), "--seed", str(seed)]
    if settings:
        cmd += ["--preprocessing", settings]
    r = run(cmd)
    check(r.returncode == 0, "safetensors_tool write %s: %s" % (path, r.stderr))


def logits(out, name):
    return np.asarray(nib.load(os.path.join(out, name)).dataobj, dtype=np.float64)


def main():
    tmp = tempfile.mkdtemp(prefix="srm-ens-")
    ds = os.path.join(tmp, "ph")
    r = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make_phantoms.py"), ds, "--cases", "5", "--val", "1",
             "--size", "32"])
    check(r.returncode == 0, "make_phantoms: " + r.stderr)
    a, b, c3 = (os.path.join(tmp, n) for n in ("a.safetensors", "b.safetensors", "c3.safetensors"))
    write_model(a, 4, 3)
    write_model(b, 4, 4)
    write_model(c3, 3, 5)
    image = sorted(os.path.join(ds, "imagesTr", f) for f in os.listdir(os.path.join(ds, "imagesTr")))[0]
    name = os.path.basename(image)
    flags = ["--window", "32", "--spacing", "none", "--norm", "mr-all", "--logits"]

    # the ensemble's logits are the mean of its members' (on the source grid, after resampling
    # back: linear, so the mean commutes with it up to rounding), its labels their argmax
    outs = {}
    for tag, m in (("a", a), ("b", b), ("ab", a + "," + b)):
        outs[tag] = os.path.join(tmp, "p_" + tag)
        r = run([PREDICT, m, outs[tag], image] + flags)
        check(r.returncode == 0, "predict.sh %s: rc %d %s" % (tag, r.returncode, r.stderr[-800:]))
    la, lb, lab = (logits(outs[t], name) for t in ("a", "b", "ab"))
    diff = np.abs(lab - (la + lb) / 2).max()
    check(diff < 1e-4 * max(1.0, np.abs(la).max()), "ensemble logits = mean of the members' (largest difference %.3g)" % diff)
    check(np.abs(la - lb).max() > 1e-2, "the two members differ (else the ensemble check is void)")
    r = run([PREDICT, a + "," + b, os.path.join(tmp, "p_ab_labels"), image, "--window", "32", "--spacing", "none",
             "--norm", "mr-all"])
    lbl = np.asarray(nib.load(os.path.join(tmp, "p_ab_labels", name)).dataobj)
    check(r.returncode == 0 and (lbl == np.argmax(lab, axis=-1)).all(), "ensemble labels = argmax of the mean logits")
    loud = dict(ENV)
    loud.pop("SRM_QUIET")
    r = subprocess.run([PREDICT, a + "," + b, os.path.join(tmp, "p_loud"), image] + flags, capture_output=True,
                       text=True, env=loud, timeout=600)
    check("an ensemble of 2 models: their logits averaged" in r.stderr, "the ensemble is said: " + r.stderr[-400:])

    # members that cannot be averaged: another class count, other training preprocessing
    r = run([PREDICT, a + "," + c3, os.path.join(tmp, "p_bad"), image] + flags)
    check(r.returncode == 1 and c3 in r.stderr and "no ensemble" in r.stderr,
          "members of 4 and 3 classes: refused naming the file (rc %d: %s)" % (r.returncode, r.stderr.strip()[-300:]))
    settings = {"version": 1, "modality": ["MR"], "reorient": 1, "spacing": [2, 2, 2],
                "foreground": {"mode": "auto", "threshold": 0}, "crop": 1, "margin": [0, 0, 0],
                "ct": {"norm": "window", "window": [-175, 250], "range": [0, 1], "zscore": [0, 1]},
                "mr": {"norm": "zscore-fg"}}
    sfile = os.path.join(tmp, "settings.json")
    json.dump(settings, open(sfile, "w"))
    ap = os.path.join(tmp, "a_prep.safetensors")
    write_model(ap, 4, 3, sfile)
    r = run([PREDICT, a + "," + ap, os.path.join(tmp, "p_bad2"), image] + flags)
    check(r.returncode == 1 and ap in r.stderr and "other preprocessing" in r.stderr,
          "members trained with other preprocessing: refused (rc %d: %s)" % (r.returncode, r.stderr.strip()[-300:]))
    r = run([PREDICT, a + "," + os.path.join(tmp, "none.safetensors"), os.path.join(tmp, "p_bad3"), image] + flags)
    check(r.returncode == 1 and "none.safetensors: no such model file" in r.stderr, "a missing member is named")

    # mirroring: the prediction of a mirrored image is the mirrored prediction (all voxels
    # nonzero: the foreground crop keeps the whole 32^3, one window, nothing asymmetric)
    rng = np.random.RandomState(5)
    vol = (rng.normal(size=(32, 32, 32)) + 4.0).astype(np.float32)
    vol[8:20, 10:26, 4:14] += 3.0
    orig, flip = os.path.join(tmp, "orig.nii.gz"), os.path.join(tmp, "flip.nii.gz")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), orig)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol[::-1, :, ::-1]), np.eye(4)), flip)
    for mirror in (True, False):
        tag = "m" if mirror else "plain"
        out = os.path.join(tmp, "p_" + tag)
        r = run([PREDICT, a, out, orig, flip] + flags + (["--mirror"] if mirror else []))
        check(r.returncode == 0, "predict.sh %s: %s" % (tag, r.stderr[-600:]))
        if r.returncode:
            continue
        lo, lf = logits(out, "orig.nii.gz"), logits(out, "flip.nii.gz")
        d = np.abs(lf - lo[::-1, :, ::-1]).max()
        # the GPU host's way to check the same (tests/tools/nifti_compare: no nibabel there)
        r = run([os.path.join(BUILD, "tools", "nifti_compare"), os.path.join(out, "flip.nii.gz"),
                 os.path.join(out, "orig.nii.gz"), "--flip", "0,2"])
        tool = json.loads(r.stdout) if r.returncode == 0 else {}
        check(abs(tool.get("max_abs", -1) - d) <= 1e-6 * max(1.0, d) and tool.get("values") == lo.size,
              "nifti_compare --flip agrees with numpy: %s against %.6g" % (tool, d))
        if mirror:
            check(d < 1e-4 * max(1.0, np.abs(lo).max()), "--mirror: a mirrored image's logits are mirrored (largest difference %.3g)" % d)
        else:
            check(d > 1e-3, "without --mirror the random model is not flip-equivariant (difference %.3g): the check above can fail" % d)

    # --continue: kill predict.sh once its first prediction is on disk, then finish the job
    imgs = sorted(os.path.join(ds, "imagesTr", f) for f in os.listdir(os.path.join(ds, "imagesTr")))
    pf = ["--window", "32"]
    clean, part = os.path.join(tmp, "p_clean"), os.path.join(tmp, "p_part")
    r = run([PREDICT, a, clean] + imgs + pf)
    check(r.returncode == 0 and len(os.listdir(clean)) == len(imgs), "clean run: rc %d %s" % (r.returncode, r.stderr[-300:]))
    p = subprocess.Popen([PREDICT, a, part] + imgs + pf, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    def finished(d):      # predictions written (not a writer's STEM.tmpPID.nii.gz)
        return sorted(f for f in os.listdir(d) if f.endswith(".nii.gz") and ".tmp" not in f) if os.path.isdir(d) else []
    while time.time() < deadline and not finished(part):
        time.sleep(0.02)
    p.kill()
    p.wait()
    done = finished(part)
    # a writer killed mid-file leaves its temporary file (as one killed at any moment may)
    gone = subprocess.Popen(["true"])
    gone.wait()
    junk = os.path.join(part, "%s.tmp%d.nii.gz" % (done[-1][:-7], gone.pid)) if done else None
    if junk:                                # (one untouched for a minute: no writer on any host)
        subprocess.run(["cp", os.path.join(part, done[-1]), junk], check=True)
        os.utime(junk, (time.time() - 120, time.time() - 120))
    stamps = {f: os.stat(os.path.join(part, f)).st_mtime_ns for f in done}
    r = run([PREDICT, a, part] + imgs + pf + ["--continue"])
    again = {f: os.stat(os.path.join(part, f)).st_mtime_ns for f in done if os.path.exists(os.path.join(part, f))}
    same = all((np.asarray(nib.load(os.path.join(part, f)).dataobj) == np.asarray(nib.load(os.path.join(clean, f)).dataobj)).all()
               for f in os.listdir(clean))
    check(r.returncode == 0 and sorted(os.listdir(part)) == sorted(os.listdir(clean)) and same and again == stamps,
          "killed after %d of %d predictions, --continue finishes the job: the same files as a clean run, the "
          "first ones untouched, a killed writer's temporary file gone (rc %d: %s; %s)" % (len(done), len(imgs), r.returncode,
                                                                                  r.stderr[-300:], sorted(os.listdir(part))))
    check(0 < len(done) < len(imgs), "the kill came after the first prediction, before the last (%d of %d)" % (len(done), len(imgs)))
    # --deterministic (the GPU's engine choice fixed) is taken, and on the CPU changes nothing
    r = run([PREDICT, a, os.path.join(tmp, "p_det"), imgs[0]] + pf + ["--deterministic"])
    n0 = os.path.basename(imgs[0])
    check(r.returncode == 0 and (np.asarray(nib.load(os.path.join(tmp, "p_det", n0)).dataobj) ==
                                 np.asarray(nib.load(os.path.join(clean, n0)).dataobj)).all(), "--deterministic: %s" % r.stderr[-200:])
    # evaluate.sh --continue scores the kept label maps as the first run scored them
    ev = os.path.join(tmp, "ev")
    r1 = run([EVALUATE, a, ds, "--split", "all", "--out", ev, "--window", "32", "--no-hd95"])
    r2 = run([EVALUATE, a, ds, "--split", "all", "--out", ev, "--window", "32", "--no-hd95", "--continue"])
    l1 = [l for l in r1.stdout.splitlines() if l.startswith(("case ", "mean"))]
    l2 = [l for l in r2.stdout.splitlines() if l.startswith(("case ", "mean"))]
    check(r1.returncode == 0 and r2.returncode == 0 and l1 == l2 and len(l1) >= 3,
          "evaluate.sh --continue: the kept predictions scored as before\n%s\n%s" % (l1, l2))
    # a kept file that is no label map of the case's grid: named, the case failed
    victim = sorted(f for f in os.listdir(ev))[0]
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), os.path.join(ev, victim))
    r3 = run([EVALUATE, a, ds, "--split", "all", "--out", ev, "--window", "32", "--no-hd95", "--continue"])
    check(r3.returncode == 2 and "--continue: the kept prediction: " in r3.stderr and victim in r3.stderr,
          "a kept file on another grid: the case named as failed (rc %d: %s)" % (r3.returncode, r3.stderr[-400:]))
    # a case without a reference (a "test" entry, as nnU-Net's imagesTs) listed last is predicted and
    # counted apart; the mean line keeps every class's column (it once took the columns from the
    # last case: none)
    dst = os.path.join(tmp, "ph_ts")
    shutil.copytree(ds, dst)
    meta = json.load(open(os.path.join(dst, "dataset.json")))
    meta["test"] = [meta["training"][0]["image"]]
    meta["training"] = meta["training"][1:]
    meta["numTraining"] = len(meta["training"])
    meta.pop("split", None)
    json.dump(meta, open(os.path.join(dst, "dataset.json"), "w"))
    r = run([EVALUATE, a, dst, "--split", "all", "--window", "32", "--no-hd95"])
    mean = [l for l in r.stdout.splitlines() if l.startswith("mean")]
    check(r.returncode == 0 and len(mean) == 1 and "1 without a reference" in mean[0] and " 1=" in mean[0] and
          " 3=" in mean[0], "a case without a reference listed last: the mean line keeps the class columns: %s %s"
          % (mean, r.stderr[-300:]))
    r = run([PREDICT, a, part] + imgs[:1] + pf + ["--continue", "--logits", "--labels", imgs[0]])
    check(r.returncode != 0 and "--continue with --logits" in r.stderr, "--continue --logits with references: refused")

    # --keep-largest against scipy: the plain prediction, each chosen class cut to its largest
    # 26-connected component (the first in C order among equals, as nnU-Net's max over labels)
    from scipy import ndimage

    def largest_only(lab, classes):
        out = lab.copy()
        for c in classes:
            comp, n = ndimage.label(lab == c, structure=np.ones((3, 3, 3)))
            if n > 1:
                sizes = np.bincount(comp.ravel())[1:]
                out[(comp > 0) & (comp != 1 + int(np.argmax(sizes)))] = 0
        return out
    kl = os.path.join(tmp, "p_keep")
    plain = np.asarray(nib.load(os.path.join(clean, name)).dataobj)
    frag = [c for c in range(1, 4) if ndimage.label(plain == c, structure=np.ones((3, 3, 3)))[1] > 1]
    check(len(frag) >= 1, "the random model's prediction has a class in pieces (%s): else the check is weak" % frag)
    for arg, classes in (("all", [1, 2, 3]), (",".join(map(str, frag[:1])), frag[:1])):
        r = run([PREDICT, a, kl, image, "--window", "32", "--keep-largest", arg])
        got = np.asarray(nib.load(os.path.join(kl, name)).dataobj) if r.returncode == 0 else None
        check(got is not None and (got == largest_only(plain, classes)).all() and (got != plain).any(),
              "--keep-largest %s: scipy's largest component of each class (rc %d %s)" % (arg, r.returncode, r.stderr[-300:]))
    r = run([PREDICT, a, kl, image, "--window", "32", "--keep-largest", "0,2"])
    check(r.returncode == 1 and "--keep-largest: '0,2'" in r.stderr, "--keep-largest 0,2: refused (background is no class to cut)")

    # evaluate.sh takes both: an ensemble, mirrored, scored on the phantom dataset's validation case
    r = run([EVALUATE, a + "," + b, ds, "--window", "32", "--mirror", "--no-hd95"])
    lines = [l for l in r.stdout.splitlines() if l.startswith("case ")]
    check(r.returncode == 0 and len(lines) == 1, "evaluate.sh with a mirrored ensemble: rc %d %s %s" % (
        r.returncode, r.stdout[-300:], r.stderr[-300:]))
    subprocess.run(["rm", "-rf", tmp])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
