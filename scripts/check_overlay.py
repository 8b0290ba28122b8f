#!/usr/bin/env python3
"""check_overlay.py PRED SRC [--labels N] -- does a predicted label map overlay its source scan?

Loads both with nibabel (run it with /usr/bin/python3, which has nibabel) and checks what a viewer
needs to put the mask on the scan: the same spatial dims, the same voxel-to-world affine (sform
and qform, 1e-3 mm), an integer label map whose values lie in 0..N-1 (--labels, optional), and a
mask that is not empty and lies inside the scan's nonzero region (its centre of mass in voxels
where the scan has signal). Prints one line per check and GEOMETRY OK or MISMATCH; exit status 0
only when every check passes. Used by scripts/gpu_results.sh and for predictions that came back
from the GPU host (issue 9).
"""
import argparse
import sys

import nibabel as nib
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pred")
    ap.add_argument("src")
    ap.add_argument("--labels", type=int, default=0, help="labels must lie in 0..N-1")
    a = ap.parse_args()
    p, s = nib.load(a.pred), nib.load(a.src)
    checks = []
    checks.append(("dims", p.shape[:3] == s.shape[:3], f"{p.shape} vs {s.shape}"))
    d_aff = float(np.abs(p.affine - s.affine).max())
    checks.append(("affine", d_aff <= 1e-3, f"max |diff| {d_aff:.2e}"))
    for name, get in (("sform", lambda im: im.header.get_sform(coded=True)),
                      ("qform", lambda im: im.header.get_qform(coded=True))):
        (pa, pc), (sa, sc) = get(p), get(s)
        if sc and pc:
            d = float(np.abs(pa - sa).max())
            checks.append((name, d <= 1e-3, f"codes {int(pc)}/{int(sc)}, max |diff| {d:.2e}"))
        else:
            checks.append((name, not sc, f"codes {int(pc) if pc else 0}/{int(sc) if sc else 0}"))
    lab = np.asarray(p.dataobj)
    integral = bool(np.all(lab == np.round(lab)))
    lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
    ok_range = integral and lo >= 0 and (a.labels <= 0 or hi < a.labels)
    checks.append(("labels", ok_range, f"integral {integral}, range {lo}..{hi}"))
    fg = lab > 0
    checks.append(("not empty", bool(fg.any()), f"{int(fg.sum())} foreground voxels"))
    if fg.any() and p.shape[:3] == s.shape[:3]:
        img = np.asarray(s.dataobj)
        img = img.reshape(img.shape[:3] + (-1,))
        body = np.any(img != 0, axis=3)
        inside = float(body[fg].mean())
        com = tuple(int(round(c)) for c in np.argwhere(fg).mean(axis=0))
        checks.append(("inside scan", inside >= 0.95 and bool(body[com]),
                       f"{100 * inside:.1f}% of the mask on nonzero scan voxels, centre {com}"))
    for name, ok, what in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {what}")
    good = all(ok for _, ok, _ in checks)
    print("GEOMETRY", "OK" if good else "MISMATCH")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
