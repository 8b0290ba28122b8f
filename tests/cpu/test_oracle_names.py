"""test_oracle_names.py -- the PyTorch oracle (tests/oracle/segresmamba_torch.py) has exactly the
parameters of the design: for M, width 48, 1 input channel, 14 classes its state_dict names and
shapes equal params_M_btcv.txt without the [unused] rows (80,397,710 parameters); R, P, no-tom and
the BraTS configuration have the executed counts architecture.md gives or implies; each
MambaLayer(C) has the §5.2 count; the tiny configuration builds with the same names.
Prints one line per check and "N passed, N failed"; exits non-zero on failure.
"""
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, check_ok, summary

sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
PARAMS_TXT = os.path.join(ROOT, "..", "shared", "design", "params_M_btcv.txt")
if not os.path.exists(PARAMS_TXT):           # a checkout whose shared/ is not beside it
    PARAMS_TXT = "/work/shared/design/params_M_btcv.txt"

from mamba_torch import MambaLayer  # noqa: E402
from segresmamba_torch import SegResMamba  # noqa: E402


def read_design_table(path):
    """name -> shape for the executed rows of params_M_btcv.txt."""
    table = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#") or line.startswith("[unused]"):
                continue
            name, rest = line.split(None, 1)
            shape = [int(s) for s in rest[rest.index("[") + 1:rest.index("]")].split(",")]
            table[name] = shape
    return table


def count(model):
    return sum(p.numel() for p in model.parameters())


def main():
    try:
        design = read_design_table(PARAMS_TXT)
    except OSError as e:
        check_ok(False, "read params_M_btcv.txt", str(e))
        return
    total = sum(math.prod(s) for s in design.values())
    check_ok(total == 80_397_710, f"params_M_btcv.txt executed rows sum to {total:,}", "want 80,397,710")
    ours = {k: list(v.shape) for k, v in SegResMamba("M", 48, 1, 14).state_dict().items()}
    missing = sorted(set(design) - set(ours))
    extra = sorted(set(ours) - set(design))
    check_ok(not missing and not extra, f"M names equal params_M_btcv.txt ({len(design)} rows)",
             f"missing {missing[:5]} extra {extra[:5]}")
    bad = [n for n in design if n in ours and ours[n] != design[n]]
    check_ok(not bad, "M shapes equal params_M_btcv.txt",
             "; ".join(f"{n} ours {ours[n]} design {design[n]}" for n in bad[:5]))

    # Executed counts: M, P, R from the §6.4 table; no-tom = R + one Conv3d(d,d,3) per level
    # (5,288,400, §6.4); BraTS M = 120,021,271 total - 39,578,404 unused (§7.3).
    for variant, cin, k, want in (("M", 1, 14, 80_397_710), ("P", 1, 14, 73_548_350),
                                  ("R", 1, 14, 70_426_430), ("no-tom", 1, 14, 75_714_830),
                                  ("M", 4, 3, 120_021_271 - 39_578_404)):
        got = count(SegResMamba(variant, 48, cin, k))
        check_ok(got == want, f"{variant} width 48 in {cin} classes {k}: {got:,} parameters",
                 f"want {want:,}")

    for C, want in ((48, 31_488), (96, 94_080), (192, 312_576), (384, 1_122_816)):
        got = count(MambaLayer(C))
        check_ok(got == want, f"MambaLayer({C}) has {got:,} parameters", f"want {want:,}")

    # The variants only drop names of the M layout, except R's stage conv, which is the published
    # code's stages.i.0 (a ToM in M); tiny keeps every name of M.
    full_m = set(SegResMamba("M", 48, 1, 14).state_dict())
    for variant in ("P", "R", "no-tom"):
        names = set(SegResMamba(variant, 48, 1, 14).state_dict())
        if variant == "R":
            names = {n for n in names if not n.startswith("vit.stages.") or ".0." not in n[11:]}
        check_ok(names <= full_m, f"{variant} names are a subset of M's", str(sorted(names - full_m))[:200])
    r_names = set(SegResMamba("R", 48, 1, 14).state_dict())
    check_ok(not any(".mamba_layer." in n or n.startswith("vit.stages.") and ".mamba." in n
                     for n in r_names) and "vit.stages.0.0.weight" in r_names,
             "R has no ToM and its stage conv is stages.i.0")
    nt_names = set(SegResMamba("no-tom", 48, 1, 14).state_dict())
    check_ok(not any(".mamba" in n for n in nt_names) and "vit.stages.3.3.weight" in nt_names
             and "vit.stages.3.1.weight" in nt_names, "no-tom keeps stages.i.1 and stages.i.3 only")
    tiny = {k: list(v.shape) for k, v in SegResMamba("M", 8, 1, 3).state_dict().items()}
    check_ok(set(tiny) == full_m, "tiny M has the same names as M")
    check_ok(tiny["vit.gscs.3.mamba_layer.mamba.x_proj_s.weight"] == [36, 128]
             and tiny["out.weight"] == [8, 3, 2, 2, 2], "tiny shapes follow the width (x_proj, out)")


if __name__ == "__main__":
    main()
    sys.exit(summary())
