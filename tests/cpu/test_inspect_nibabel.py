#!/usr/bin/python3
"""test_inspect_nibabel.py -- bin/srm-inspect agrees with nibabel on every real and generated volume.

For each image and label under the shared data (abdomen-ct-btcv13, brats2013-6, mri-tumour-3) and
each file of tests/corpus/good, srm-inspect's JSON is compared with nibabel: dims, channels,
spacing (affine column norms) and pixdim, datatype, affine (1e-4; nibabel's scaled to mm for a header
in metres or microns, as ITK reads it) and the header's unit name, axis codes (aff2axcodes),
ras_affine and ras_dims (as_closest_canonical), min/max/mean of get_fdata (1e-3 relative), and for
label files the value -> voxel count table. One line per file, then "N passed, N failed".
"""
import glob
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BIN", "bin")
INSPECT = os.path.join(REPO, BIN) if not os.path.isabs(BIN) else BIN
INSPECT = os.path.join(INSPECT, "srm-inspect")


def data_root():
    for d in (os.path.join(REPO, "..", "shared", "data"), "/work/shared/data"):
        if os.path.isdir(d):
            return d
    return None


def volumes():
    files = []
    root = data_root()
    if root:
        for ds in ("abdomen-ct-btcv13", "brats2013-6", "mri-tumour-3"):
            for sub in ("imagesTr", "labelsTr"):
                files += sorted(f for f in glob.glob(os.path.join(root, ds, sub, "*.nii*"))
                                if not os.path.basename(f).startswith("."))
    files += sorted(glob.glob(os.path.join(REPO, "tests", "corpus", "good", "*.nii*")))
    return files


def close(a, b, rel):
    """|a - b| <= rel * max(|b|, 1) -- relative, with an absolute floor for values near zero."""
    return abs(a - b) <= rel * max(abs(b), 1.0)


def compare(path):
    """Returns a list of problems (empty when srm-inspect agrees with nibabel)."""
    is_label = "labelsTr" in path or "label" in os.path.basename(path)
    cmd = [INSPECT, path] + (["--labels"] if is_label else [])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        return [f"srm-inspect exit {run.returncode}: {run.stderr.strip()}"]
    got = json.loads(run.stdout)
    img = nib.load(path)
    hdr = img.header
    data = img.get_fdata(dtype=np.float64)
    unit = hdr.get_xyzt_units()[0]
    to_mm = {"meter": 1e3, "micron": 1e-3}.get(unit, 1.0)
    aff = np.vstack([img.affine[:3] * to_mm, img.affine[3:]])
    ras = nib.as_closest_canonical(img)
    ras_aff = np.vstack([ras.affine[:3] * to_mm, ras.affine[3:]])
    bad = []
    if got["units"] != unit:
        bad.append(f"units {got['units']} != {unit}")
    if got["dims"] != list(img.shape[:3]):
        bad.append(f"dims {got['dims']} != {img.shape[:3]}")
    channels = img.shape[3] if img.ndim == 4 else 1
    if got["channels"] != channels:
        bad.append(f"channels {got['channels']} != {channels}")
    if not np.allclose(got["spacing"], np.linalg.norm(aff[:3, :3], axis=0), rtol=1e-6, atol=1e-6):
        bad.append(f"spacing {got['spacing']} != {np.linalg.norm(aff[:3, :3], axis=0)}")
    if not np.allclose(got["pixdim"], hdr.get_zooms()[:3], rtol=1e-6, atol=1e-6):
        bad.append(f"pixdim {got['pixdim']} != {hdr.get_zooms()[:3]}")
    if got["datatype"] != img.get_data_dtype().name:
        bad.append(f"datatype {got['datatype']} != {img.get_data_dtype().name}")
    if not np.allclose(got["affine"], aff, rtol=0, atol=1e-4):
        bad.append(f"affine differs by {np.abs(np.array(got['affine']) - aff).max():.3g}")
    codes = "".join(nib.aff2axcodes(aff))
    if got["orientation"] != codes:
        bad.append(f"orientation {got['orientation']} != {codes}")
    if not np.allclose(got["ras_affine"], ras_aff, rtol=0, atol=1e-4):
        bad.append(f"ras_affine differs by {np.abs(np.array(got['ras_affine']) - ras_aff).max():.3g}")
    if got["ras_dims"] != list(ras.shape[:3]):
        bad.append(f"ras_dims {got['ras_dims']} != {ras.shape[:3]}")
    for key, want in (("min", data.min()), ("max", data.max()), ("mean", data.mean())):
        if not close(got[key], float(want), 1e-3):
            bad.append(f"{key} {got[key]} != {want}")
    if is_label:
        vals, counts = np.unique(data, return_counts=True)
        want = {(str(int(v)) if v == int(v) else repr(float(v))): int(c) for v, c in zip(vals, counts)}
        if got["labels"] != want:
            bad.append(f"labels {got['labels']} != {want}")
    return bad


def main():
    if not os.access(INSPECT, os.X_OK):
        print(f"FAIL {INSPECT} not built")
        print("0 passed, 1 failed")
        return 1
    files = volumes()
    passed = failed = 0
    for f in files:
        try:
            bad = compare(f)
        except Exception as e:  # a crash of the comparison is a failure of this file
            bad = [f"{type(e).__name__}: {e}"]
        name = os.path.relpath(f, REPO) if f.startswith(REPO) else f
        if bad:
            failed += 1
            print(f"FAIL {name}: " + "; ".join(bad))
        else:
            passed += 1
            print(f"ok   {name}")
    if data_root() is None:
        print("FAIL shared data not found (../shared/data or /work/shared/data)")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
