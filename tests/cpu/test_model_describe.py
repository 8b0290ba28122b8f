#!/usr/bin/python3
"""test_model_describe.py -- `srm-trainer --describe` against the design's parameter listing.

Variant M at width 48, 1 input channel, 14 classes must list exactly the executed rows of
/work/shared/design/params_M_btcv.txt (name for name, shape for shape; "[unused]" rows absent)
and end with "parameters 80397710". The other variants are checked against their executed totals
(architecture.md §6.4: R 70,426,430, P 73,548,350; no-tom = M minus its 12 ToMs) and against
the naming rules of the top section of architecture.md.
"""
import os, re, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import BIN, check, summary

TRAINER = os.path.join(BIN, "srm-trainer")
LISTING = "/work/shared/design/params_M_btcv.txt"


def describe(*args):
    r = subprocess.run([TRAINER, "--describe", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("srm-trainer %s failed: %s" % (" ".join(args), r.stderr))
    lines = r.stdout.strip().split("\n")
    total = re.fullmatch(r"parameters (\d+)", lines[-1])
    params = {}
    for ln in lines[:-1]:
        m = re.fullmatch(r"(\S+) \[([\d, ]+)\]", ln)
        if not m:
            raise RuntimeError("bad describe line: %r" % ln)
        params[m.group(1)] = tuple(int(x) for x in m.group(2).split(","))
    return params, int(total.group(1)) if total else None


def read_listing():
    want, unused = {}, set()
    for ln in open(LISTING):
        if ln.startswith("#") or not ln.strip():
            continue
        m = re.fullmatch(r"(\[unused\] )?(\S+)\s+\[([\d, ]+)\]\s+(\d+)\s*", ln)
        assert m, ln
        shape = tuple(int(x) for x in m.group(3).split(","))
        (unused.add(m.group(2)) if m.group(1) else want.__setitem__(m.group(2), shape))
    return want, unused


want, unused = read_listing()
got, total = describe()
check(total == 80397710, "M total %s != 80397710" % total)
def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


check(sum(numel(s) for s in got.values()) == total, "sum of shapes != printed total")
missing = [n for n in want if n not in got]
wrong = ["%s %s != %s" % (n, got[n], s) for n, s in want.items() if n in got and got[n] != s]
extra = [n for n in got if n not in want]
check(not missing, "missing %s" % missing[:5])
check(not wrong, "wrong shapes %s" % wrong[:5])
check(not extra, "unexpected %s" % extra[:5])
check(not (set(got) & unused), "[unused] names allocated")

# the same with the flags spelled out
got2, total2 = describe("--model", "M", "--width", "48", "--in-channels", "1", "--classes", "14")
check(got2 == got and total2 == total, "explicit flags differ from defaults")

tom = {48: 31488, 96: 94080, 192: 312576, 384: 1122816}   # MambaLayer(d), architecture.md §5.2
expect = {
    "R": 70426430,
    "P": 73548350,
    "no-tom": 80397710 - 3 * sum(tom.values()),
}
for variant, n in expect.items():
    p, t = describe("--model", variant)
    check(t == n, "%s total %s != %s" % (variant, t, n))
    check(set(p) <= set(want) | {"vit.stages.%d.0.%s" % (i, s) for i in range(4) for s in ("weight", "bias")},
          "%s has names outside the M layout" % variant)
    has_toma = any(".mamba_layer." in k for k in p)
    check(has_toma == (variant == "P"), "%s: ToM_A presence wrong" % variant)
# R's stage conv is stages.i.0 (the authors' Sequential(Conv3d))
p, _ = describe("--model", "R")
check(p.get("vit.stages.3.0.weight") == (384, 384, 3, 3, 3), "R stage conv name/shape")
# width, channels, classes are run-time settings
p, t = describe("--width", "8", "--in-channels", "4", "--classes", "3")
check(p["vit.downsample_layers.0.0.weight"] == (8, 4, 7, 7, 7) and p["out.weight"] == (8, 3, 2, 2, 2)
      and p["vit.stages.3.0.mamba.x_proj.weight"] == (64 // 16 + 32, 128), "tiny shapes")
p2, t2 = describe("--preset", "tiny", "--in-channels", "4", "--classes", "3")
check(t2 == t, "--preset tiny == --width 8")
# bad settings are refused with a message
r = subprocess.run([TRAINER, "--describe", "--width", "12"], capture_output=True, text=True)
check(r.returncode != 0 and "multiple of 8" in r.stderr, "width 12 refused: %r" % r.stderr)
r = subprocess.run([TRAINER, "--describe", "--model", "Q"], capture_output=True, text=True)
check(r.returncode != 0 and "variant" in r.stderr, "variant Q refused")

sys.exit(summary())
