#!/usr/bin/python3
"""test_spacing_plan.py -- srm-inspect --dataset DIR --spacing (preprocess_plan.c), the target
spacing `train.sh --spacing auto` uses.

The plan is recomputed here from the NIfTI files with nibabel and numpy, following nnU-Net's
ExperimentPlanner.determine_fullres_target_spacing: for every labelled non-test case its spacing
after reorientation to RAS (nibabel's as_closest_canonical) and its shape after nnU-Net's
crop_to_nonzero (the box of the voxels non-zero in any channel, holes filled), then the
median spacing per axis (np.percentile 50) -- unless the coarsest median axis is over 3x the
other spacings and under a third of the other extents, when that axis takes np.percentile 10 of
its spacings, lifted to the largest other spacing + 1e-5 when below it. Checked on the shared
CT, BraTS and mri-tumour-3 (thick-slice: nnU-Net's 0.78125, 0.78125, 2.98) datasets and on made
datasets for each branch of the rule: isotropic medians, the 10th percentile kept, and lifted.
"""
import glob, json, os, subprocess, sys, tempfile

import numpy as np
import nibabel as nib
from scipy.ndimage import binary_fill_holes
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BIN, check, summary

INSPECT = os.path.join(BIN, "srm-inspect")


def inspect(ds):
    r = subprocess.run([INSPECT, "--dataset", ds, "--spacing"], capture_output=True, text=True, timeout=600)
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr


def cropped_shape(images):
    mask = None
    for path in images:
        img = nib.as_closest_canonical(nib.load(path))
        x = np.asarray(img.dataobj, np.float64)
        chans = [x[..., c] for c in range(x.shape[3])] if x.ndim == 4 else [x]
        for c in chans:
            mask = (c != 0) if mask is None else mask | (c != 0)
    mask = binary_fill_holes(mask)
    idx = np.argwhere(mask)
    return (idx.max(0) - idx.min(0) + 1) if idx.size else np.array(mask.shape), img.header.get_zooms()[:3]


def expected(cases):
    """cases: list of image path lists (one per labelled non-test case)."""
    shapes, spacings = zip(*(cropped_shape(imgs) for imgs in cases))
    sp, sh = np.array(spacings, np.float64), np.array(shapes, np.float64)
    target, size = np.percentile(sp, 50, 0), np.percentile(sh, 50, 0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > 3 * max(target[i] for i in others) and size[worst] * 3 < min(size[i] for i in others):
        t = np.percentile(sp[:, worst], 10)
        mx = max(target[i] for i in others)
        if t < mx:
            t = max(mx, t) + 1e-5
        target[worst] = t
        return target, worst, np.percentile(sp, 50, 0), size
    return target, -1, target, size


def compare(name, ds, cases):
    rc, got, err = inspect(ds)
    check(rc == 0, f"{name}: exit {rc}: {err}")
    if rc:
        return None
    target, axis, med, size = expected(cases)
    check(got["cases"] == len(cases), f"{name}: {got['cases']} cases, expected {len(cases)}")
    check(np.allclose(got["median_spacing"], med, rtol=1e-6), f"{name}: median spacing {got['median_spacing']} != {med}")
    check(np.allclose(got["median_shape_after_crop"], size), f"{name}: median shape {got['median_shape_after_crop']} != {size}")
    check(got["thick_slice_axis"] == axis, f"{name}: thick-slice axis {got['thick_slice_axis']} != {axis}")
    check(np.allclose(got["target_spacing"], target, rtol=1e-6, atol=1e-9), f"{name}: target {got['target_spacing']} != {target}")
    check(np.allclose([float(v) for v in got["spacing_arg"].split(",")], target, rtol=1e-7),
          f"{name}: spacing_arg {got['spacing_arg']} != {target}")
    return got


def shared(ds_name):
    root = next((d for d in (os.path.join(ROOT, "..", "shared", "data"), "/work/shared/data") if os.path.isdir(d)), None)
    if root is None:
        check(False, "shared data not found")
        return None
    ds = os.path.join(root, ds_name)
    meta = json.load(open(os.path.join(ds, "dataset.json")))
    if "training" in meta:
        names = meta["modality"]
        cases = [[os.path.join(ds, e["image"])] for e in meta["training"]]
    else:
        names = meta["channel_names"]
        test = set(meta.get("split", {}).get("test", []))
        ids = [os.path.basename(p)[:-len(".nii.gz")] for p in sorted(glob.glob(os.path.join(ds, "labelsTr", "*.nii.gz")))]
        cases = [[os.path.join(ds, "imagesTr", f"{i}_{c:04d}.nii.gz") for c in range(len(names))] for i in ids if i not in test]
    return compare(ds_name, ds, cases)


def made(tmp, name, z_spacings, shape=(48, 44, 10)):
    """A one-channel MR dataset: a case per z spacing, in-plane 1.0 x 0.9 mm, a box of body."""
    ds = os.path.join(tmp, name)
    os.makedirs(os.path.join(ds, "imagesTr"))
    os.makedirs(os.path.join(ds, "labelsTr"))
    cases = []
    for k, z in enumerate(z_spacings):
        img = np.zeros(shape, np.float32)
        img[4:40, 3:40, 1:9] = 100 + k
        lab = (img > 0).astype(np.uint8)
        aff = np.diag([1.0, 0.9, z, 1.0])
        nib.save(nib.Nifti1Image(img, aff), os.path.join(ds, "imagesTr", f"c{k}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), os.path.join(ds, "labelsTr", f"c{k}.nii.gz"))
        cases.append([os.path.join(ds, "imagesTr", f"c{k}_0000.nii.gz")])
    json.dump({"channel_names": {"0": "T2"}, "labels": {"background": 0, "x": 1}, "numTraining": len(z_spacings),
               "file_ending": ".nii.gz"}, open(os.path.join(ds, "dataset.json"), "w"))
    return compare(name, ds, cases)


got = shared("mri-tumour-3")
if got:
    check(np.allclose(got["target_spacing"], [0.78125, 0.78125, 2.98], atol=1e-6) and got["thick_slice_axis"] == 2,
          f"mri-tumour-3: nnU-Net's 0.78125, 0.78125, 2.98 with the thick-slice rule: {got['target_spacing']}")
shared("brats2013-6")
shared("abdomen-ct-btcv13")
with tempfile.TemporaryDirectory() as tmp:
    g = made(tmp, "kept", [4.0, 5.0, 6.0, 1.2, 5.0])        # 10th percentile 2.32 stays
    check(g is not None and abs(g["target_spacing"][2] - 2.32) < 1e-6, f"kept: z {g and g['target_spacing']}")
    g = made(tmp, "lifted", [0.2, 0.3, 5.0, 5.0, 6.0])      # 10th percentile 0.24 lifted to 1 + 1e-5
    check(g is not None and abs(g["target_spacing"][2] - 1.00001) < 1e-6, f"lifted: z {g and g['target_spacing']}")
    g = made(tmp, "plain", [1.1, 1.0, 1.2], shape=(30, 28, 26))   # no thick slices: the medians
    check(g is not None and g["thick_slice_axis"] == -1, f"plain: {g}")
    r = subprocess.run([INSPECT, "--dataset", os.path.join(tmp, "nowhere"), "--spacing"], capture_output=True, text=True)
    check(r.returncode == 1 and "nowhere" in r.stderr, f"a missing dataset: exit {r.returncode}, {r.stderr.strip()}")
summary()
