#!/usr/bin/python3
"""test_metrics_scipy.py -- common/metrics.h's Dice and HD95 against an independent numpy/scipy
implementation of MONAI's definitions (compute_dice; compute_hausdorff_distance with
percentile=95: edges = mask XOR binary_erosion(mask), scipy distance_transform_edt with the voxel
spacing, numpy.percentile linear), through tests/tools/metrics_eval on NIfTI files:
  - the real CT label map of shared/data/abdomen-ct-btcv13 (ct_small, 13 classes) against a
    perturbed copy (shifted, one class dilated, one removed, one eroded) on an anisotropic grid,
  - random blob masks with anisotropic spacing.
"""
import json, os, shutil, subprocess, sys, tempfile
import numpy as np
import nibabel as nib
from scipy import ndimage
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import check, summary

BUILD = os.environ.get("BUILD", "build")
TOOL = os.path.join(BUILD, "tools", "metrics_eval")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")
if not os.path.isdir(DATA):                  # a checkout whose shared/ is not beside it
    DATA = "/work/shared/data"


def f32(v):
    return tuple(float(np.float32(x)) for x in v)


def ref_dice(p, r, K):
    out = []
    for c in range(K):
        a, b = p == c, r == c
        s = a.sum() + b.sum()
        out.append(None if s == 0 else 2.0 * (a & b).sum() / s)
    return out


def ref_hd95(p, r, spacing):
    if not p.any() or not r.any():
        return None
    ep = p ^ ndimage.binary_erosion(p)                  # MONAI get_mask_edges (default structure: 6-connected)
    er = r ^ ndimage.binary_erosion(r)
    d_pr = ndimage.distance_transform_edt(~er, sampling=spacing)[ep]
    d_rp = ndimage.distance_transform_edt(~ep, sampling=spacing)[er]
    return max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))


def run_tool(pred, ref, affine, K, tmp):
    pp, rp = os.path.join(tmp, "p.nii.gz"), os.path.join(tmp, "r.nii.gz")
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), pp)
    nib.save(nib.Nifti1Image(ref.astype(np.uint8), affine), rp)
    out = subprocess.run([TOOL, pp, rp, str(K)], capture_output=True, text=True)
    if out.returncode:
        print(out.stderr)
        return None
    return json.loads(out.stdout)


def compare(label, got, pred, ref, K, spacing):
    if got is None:
        check(False, "%s: metrics_eval failed" % label)
        return
    rd = ref_dice(pred, ref, K)
    bad_d = [c for c in range(K) if (rd[c] is None) != (got["dice"][c] is None)
             or (rd[c] is not None and abs(rd[c] - got["dice"][c]) > 1e-12)]
    check(not bad_d, "%s: Dice differs for classes %s: %s vs %s" % (label, bad_d, got["dice"], rd))
    bad_h = []
    for c in range(1, K):
        want = ref_hd95(pred == c, ref == c, spacing)
        g = got["hd95"][c]
        if (want is None) != (g is None) or (want is not None and abs(want - g) > 1e-9 * (1 + want)):
            bad_h.append((c, g, want))
    check(not bad_h, "%s: HD95 differs (class, ours, scipy): %s" % (label, bad_h))


def main():
    if not os.access(TOOL, os.X_OK):
        print("FAIL missing %s (make tools)" % TOOL)
        print("0 passed, 1 failed")
        return 1
    tmp = tempfile.mkdtemp(prefix="srm-metrics-")
    try:
        src = os.path.join(DATA, "abdomen-ct-btcv13", "labelsTr", "ct_small.nii.gz")
        ref = np.asarray(nib.load(src).dataobj).astype(np.uint8)
        K = int(ref.max()) + 1
        pred = np.roll(ref, 1, axis=0)
        pred[ndimage.binary_dilation(ref == 1, iterations=2)] = 1
        pred[pred == 6] = 0
        e = ndimage.binary_erosion(ref == 3, iterations=1)
        pred[(pred == 3) & ~e] = 0
        spacing = f32((0.8, 1.5, 3.0))                   # NIfTI stores the affine in float32
        aff = np.diag(spacing + (1.0,))
        aff[:3, 3] = (-40, 12.5, 100)
        got = run_tool(pred, ref, aff, K, tmp)
        compare("ct_small perturbed", got, pred, ref, K, spacing)
        if got:
            check(got["spacing"] == list(spacing), "reader's spacing %s" % got["spacing"])
            check(got["dice"][6] == 0.0 and got["hd95"][6] is None, "class removed from the prediction: Dice 0, HD95 null")
            check(got["dice"][5] is None, "class 5 absent from both: Dice null")

        rng = np.random.default_rng(5)
        for t in range(6):
            shape = tuple(int(x) for x in rng.integers(12, 30, size=3))
            spacing = f32(rng.uniform(0.4, 3.0, size=3))
            g = np.indices(shape).astype(float)
            lab = [np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)]
            for m in lab:
                for cls in (1, 2):
                    c = rng.uniform(0, 1, 3) * np.array(shape)
                    rad = rng.uniform(2, 8, 3)
                    m[(((g - c[:, None, None, None]) / rad[:, None, None, None]) ** 2).sum(0) <= 1] = cls
                m[rng.random(shape) < 0.01] = 2
            aff = np.diag(spacing + (1.0,))
            compare("random %d %s" % (t, shape), run_tool(lab[0], lab[1], aff, 3, tmp), lab[0], lab[1], 3, spacing)

        # a 2D image (read as X, Y, 1): its surface is the 4-neighbour contour of the 2D arrays,
        # as MONAI's erosion of them gives (every pixel once counted: HD95 3.20 mm, not 4.00)
        g = np.indices((60, 50)).astype(float)
        a = (((g[0] - 30) ** 2 + (g[1] - 25) ** 2) <= 15 ** 2).astype(np.uint8)
        b = (((g[0] - 33) ** 2 + (g[1] - 26) ** 2) <= 13 ** 2).astype(np.uint8) * 1
        spacing = f32((0.8, 0.8, 1.0))
        got = run_tool(a, b, np.diag(spacing + (1.0,)), 2, tmp)
        compare("2D discs", got, a, b, 2, spacing[:2])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
