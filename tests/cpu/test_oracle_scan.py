"""test_oracle_scan.py -- self-checks of the PyTorch oracle's building blocks against second,
deliberately different formulations (all float64, small shapes):
  * the sequential selective scan == the closed form h_j = sum_{i<=j} exp(A sum_{k=i+1..j} d_k) d_i u_i B_i
    with materialised states, across the scan's chunk boundary; softplus threshold; D skip; z gate;
  * token orders == the torch.chunk/stack construction (inter-slice), flip (reverse); the
    un-permutation inverts them; a non-multiple L is refused;
  * the causal depthwise conv == an explicit 4-tap sum over zero history;
  * the CMMB pad/crop rule (difference -1 crops the first slice) and the trilinear x2 weights;
  * the safetensors reader round-trips a hand-written file and rejects truncation.
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, check_ok, summary

sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))

import mamba_torch  # noqa: E402
from mamba_torch import MambaV3, order_forward, order_reverse, order_slices, selective_scan  # noqa: E402
from safetensors_read import read_safetensors  # noqa: E402
from segresmamba_torch import pad_or_crop_to  # noqa: E402

torch.manual_seed(7)
DT = torch.float64


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def naive_scan(u, delta, A, Bm, Cm, D, z, bias):
    """Closed form with every state materialised, no recurrence."""
    Bsz, E, L = u.shape
    d = torch.where(delta + bias[None, :, None] > 20, delta + bias[None, :, None],
                    torch.log1p(torch.exp(delta + bias[None, :, None])))
    S = torch.cumsum(d, dim=-1)                                        # S_j = sum_{k<=j} d_k
    y = torch.zeros(Bsz, E, L, dtype=u.dtype)
    for j in range(L):
        # decay from i to j: exp(A (S_j - S_i)), i <= j
        decay = torch.exp(A[None, :, :, None] * (S[:, :, j, None] - S[:, :, :j + 1])[:, :, None, :])
        inp = (d[:, :, :j + 1] * u[:, :, :j + 1])[:, :, None, :] * Bm[:, None, :, :j + 1]
        h = (decay * inp).sum(-1)                                      # (B, E, N)
        y[:, :, j] = (h * Cm[:, None, :, j]).sum(-1)
    y = y + D[None, :, None] * u
    return y * z * torch.sigmoid(z)


def test_scan():
    Bsz, E, N, L = 2, 5, 16, 37
    u, z = torch.randn(Bsz, E, L, dtype=DT), torch.randn(Bsz, E, L, dtype=DT)
    delta = torch.randn(Bsz, E, L, dtype=DT) * 0.5
    delta[0, 0, 3] = 30.0                                              # above the softplus threshold
    A = -torch.exp(torch.randn(E, N, dtype=DT) * 0.3)
    Bm, Cm = torch.randn(Bsz, N, L, dtype=DT), torch.randn(Bsz, N, L, dtype=DT)
    D, bias = torch.randn(E, dtype=DT), torch.randn(E, dtype=DT) * 0.1
    want = naive_scan(u, delta, A, Bm, Cm, D, z, bias)
    saved = mamba_torch.SCAN_CHUNK
    for chunk in (saved, 8):                                           # 8: crosses chunk carries
        mamba_torch.SCAN_CHUNK = chunk
        got = selective_scan(u, delta, A, Bm, Cm, D, z, bias)
        e = rel(got, want)
        check_ok(e < 1e-12, f"sequential scan == closed form (chunk {chunk}): rel {e:.2e}")
    mamba_torch.SCAN_CHUNK = saved
    # B = 0 leaves y = D*u (style.md §7.5 known value), gated.
    got = selective_scan(u, delta, A, torch.zeros_like(Bm), Cm, D, z, bias)
    e = rel(got, D[None, :, None] * u * F.silu(z))
    check_ok(e < 1e-15, f"scan with B=0 gives D*u*silu(z): rel {e:.2e}")


def test_orders():
    for L, n in ((24, 4), (64, 8), (30, 5), (12, 1), (12, 12)):
        x = torch.arange(L)
        want = torch.stack(x.chunk(n, dim=-1), dim=-1).flatten()      # chunk, then interleave
        check_ok(torch.equal(order_slices(L, n), want), f"inter-slice order L={L} n={n} == chunk+stack")
        for name, p in (("forward", order_forward(L)), ("reverse", order_reverse(L)),
                        ("slices", order_slices(L, n))):
            v = torch.randn(3, L)
            g = v[:, p]
            back = torch.empty_like(g)
            back[:, p] = g
            check_ok(torch.equal(back, v) and sorted(p.tolist()) == list(range(L)),
                     f"{name} order L={L} is a permutation undone by the un-permute")
    check_ok(torch.equal(order_reverse(10), torch.arange(10).flip(0)), "reverse order == flip")
    # n = D: scanned run j..j+D-1 walks through the D slices at one (h, w).
    Dd, Hh, Ww = 4, 3, 2
    p = order_slices(Dd * Hh * Ww, Dd)
    dpos = torch.div(p[:Dd], Hh * Ww, rounding_mode="floor")
    check_ok(torch.equal(dpos, torch.arange(Dd)) and int(p[Dd]) == 1,
             "nslices = D: first D scanned tokens are voxel (d, 0, 0) for d = 0..D-1")
    try:
        order_slices(10, 4)
        check_ok(False, "L % nslices != 0 is refused")
    except ValueError:
        check_ok(True, "L % nslices != 0 is refused")


def test_causal_conv():
    m = MambaV3(8).double()
    x = torch.randn(2, 16, 11, dtype=DT)
    got = F.silu(m.conv1d(x)[:, :, :11])
    w, b = m.conv1d.weight[:, 0, :], m.conv1d.bias
    xp = F.pad(x, [3, 0])                                              # zero history
    want = b[None, :, None] + sum(w[None, :, i, None] * xp[:, :, i:i + 11] for i in range(4))
    e = rel(got, F.silu(want))
    check_ok(e < 1e-14, f"conv1d padding 3 truncated == causal 4-tap sum: rel {e:.2e}")


def test_pad_crop_upsample():
    x = torch.arange(4 * 4 * 4, dtype=DT).reshape(1, 1, 4, 4, 4)
    y = pad_or_crop_to(x, (3, 4, 5))
    check_ok(torch.equal(y[0, 0, :, :, 4], torch.zeros(3, 4, dtype=DT))
             and torch.equal(y[0, 0, :, :, :4], x[0, 0, 1:, :, :]),
             "pad/crop: D 4->3 crops the first slice, W 4->5 pads one zero at the high end")
    y = pad_or_crop_to(x, (6, 2, 4))
    check_ok(torch.equal(y[0, 0, 1:5, :, :], x[0, 0, :, 1:3, :]) and float(y[0, 0, 0].abs().sum()) == 0,
             "pad/crop: +2 pads one each side, -2 crops one each side")
    v = torch.randn(1, 1, 5, dtype=DT)
    up = F.interpolate(v[..., None, None].expand(1, 1, 5, 1, 1).contiguous(), scale_factor=2,
                       mode="trilinear", align_corners=False)[0, 0, :, 0, 0]
    s = v[0, 0]
    want = torch.empty(10, dtype=DT)
    for k in range(5):
        want[2 * k] = 0.25 * s[max(k - 1, 0)] + 0.75 * s[k]
        want[2 * k + 1] = 0.75 * s[k] + 0.25 * s[min(k + 1, 4)]
    check_ok(rel(up, want) < 1e-15, "trilinear x2 weights 1/4, 3/4 with clamped edges (§4.4)")


def test_safetensors():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4)).astype("<f4")
    b = rng.standard_normal((5,)).astype("<f4")
    hdr = {"a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
           "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]},
           "__metadata__": {"format": "pt"}}
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    blob = struct.pack("<Q", len(h)) + h + a.tobytes() + b.tobytes()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        t, meta = read_safetensors(path)
        check_ok(np.array_equal(t["a"], a) and np.array_equal(t["b"], b) and meta == {"format": "pt"},
                 "safetensors reader round-trips a hand-written file")
        with open(path, "wb") as f:
            f.write(blob[:-4])
        try:
            read_safetensors(path)
            check_ok(False, "safetensors reader rejects a truncated file")
        except ValueError as e:
            check_ok("t.safetensors" in str(e), f"safetensors reader rejects a truncated file ({e})")


if __name__ == "__main__":
    test_scan()
    test_orders()
    test_causal_conv()
    test_pad_crop_upsample()
    test_safetensors()
    sys.exit(summary())
