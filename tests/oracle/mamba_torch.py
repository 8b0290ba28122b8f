"""mamba_torch.py -- independent pure-PyTorch ToM ("MambaLayer"): LayerNorm over channels, then
the SegMamba "bimamba v3" Mamba with three token orders (forward, reverse, inter-slice) that
share in_proj/out_proj, no residual. Written from architecture.md §5 alone, as an oracle for the
C forward: no mamba_ssm, no MONAI, only torch. The selective scan is a plain sequential loop over
tokens (selective_scan_ref semantics), vectorised over batch, channels and states only, so it is
slow but obviously correct. Works in float32 or float64 (whatever dtype the module has).
Module/parameter names equal those of params_M_btcv.txt (norm.*, mamba.A_log, mamba.conv1d_b.*).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

D_STATE = 16   # N
D_CONV = 4     # causal depthwise conv kernel
EXPAND = 2     # E = 2C
SCAN_CHUNK = 2048  # tokens whose exp(delta*A) etc. are materialised at once (bounds memory)


def order_forward(L):
    """pi_f(j) = j: scanned position j reads original token j."""
    return torch.arange(L)


def order_reverse(L):
    """pi_b(j) = L-1-j (x and z are both flipped)."""
    return torch.arange(L - 1, -1, -1)


def order_slices(L, n):
    """pi_s(j) = (j mod n)*m + j//n, m = L/n: cut into n contiguous chunks and interleave them."""
    if L % n != 0:
        raise ValueError(f"inter-slice order: L={L} is not a multiple of nslices={n}")
    m = L // n
    j = torch.arange(L)
    return (j % n) * m + torch.div(j, n, rounding_mode="floor")


def selective_scan(u, delta, A, Bm, Cm, D, z, delta_bias):
    """Sequential selective scan (selective_scan_ref semantics).
    u, delta, z: (B, E, L); A: (E, N); Bm, Cm: (B, N, L); D, delta_bias: (E).
    delta <- softplus(delta + bias) (threshold 20); h_j = exp(delta_j A) h_{j-1} + delta_j u_j B_j;
    y_j = C_j . h_j + D u_j; returns y * silu(z), shape (B, E, L)."""
    Bsz, E, L = u.shape
    N = A.shape[1]
    delta = F.softplus(delta + delta_bias[None, :, None], beta=1.0, threshold=20.0)
    h = torch.zeros(Bsz, E, N, dtype=u.dtype)
    y = torch.empty(Bsz, E, L, dtype=u.dtype)
    for c0 in range(0, L, SCAN_CHUNK):
        c1 = min(L, c0 + SCAN_CHUNK)
        dl = delta[:, :, c0:c1].permute(2, 0, 1)                       # (T, B, E)
        dA = torch.exp(dl[..., None] * A)                              # (T, B, E, N)
        dBu = (dl * u[:, :, c0:c1].permute(2, 0, 1))[..., None] * \
            Bm[:, :, c0:c1].permute(2, 0, 1)[:, :, None, :]            # (T, B, E, N)
        H = torch.empty_like(dA)                                       # states h_j of this chunk
        for t in range(c1 - c0):                                       # the only token loop
            h = torch.addcmul(dBu[t], dA[t], h, out=H[t])
        h = H[-1].clone()
        y[:, :, c0:c1] = torch.einsum("tben,bnt->bet", H, Cm[:, :, c0:c1])
    y = y + D[None, :, None] * u
    return y * F.silu(z)


class MambaV3(nn.Module):
    """SegMamba bimamba-v3 Mamba for d_model C. Suffix '' = forward, '_b' = reverse, '_s' = slices."""

    def __init__(self, C):
        super().__init__()
        E = EXPAND * C
        R = math.ceil(C / 16)
        self.C, self.E, self.R = C, E, R
        self.in_proj = nn.Linear(C, 2 * E, bias=False)
        self.out_proj = nn.Linear(E, C, bias=False)
        for s in ("", "_b", "_s"):
            # A_log = ln(1..N) (S4D real), D = 1, dt bias = softplus^-1(dt), dt log-uniform
            # in [1e-3, 1e-1] (§5.3); only matters when the module is used without a checkpoint.
            a_log = torch.log(torch.arange(1, D_STATE + 1, dtype=torch.float32)).repeat(E, 1)
            setattr(self, "A" + s + "_log", nn.Parameter(a_log))
            setattr(self, "D" + s, nn.Parameter(torch.ones(E)))
            setattr(self, "conv1d" + s, nn.Conv1d(E, E, D_CONV, groups=E, padding=D_CONV - 1))
            setattr(self, "x_proj" + s, nn.Linear(E, R + 2 * D_STATE, bias=False))
            dt_proj = nn.Linear(R, E, bias=True)
            nn.init.uniform_(dt_proj.weight, -R ** -0.5, R ** -0.5)
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp(min=1e-4)
            with torch.no_grad():
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            setattr(self, "dt_proj" + s, dt_proj)

    def direction(self, x, z, s, perm):
        """One direction on x, z (B, E, L) in the original order; returns G (B, E, L) in the
        original order (already un-permuted)."""
        L = x.shape[-1]
        xk, zk = x[:, :, perm], z[:, :, perm]
        conv = getattr(self, "conv1d" + s)
        u = F.silu(conv(xk)[:, :, :L])             # causal: padding 3, keep the first L outputs
        x_dbl = getattr(self, "x_proj" + s)(u.transpose(1, 2))        # (B, L, R+32)
        dtr = x_dbl[:, :, :self.R]
        Bm = x_dbl[:, :, self.R:self.R + D_STATE].transpose(1, 2)     # (B, N, L)
        Cm = x_dbl[:, :, self.R + D_STATE:].transpose(1, 2)           # (B, N, L)
        dt_proj = getattr(self, "dt_proj" + s)
        delta = (dtr @ dt_proj.weight.t()).transpose(1, 2)             # bias added in the scan
        A = -torch.exp(getattr(self, "A" + s + "_log"))
        g = selective_scan(u, delta, A, Bm, Cm, getattr(self, "D" + s), zk, dt_proj.bias)
        G = torch.empty_like(g)
        G[:, :, perm] = g                                             # G[pi(j)] = g[j]
        return G

    def forward(self, T, nslices):
        """T: (B, L, C) tokens after the LayerNorm -> (B, L, C)."""
        L = T.shape[1]
        xz = self.in_proj(T).transpose(1, 2)                          # (B, 2E, L)
        x, z = xz[:, :self.E], xz[:, self.E:]
        G = self.direction(x, z, "", order_forward(L))
        G = G + self.direction(x, z, "_b", order_reverse(L))
        G = G + self.direction(x, z, "_s", order_slices(L, nslices))
        return self.out_proj(G.transpose(1, 2))


class MambaLayer(nn.Module):
    """(B, C, D, H, W) -> (B, C, D, H, W): flatten (D slowest, W fastest), LayerNorm(C),
    v3 Mamba, reshape back. nslices=None means "the depth extent D of the input"."""

    def __init__(self, C, nslices=None):
        super().__init__()
        self.nslices = nslices
        self.norm = nn.LayerNorm(C, eps=1e-5)
        self.mamba = MambaV3(C)

    def forward(self, x):
        Bsz, C, Dd, Hh, Ww = x.shape
        n = Dd if self.nslices is None else self.nslices
        T = x.reshape(Bsz, C, Dd * Hh * Ww).transpose(1, 2)
        out = self.mamba(self.norm(T), n)
        return out.transpose(1, 2).reshape(Bsz, C, Dd, Hh, Ww)
