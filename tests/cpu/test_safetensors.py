#!/usr/bin/python3
"""test_safetensors.py -- our safetensors files against an independent reader (json + struct
only, written here from the format description in anchors.md B3), and our reader against files
written here.

1. $BUILD/tools/safetensors_tool writes the tiny model; this script parses it: u64 LE header
   length, JSON header padded with spaces to a multiple of 8, F32 tensors whose data_offsets tile
   the buffer exactly, names and shapes equal to `srm-trainer --describe`, __metadata__ with the
   configuration, and values that follow architecture.md §5.3 (A_log = ln(n+1), D = 1, norm
   weights 1, biases 0, conv weights within +-1/sqrt(fan_in)).
2. Files built here are imported by the C reader: the same tensors plus every "[unused]" name of
   params_M_btcv.txt (accepted, values bit-exact); F16 and BF16 versions (accepted, converted);
   an extra unknown name, a missing name, a wrong shape, overlapping offsets, a bad dtype, broken
   JSON, a huge header length, a truncated file (all rejected, the message naming the problem).
"""
import json, math, os, re, struct, subprocess, sys, tempfile

import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import BUILD, BIN, check, summary

TOOL = os.path.join(BUILD, "tools", "safetensors_tool")
TRAINER = os.path.join(BIN, "srm-trainer")
LISTING = "/work/shared/design/params_M_btcv.txt"
FLAGS = ["--variant", "M", "--width", "8", "--in-channels", "2", "--classes", "3"]


def parse(path):
    """Independent reader: returns (header dict, data bytes, header length)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = raw[8:8 + n]
    return json.loads(hdr.decode("utf-8")), raw[8 + n:], n, hdr


def build(path, tensors, meta=None, pad=True):
    """Write a safetensors file from {name: (dtype, shape, bytes)} (in dict order)."""
    header, off, blobs = {}, 0, []
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dt, shape, b) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


tmp = tempfile.mkdtemp(prefix="srm_st_")
ours = os.path.join(tmp, "tiny.safetensors")
r = tool("write", ours, *FLAGS, "--seed", "11")
check(r.returncode == 0, "tool write: " + r.stderr)

# ---- 1. our file, read independently ---------------------------------------------------
hdr, data, n, hbytes = parse(ours)
check(n % 8 == 0 and hbytes.rstrip(b" ").endswith(b"}"), "header length multiple of 8, space padded")
meta = hdr.pop("__metadata__", {})
check(meta.get("variant") == "M" and meta.get("width") == "8" and meta.get("in_channels") == "2"
      and meta.get("classes") == "3" and all(isinstance(v, str) for v in meta.values()),
      "metadata %r" % meta)
desc = subprocess.run([TRAINER, "--describe", "--model", "M", "--width", "8", "--in-channels", "2",
                       "--classes", "3"], capture_output=True, text=True).stdout.strip().split("\n")
want = {}
for ln in desc[:-1]:
    name, shape = re.fullmatch(r"(\S+) \[([\d, ]+)\]", ln).groups()
    want[name] = [int(x) for x in shape.split(",")]
check(set(hdr) == set(want), "names differ from --describe: %s" % (set(hdr) ^ set(want)))
check(all(hdr[k]["shape"] == want[k] for k in want if k in hdr), "shapes differ from --describe")
check(all(v["dtype"] == "F32" for v in hdr.values()), "dtype F32")
spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in hdr.items())
at, tiled = 0, True
for b, e, k in spans:
    tiled &= b == at and e - b == 4 * math.prod(hdr[k]["shape"])
    at = e
check(tiled and at == len(data), "offsets tile the buffer exactly (%d of %d)" % (at, len(data)))
check([k for _, _, k in spans] == sorted(hdr), "tensors stored in name order")


def tensor(name):
    b, e = hdr[name]["data_offsets"]
    return np.frombuffer(data[b:e], dtype="<f4").reshape(hdr[name]["shape"])


a = tensor("vit.stages.1.0.mamba.A_s_log")
check(np.allclose(a, np.log(np.arange(1, 17))[None, :].repeat(a.shape[0], 0), atol=1e-7), "A_log init")
check(np.all(tensor("vit.gscs.0.mamba_layer.mamba.D_b") == 1), "D init")
check(np.all(tensor("segresnet.up_layers.1.0.norm2.weight") == 1)
      and np.all(tensor("segresnet.up_layers.1.0.norm2.bias") == 0), "GroupNorm init")
w = tensor("vit.gscs.2.proj.weight")          # Conv3d(32, 32, 5): fan_in 32 * 125
check(np.abs(w).max() <= 1 / math.sqrt(32 * 125) and w.std() > 0.4 / math.sqrt(32 * 125), "conv init bound")
w = tensor("out.weight")                     # ConvTranspose3d(8, 3, 2): fan_in = 3 * 8
check(np.abs(w).max() <= 1 / math.sqrt(24) and np.abs(w).max() > 0.8 / math.sqrt(24), "convT init bound")
dtb = tensor("vit.stages.0.2.mamba.dt_proj.bias")
dt = np.log1p(np.exp(dtb.astype(np.float64)))
check(dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001, "dt bias = softplus^-1(dt in [1e-3, 0.1])")

# ---- 2. files built here, imported by the C reader ----------------------------------------
tensors = {k: ("F32", hdr[k]["shape"], tensor(k).tobytes()) for k in sorted(hdr)}
dump = os.path.join(tmp, "dump.f32")


def import_ok(path, label):
    r = tool("read", path, *FLAGS, "--dump", dump)
    check(r.returncode == 0, "%s: import failed: %s" % (label, r.stderr.strip()))
    if r.returncode:
        return None
    buf = np.fromfile(dump, dtype="<f4")
    out = {}
    for ln in r.stdout.strip().split("\n"):
        name, off, cnt = ln.split()
        out[name] = buf[int(off):int(off) + int(cnt)]
    return out


def import_fails(path, label, needle):
    r = tool("read", path, *FLAGS)
    check(r.returncode != 0 and needle in r.stderr, "%s: expected an error mentioning %r, got rc %d %r"
          % (label, needle, r.returncode, r.stderr.strip()))


got = import_ok(ours, "round trip")
check(got is not None and all(got[k].tobytes() == tensor(k).tobytes() for k in hdr), "round trip bit-exact")

# every [unused] name of the listing (shapes as listed) is ignored on import
unused = [re.split(r"\s+", ln)[1:3] for ln in open(LISTING) if ln.startswith("[unused]")]
extra = dict(tensors)
for name, _ in unused:
    extra[name] = ("F32", [2], b"\0" * 8)
f = os.path.join(tmp, "with_unused.safetensors")
build(f, extra, {"format": "pt"})
got = import_ok(f, "[unused] names")
check(got is not None and all(got[k].tobytes() == tensor(k).tobytes() for k in hdr), "[unused] import values")
check(len(unused) > 50, "listing has the unused rows (%d)" % len(unused))

for dt, conv in (("F16", lambda x: x.astype("<f2").tobytes()),
                 ("BF16", lambda x: (x.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes())):
    f = os.path.join(tmp, dt + ".safetensors")
    build(f, {k: (dt, s, conv(tensor(k))) for k, (_, s, _) in tensors.items()})
    got = import_ok(f, dt)
    tol = 1e-3 if dt == "F16" else 8e-3
    check(got is not None and all(np.allclose(got[k], tensor(k).ravel(), rtol=tol, atol=1e-6) for k in hdr),
          dt + " converted")

bad = dict(tensors); bad["vit.gscs.0.mamba_layer.mamba.bogus"] = ("F32", [1], b"\0" * 4)
f = os.path.join(tmp, "unknown.safetensors"); build(f, bad)
import_fails(f, "unknown name", "vit.gscs.0.mamba_layer.mamba.bogus")
bad = dict(tensors); bad["segresnet.down_layers.0.2.norm1.weight"] = ("F32", [1], b"\0" * 4)  # not an [unused] row
f = os.path.join(tmp, "near_unused.safetensors"); build(f, bad)
import_fails(f, "name next to the [unused] ones", "segresnet.down_layers.0.2.norm1.weight")
bad = dict(tensors); del bad["out.bias"]
f = os.path.join(tmp, "missing.safetensors"); build(f, bad)
import_fails(f, "missing name", "missing tensor 'out.bias'")
bad = dict(tensors); s = bad["vit.mlps.1.fc1.bias"]; bad["vit.mlps.1.fc1.bias"] = ("F32", [2, s[1][0] // 2], s[2])
f = os.path.join(tmp, "shape.safetensors"); build(f, bad)
import_fails(f, "wrong shape", "vit.mlps.1.fc1.bias")
bad = dict(tensors); s = bad["out.bias"]; bad["out.bias"] = ("I32", s[1], s[2])
f = os.path.join(tmp, "dtype.safetensors"); build(f, bad)
import_fails(f, "bad dtype", "I32")

# overlapping offsets: move one tensor's span onto the previous one
build(f, tensors)
h, d, n, _ = parse(f)
names = sorted(k for k in h)
h[names[5]]["data_offsets"] = [h[names[4]]["data_offsets"][0], h[names[4]]["data_offsets"][0] +
                               h[names[5]]["data_offsets"][1] - h[names[5]]["data_offsets"][0]]
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(f, "wb").write(struct.pack("<Q", len(hb)) + hb + d)
import_fails(f, "overlapping offsets", "overlaps")

raw = open(ours, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
f = os.path.join(tmp, "broken.safetensors")
open(f, "wb").write(raw[:8] + b"x" + raw[9:])
import_fails(f, "broken JSON", "JSON")
open(f, "wb").write(raw[:8 + n] + raw[8 + n:-1000])
import_fails(f, "truncated data", "truncated")
open(f, "wb").write(raw[:8 + n // 2])
import_fails(f, "truncated header", "truncated")
open(f, "wb").write(struct.pack("<Q", 1 << 40) + raw[8:])
import_fails(f, "huge header length", "exceeds")
open(f, "wb").write(raw + b"\0" * 16)
import_fails(f, "trailing bytes", "trailing")
# variant R takes the authors' checkpoint: their constructed-but-uncalled CMMB ToM is ignored too
rflags = ["--variant", "R", "--width", "8", "--in-channels", "2", "--classes", "3"]
fr = os.path.join(tmp, "r.safetensors")
r = tool("write", fr, *rflags, "--seed", "3")
hr, dr, _, _ = parse(fr)
hr.pop("__metadata__")
rt = {k: ("F32", hr[k]["shape"], dr[hr[k]["data_offsets"][0]:hr[k]["data_offsets"][1]]) for k in hr}
rt.update({k: v for k, v in tensors.items() if ".mamba_layer." in k})
build(f, rt)
r = tool("read", f, *rflags)
check(r.returncode == 0, "R imports gscs.i.mamba_layer.*: " + r.stderr.strip())
r = tool("read", f, *FLAGS)
check(r.returncode != 0 and "unknown tensor 'vit.stages.0.0." in r.stderr, "M rejects R's stage conv: " + r.stderr.strip())

r = tool("config", ours)
check(r.returncode == 0 and r.stdout.split() == ["M", "8", "2", "3"], "config from metadata: %r" % r.stdout)

sys.exit(summary())
