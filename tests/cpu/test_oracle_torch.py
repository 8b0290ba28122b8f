"""test_oracle_torch.py -- the C CPU forward of SegResMamba equals an independent PyTorch model
(tests/oracle/segresmamba_torch.py, written from architecture.md alone) on a fixed input.
For each case, $BUILD/tools/model_forward initialises the tiny model (width 8, 3 classes) from a
seed, exports it as safetensors and writes its float32 logits; we load that export with our own
reader into the torch module (load_state_dict strict=True), run it in float64 and require
||C - torch|| <= 1e-4 ||torch||. Also reported: torch float32 vs float64 (the float noise floor).
This pins the ToM orders, padding/cropping sides, upsampling and the axis convention.
A missing tool or build directory is a failure. Prints one line per case, then
"N passed, N failed"; exits non-zero on failure. SRM_ORACLE_CASES=all adds the slower cases.
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "oracle"))

from safetensors_read import read_safetensors  # noqa: E402
from segresmamba_torch import SegResMamba  # noqa: E402

RTOL = 1e-4
WIDTH, CLASSES = 8, 3
# (variant, in_channels, (D, H, W)): 64^3 for every variant, the non-cubic size for M (whose
# level-3 CMMB has an odd W and exercises the ToM padding and the -1 crop) and, with 2 input
# channels, for P and R.
CASES = [("M", 1, (64, 64, 64)), ("P", 1, (64, 64, 64)), ("R", 1, (64, 64, 64)),
         ("no-tom", 1, (64, 64, 64)), ("M", 1, (64, 32, 48)), ("P", 2, (64, 32, 48)),
         ("R", 2, (64, 32, 48))]
EXTRA_CASES = [("no-tom", 1, (64, 32, 48)), ("M", 2, (32, 48, 64)), ("M", 1, (48, 64, 32))]

passed = failed = 0


def report(ok, line):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(("ok   " if ok else "FAIL ") + line, flush=True)


def rel(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-300))


def run_case(tool, tmp, variant, cin, dims, seed):
    name = f"{variant} in{cin} {dims[0]}x{dims[1]}x{dims[2]}"
    shape_in = (1, cin) + dims
    x = np.random.default_rng(1000 + seed).standard_normal(shape_in).astype("<f4")
    fin, fout, fst = (os.path.join(tmp, f"{seed}.{e}") for e in ("in.f32", "out.f32", "safetensors"))
    x.tofile(fin)
    cmd = [tool, "--variant", variant, "--width", str(WIDTH), "--in-channels", str(cin),
           "--classes", str(CLASSES), "--dims", *map(str, dims), "--batch", "1", "--seed", str(seed),
           "--safetensors", fst, "--input", fin, "--output", fout]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    t_c = time.time() - t0
    if r.returncode != 0:
        report(False, f"{name}: model_forward exited {r.returncode}: {(r.stderr or r.stdout)[-400:]}")
        return
    want_n = CLASSES * int(np.prod(dims))
    got = np.fromfile(fout, dtype="<f4")
    if got.size != want_n:
        report(False, f"{name}: output has {got.size} floats, expected {want_n}")
        return
    got = got.reshape((1, CLASSES) + dims).astype(np.float64)
    try:
        tensors, _ = read_safetensors(fst)
        model = SegResMamba(variant, WIDTH, cin, CLASSES)
        model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in tensors.items()},
                              strict=True)
    except (ValueError, RuntimeError, KeyError) as e:
        report(False, f"{name}: export does not load into the torch model: {str(e)[:600]}")
        return
    model.eval()
    t0 = time.time()
    with torch.no_grad():
        ref64 = model.double()(torch.from_numpy(x.astype(np.float64))).numpy()
        ref32 = model.float()(torch.from_numpy(x)).numpy().astype(np.float64)
    t_t = time.time() - t0
    e_c, e_32 = rel(got, ref64), rel(ref32, ref64)
    finite = bool(np.isfinite(got).all())
    report(finite and e_c <= RTOL,
           f"{name}: rel(C f32, torch f64) = {e_c:.2e} (torch f32 vs f64 {e_32:.2e}; "
           f"|logits| {np.linalg.norm(ref64):.3g}; C {t_c:.1f}s, torch {t_t:.1f}s)")


def main():
    build = os.environ.get("BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    tool = os.path.join(build, "tools", "model_forward")
    if not os.access(tool, os.X_OK):
        report(False, f"{tool} is missing (build it: make BUILD=... {tool})")
        return
    cases = CASES + (EXTRA_CASES if os.environ.get("SRM_ORACLE_CASES") == "all" else [])
    with tempfile.TemporaryDirectory(prefix="srm_oracle_") as tmp:
        for seed, (variant, cin, dims) in enumerate(cases, start=1):
            run_case(tool, tmp, variant, cin, dims, seed)


if __name__ == "__main__":
    main()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
