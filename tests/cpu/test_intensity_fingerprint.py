#!/usr/bin/python3
"""test_intensity_fingerprint.py -- srm-inspect --dataset DIR --intensities (dataset_intensity.c).

Each channel's foreground fingerprint is recomputed here with numpy from the NIfTI files --
nnU-Net's equal weight for every labelled non-test case: its F foreground voxels (the
floor(k F / cap)-th in C order when F > cap = max(10000, 1e7 / cases)) each weighing 1 / (their
count); weighted mean, population std, min, max, and the 0.5 / 99.5 percentiles interpolated at
the weights' cumulative midpoints -- and compared, on the shared CT and MR datasets (BTCV's 0.5
percentile must be nnU-Net's -160 HU within 2, not the -113 that 10,000 samples a case gave)
and on a made nnU-Net dataset whose cases exercise the rules: a case of 30 voxels (weighing as
much as one of 9000), a case without
foreground (counted, no samples), a test case (left out), an unreadable case (left out, named
on stderr). "ct_norm" must be the ct-z setting of a one-channel CT dataset, null (with the
reason) with two CT channels, a CT and an MR channel, or none; no foreground anywhere is an
error naming the dataset.
"""
import glob, json, os, subprocess, sys, tempfile

import numpy as np
import nibabel as nib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BIN, check, summary

INSPECT = os.path.join(BIN, "srm-inspect")
POOL, MIN_PER_CASE = 10_000_000, 10000


def inspect(ds):
    r = subprocess.run([INSPECT, "--dataset", ds, "--intensities"], capture_output=True, text=True, timeout=300)
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr


def expected(pairs, ch, labelled=None):
    """numpy fingerprint of channel ch over (image path list, label path) pairs; labelled: the
    labelled non-test cases the cap divides among (default: the pairs)."""
    pooled, weights, cases, empty = [], [], 0, 0
    cap = max(MIN_PER_CASE, POOL // (labelled or len(pairs)))
    for images, label in pairs:
        lab = np.asarray(nib.load(label).get_fdata())
        img = nib.load(images[ch] if len(images) > 1 else images[0]).get_fdata()
        if img.ndim == 4:
            img = img[..., ch]
        fg = img[lab > 0]            # C order over (i, j, k): k fastest, as the reader stores it
        if fg.size == 0:
            empty += 1
            continue
        cases += 1
        take = min(fg.size, cap)
        pooled.append(fg[(np.arange(take) * fg.size) // take])
        weights.append(np.full(take, np.float32(1) / np.float32(take), np.float32))
    v = np.concatenate(pooled).astype(np.float32).astype(np.float64)
    w = np.concatenate(weights).astype(np.float64)
    mean = np.sum(w * v) / w.sum()
    order = np.argsort(v, kind="stable")
    vs, ws = v[order], w[order]
    mid = np.cumsum(ws) - 0.5 * ws
    return dict(cases=cases, cases_without_foreground=empty, samples=v.size, mean=mean,
                std=np.sqrt(np.sum(w * (v - mean) ** 2) / w.sum()), min=v.min(), max=v.max(),
                percentile_00_5=np.interp(0.005 * w.sum(), mid, vs), percentile_99_5=np.interp(0.995 * w.sum(), mid, vs))


def compare(name, got, want):
    for k, w in want.items():
        g = got.get(k)
        ok = g is not None and abs(g - w) <= 1e-6 * max(abs(w), 1.0)
        check(ok, f"{name}: {k} {g} != {w}")


def shared(ds_name):
    root = next((d for d in (os.path.join(ROOT, "..", "shared", "data"), "/work/shared/data") if os.path.isdir(d)), None)
    if root is None:
        check(False, "shared data not found")
        return
    ds = os.path.join(root, ds_name)
    meta = json.load(open(os.path.join(ds, "dataset.json")))
    if "training" in meta:                          # MSD: one (3D or 4D) file a case
        names = meta["modality"]
        pairs = [([os.path.join(ds, e["image"])], os.path.join(ds, e["label"])) for e in meta["training"]]
    else:                                           # nnU-Net v2: CASE_XXXX files, "split" test cases left out
        names = meta["channel_names"]
        test = set(meta.get("split", {}).get("test", []))
        labels = sorted(glob.glob(os.path.join(ds, "labelsTr", "*.nii.gz")))
        ids = [os.path.basename(p)[:-len(".nii.gz")] for p in labels]
        pairs = [([os.path.join(ds, "imagesTr", f"{i}_{c:04d}.nii.gz") for c in range(len(names))], p)
                 for i, p in zip(ids, labels) if i not in test]
    rc, got, err = inspect(ds)
    check(rc == 0, f"{ds_name}: exit {rc}: {err}")
    if rc:
        return
    nch = len(names)
    check(len(got["channels"]) == nch, f"{ds_name}: {len(got['channels'])} channels, expected {nch}")
    for ch in range(min(nch, len(got["channels"]))):
        compare(f"{ds_name} channel {ch}", got["channels"][ch], expected(pairs, ch))
    if ds_name == "abdomen-ct-btcv13":
        c = got["channels"][0]
        check(abs(c["percentile_00_5"] - -160) <= 2 and abs(c["percentile_99_5"] - 78) <= 2 and abs(c["std"] - 58.44) < 0.5,
              f"BTCV: nnU-Net's figures (p0.5 -160, p99.5 78, std 58.44 HU): {c}")
    want_norm = [m.upper() for m in names.values()] == ["CT"]
    check((got["ct_norm"] is not None) == want_norm, f"{ds_name}: ct_norm {got['ct_norm']}")
    if got["ct_norm"]:
        c = got["channels"][0]
        vals = [float(x) for x in got["ct_norm"][len("ct-z:"):].split(",")]
        want = [c["mean"], c["std"], c["percentile_00_5"], c["percentile_99_5"]]
        check(np.allclose(vals, want, rtol=1e-7), f"{ds_name}: ct_norm {vals} != {want}")


def made_dataset(tmp, channel_names, broken=True):
    """nnU-Net v2 layout: case a (large foreground), b (30 voxels: fewer than the samples),
    c (no foreground), t (a test case with a label), x (a truncated image file)."""
    ds = os.path.join(tmp, "ds%d" % len(os.listdir(tmp)))
    os.makedirs(os.path.join(ds, "imagesTr"))
    os.makedirs(os.path.join(ds, "labelsTr"))
    rng = np.random.RandomState(7)
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    shape = (40, 36, 20)
    pairs = []
    cases = {"a": 9000, "b": 30, "c": 0, "t": 500} | ({"x": 100} if broken else {})
    for cid, nfg in cases.items():
        lab = np.zeros(shape, np.uint8)
        lab.flat[rng.choice(lab.size, nfg, replace=False)] = rng.randint(1, 3, nfg) if nfg else []
        nib.save(nib.Nifti1Image(lab, aff), os.path.join(ds, "labelsTr", cid + ".nii.gz"))
        imgs = []
        for ch in range(len(channel_names)):
            img = (rng.normal(40 + 100 * ch, 80, shape) + 300 * (lab > 0)).astype(np.float32)
            p = os.path.join(ds, "imagesTr", f"{cid}_{ch:04d}.nii.gz")
            nib.save(nib.Nifti1Image(img, aff), p)
            if cid == "x":
                raw = open(p, "rb").read()
                open(p, "wb").write(raw[: len(raw) // 2])
            imgs.append(p)
        if cid not in ("t", "x"):
            pairs.append((imgs, os.path.join(ds, "labelsTr", cid + ".nii.gz")))
    json.dump({"channel_names": {str(i): n for i, n in enumerate(channel_names)},
               "labels": {"background": 0, "one": 1, "two": 2}, "numTraining": len(cases),
               "file_ending": ".nii.gz", "split": {"test": ["t"]}}, open(os.path.join(ds, "dataset.json"), "w"))
    return ds, pairs


def made(tmp):
    ds, pairs = made_dataset(tmp, ["CT"])
    rc, got, err = inspect(ds)
    check(rc == 0, f"made CT dataset: exit {rc}: {err}")
    if rc == 0:
        c = got["channels"][0]
        compare("made CT dataset", c, expected(pairs, 0, labelled=4))
        check(c["cases_unreadable"] == 1 and "x_0000" in err, f"unreadable case: {c['cases_unreadable']}, stderr {err!r}")
        check(c["samples"] == 9030, f"samples {c['samples']}: a and b give their 9000 and 30 voxels")
        check(got["ct_norm"] and got["ct_norm"].startswith("ct-z:"), f"ct_norm {got['ct_norm']}")
    ds, pairs = made_dataset(tmp, ["CT", "MR"], broken=False)
    rc, got, err = inspect(ds)
    check(rc == 0 and len(got["channels"]) == 2, f"CT + MR: exit {rc}: {err}")
    if rc == 0:
        compare("CT + MR channel 1", got["channels"][1], expected(pairs, 1, labelled=3))
        # --norm sets every channel's normalisation: CT figures must not reach the MR channel
        check(got["ct_norm"] is None and "not every channel is CT" in got["ct_norm_why_not"]
              and got["channels"][1]["modality"] == "MR", f"CT + MR: ct_norm should be null: {got['ct_norm']}")
    ds, _ = made_dataset(tmp, ["CT", "CT"], broken=False)
    rc, got, err = inspect(ds)
    check(rc == 0 and got["ct_norm"] is None, f"two CT channels: ct_norm should be null: {got and got['ct_norm']}")
    ds, _ = made_dataset(tmp, ["T2"], broken=False)
    rc, got, err = inspect(ds)
    check(rc == 0 and got["ct_norm"] is None, f"no CT channel: ct_norm should be null: {got and got['ct_norm']}")
    # no foreground anywhere: an error naming the dataset
    ds, _ = made_dataset(tmp, ["CT"], broken=False)
    for p in glob.glob(os.path.join(ds, "labelsTr", "*.nii.gz")):
        img = nib.load(p)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), p)
    rc, got, err = inspect(ds)
    check(rc == 1 and ds in err and "no foreground" in err, f"no foreground: exit {rc}, stderr {err!r}")


def main():
    shared("abdomen-ct-btcv13")
    shared("brats2013-6")
    with tempfile.TemporaryDirectory() as tmp:
        made(tmp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
