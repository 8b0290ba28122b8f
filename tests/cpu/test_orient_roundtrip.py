#!/usr/bin/python3
"""test_orient_roundtrip.py -- a volume reoriented to RAS and written back overlays the original.

For corpus files in every orientation (and real scans from the shared data), the helper
$BUILD/tools/reorient_write reads the file, reorients it to RAS and writes it. With nibabel:
  * the written file is RAS (aff2axcodes) and its affine equals as_closest_canonical's;
  * every written voxel (i, j, k) lies, under the written affine, exactly on the world position
    of an original voxel (indices from inv(original affine) are integers within 1e-4), and holds
    that voxel's value (float32 of nibabel's get_fdata);
  * the qform written next to the sform describes the same grid (rigid affines);
  * with --back (to RAS and back) the file has the original affine and the original array.
One line per file, then "N passed, N failed".
"""
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BUILD, check, check_ok, summary

TOOL = os.path.join(BUILD, "tools", "reorient_write")


def inputs():
    good = os.path.join(ROOT, "tests", "corpus", "good")
    names = ["dtype_float32.nii", "dtype_int16_lps.nii.gz", "orient_psr_float32.nii.gz",
             "orient_oblique_sform.nii", "orient_oblique_qform.nii.gz", "qform_only_qfac_neg.nii.gz",
             "no_xform_pixdim_only.nii", "nifti2_int16_oblique.nii.gz", "msd_4d_4ch_float32.nii.gz",
             "scaled_int16_slope_inter.nii.gz", "big_endian_int16.nii"]
    files = [os.path.join(good, n) for n in names]
    for root in (os.path.join(ROOT, "..", "shared", "data"), "/work/shared/data"):
        if os.path.isdir(root):  # one LAS MR, one LPS MR, one RAS CT
            files += [os.path.join(root, "mri-tumour-3", "imagesTr", "breast1.nii.gz"),
                      os.path.join(root, "mri-tumour-3", "imagesTr", "brain2.nii.gz"),
                      os.path.join(root, "abdomen-ct-btcv13", "labelsTr", "ct_small.nii.gz")]
            break
    return files


def problems(path, tmp):
    """What is wrong with reorient_write's output for the file at path ([] when nothing)."""
    bad = []
    orig = nib.load(path)
    odata = orig.get_fdata(dtype=np.float64).astype(np.float32)
    if odata.ndim == 3:
        odata = odata[..., None]
    out = os.path.join(tmp, "ras_" + os.path.basename(path))
    run = subprocess.run([TOOL, path, out], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        return [f"reorient_write failed: {run.stderr.strip()}"]
    ras = nib.load(out)
    rdata = np.asanyarray(ras.dataobj).astype(np.float32)
    if rdata.ndim == 3:
        rdata = rdata[..., None]
    if "".join(nib.aff2axcodes(ras.affine)) != "RAS":
        bad.append(f"written codes {nib.aff2axcodes(ras.affine)}")
    canon = nib.as_closest_canonical(orig)
    if not np.allclose(ras.affine, canon.affine, atol=1e-4) or ras.shape[:3] != canon.shape[:3]:
        bad.append("affine/shape differ from as_closest_canonical")
    # world position of every written voxel, mapped into the original's index space
    idx = np.indices(rdata.shape[:3]).reshape(3, -1)
    world = ras.affine[:3, :3] @ idx + ras.affine[:3, 3:4]
    inv = np.linalg.inv(orig.affine)
    oidx = inv[:3, :3] @ world + inv[:3, 3:4]
    rounded = np.rint(oidx).astype(int)
    if np.abs(oidx - rounded).max() > 1e-4:
        bad.append(f"voxels off the original grid by {np.abs(oidx - rounded).max():.3g}")
    elif (rounded < 0).any() or (rounded >= np.array(odata.shape[:3])[:, None]).any():
        bad.append("voxels outside the original volume")
    else:
        want = odata[rounded[0], rounded[1], rounded[2], :]
        got = rdata.reshape(-1, rdata.shape[3])
        if not np.array_equal(got, want):
            bad.append(f"{int((got != want).sum())} values differ from the original at the same world point")
    if not np.allclose(ras.header.get_qform(), ras.header.get_sform(), atol=1e-4):
        bad.append("written qform differs from sform")
    back = os.path.join(tmp, "back_" + os.path.basename(path))
    run = subprocess.run([TOOL, path, back, "--back"], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        return bad + [f"reorient_write --back failed: {run.stderr.strip()}"]
    b = nib.load(back)
    bdata = np.asanyarray(b.dataobj).astype(np.float32)
    if not np.allclose(b.affine, orig.affine, atol=1e-4):
        bad.append("--back affine differs from the original")
    if bdata.reshape(odata.shape).tobytes() != odata.tobytes():
        bad.append("--back data differs from the original")
    return bad


def main():
    if not os.access(TOOL, os.X_OK):
        check(False, f"{TOOL} not built")
        return summary()
    with tempfile.TemporaryDirectory() as tmp:
        for f in inputs():
            try:
                bad = problems(f, tmp)
            except Exception as e:
                bad = [f"{type(e).__name__}: {e}"]
            name = os.path.basename(f)
            check_ok(not bad, name if not bad else f"{name}: " + "; ".join(bad))
    return summary()


if __name__ == "__main__":
    sys.exit(main())
