"""test_oracle_torch.py -- the C CPU forward of SegResMamba equals an independent PyTorch model
(tests/oracle/segresmamba_torch.py, written from architecture.md alone) on a fixed input.
For each case, $BUILD/tools/model_forward initialises the tiny model (width 8, 3 classes) from a
seed, exports it as safetensors and writes its float32 logits; we load that export with our own
reader into the torch module (load_state_dict strict=True), run it in float64 and require
||C - torch|| <= 1e-4 ||torch||; the C double forward (--double, same parameters) must agree to
1e-6. Also reported: torch float32 vs float64 (the float32 noise floor).
This pins the ToM orders, padding/cropping sides, upsampling and the axis convention.
A missing tool or build directory is a failure. Prints one line per case, then
"N passed, N failed"; exits non-zero on failure.
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

RTOL = 1e-4          # C float32 forward vs torch float64 (the bar)
RTOL_DOUBLE = 1e-6   # C double forward vs torch float64: only the float32 output rounding remains
WIDTH, CLASSES = 8, 3
# (variant, in_channels, (D, H, W)): 64^3 for every variant; non-cubic sizes whose deepest levels
# have odd extents (ToM_A padding on W or D, the -1 crop, stage nslices = 3 at 48x64x32); two
# input channels for P, R and M.
CASES = [("M", 1, (64, 64, 64)), ("P", 1, (64, 64, 64)), ("R", 1, (64, 64, 64)),
         ("no-tom", 1, (64, 64, 64)), ("M", 1, (64, 32, 48)), ("P", 2, (64, 32, 48)),
         ("R", 2, (64, 32, 48)), ("no-tom", 1, (64, 32, 48)), ("M", 2, (32, 48, 64)),
         ("M", 1, (48, 64, 32))]

passed = failed = 0


def report(ok, line):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(("ok   " if ok else "FAIL ") + line, flush=True)


def rel(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-300))


def run_tool(cmd, out_path, want_n):
    """Runs model_forward; returns (logits as float64 or None, seconds, error text)."""
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode != 0:
        return None, dt, f"model_forward exited {r.returncode}: {(r.stderr or r.stdout)[-400:]}"
    y = np.fromfile(out_path, dtype="<f4")
    if y.size != want_n:
        return None, dt, f"output has {y.size} floats, expected {want_n}"
    return y.astype(np.float64), dt, ""


def run_case(tool, tmp, variant, cin, dims, seed):
    name = f"{variant} in{cin} {dims[0]}x{dims[1]}x{dims[2]}"
    x = np.random.default_rng(1000 + seed).standard_normal((1, cin) + dims).astype("<f4")
    fin, fout, fst = (os.path.join(tmp, f"{seed}.{e}") for e in ("in.f32", "out.f32", "safetensors"))
    x.tofile(fin)
    cmd = [tool, "--variant", variant, "--width", str(WIDTH), "--in-channels", str(cin),
           "--classes", str(CLASSES), "--dims", *map(str, dims), "--batch", "1", "--seed", str(seed),
           "--safetensors", fst, "--input", fin, "--output", fout]
    want_n = CLASSES * int(np.prod(dims))
    got, t_c, err = run_tool(cmd, fout, want_n)
    if got is None:
        report(False, f"{name}: {err}")
        return
    try:
        tensors, _ = read_safetensors(fst)
        model = SegResMamba(variant, WIDTH, cin, CLASSES)
        model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in tensors.items()},
                              strict=True)
    except (ValueError, RuntimeError, KeyError) as e:
        report(False, f"{name}: export does not load into the torch model: {str(e)[:600]}")
        return
    # The same parameters again, forward in double (written as float32): a far sharper check.
    got_d, t_d, err = run_tool(cmd + ["--double"], fout, want_n)
    if got_d is None:
        report(False, f"{name} --double: {err}")
        return
    model.eval()
    t0 = time.time()
    with torch.no_grad():
        ref64 = model.double()(torch.from_numpy(x.astype(np.float64))).numpy()
        ref32 = model.float()(torch.from_numpy(x)).numpy().astype(np.float64)
    t_t = time.time() - t0
    shape = (1, CLASSES) + dims
    e_c, e_d, e_32 = rel(got.reshape(shape), ref64), rel(got_d.reshape(shape), ref64), rel(ref32, ref64)
    finite = bool(np.isfinite(got).all() and np.isfinite(got_d).all())
    report(finite and e_c <= RTOL and e_d <= RTOL_DOUBLE,
           f"{name}: rel(C f32, torch f64) = {e_c:.2e}, rel(C f64, torch f64) = {e_d:.2e} "
           f"(torch f32 vs f64 {e_32:.2e}; |logits| {np.linalg.norm(ref64):.3g}; "
           f"C {t_c:.1f}s + {t_d:.1f}s, torch {t_t:.1f}s)")


def main():
    build = os.environ.get("BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    tool = os.path.join(build, "tools", "model_forward")
    if not os.access(tool, os.X_OK):
        report(False, f"{tool} is missing (build it: make BUILD=... {tool})")
        return
    with tempfile.TemporaryDirectory(prefix="srm_oracle_") as tmp:
        for seed, (variant, cin, dims) in enumerate(CASES, start=1):
            run_case(tool, tmp, variant, cin, dims, seed)


if __name__ == "__main__":
    main()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
