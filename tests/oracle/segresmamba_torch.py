"""segresmamba_torch.py -- independent pure-PyTorch SegResMamba (variants M, P, R, no-tom) with
run-time width, input channels and classes, written from architecture.md alone (decision at the
top, §2.2, §4, §5, §7, §8) as the oracle for the C forward pass. Only torch: no MONAI, no
mamba_ssm. state_dict() keys equal the names of params_M_btcv.txt without the [unused] rows, so a
safetensors export of the C model loads with load_state_dict(strict=True).
Axis convention (N, C, D, H, W); Mamba tokens flatten D slowest, W fastest.
"""
import torch.nn as nn
import torch.nn.functional as F

from mamba_torch import MambaLayer

VARIANTS = ("M", "P", "R", "no-tom")
CMMB_NSLICES = 4  # spleen_slices = [4, 4, 4, 4], used by every ToM_A


def instance_norm(x):
    """InstanceNorm3d without affine, eps 1e-5, instance statistics (also in eval)."""
    return F.instance_norm(x, eps=1e-5)


def pad_or_crop_to(x, shape):
    """Centre-pad or crop the last three axes of x to `shape` (D, H, W), the authors' rule:
    low side gets diff//2 (so a difference of -1 crops the FIRST slice), high side the rest."""
    pads = []
    for axis in (4, 3, 2):                       # F.pad lists the last axis first
        diff = shape[axis - 2] - x.shape[axis]
        pads += [diff // 2, diff - diff // 2]
    if any(pads):
        x = F.pad(x, pads)                       # negative pads crop
    return x


class CMMB(nn.Module):
    """Convolution Mamba Mixed Block ("GSC"), (B, d, s...) -> same shape:
    conv5 s2 -> IN -> ReLU, conv3 -> IN -> ReLU, [ToM_A on even-padded dims], conv3 -> IN -> ReLU,
    ConvT5 s2 op1 -> IN -> ReLU, centre pad/crop to X, + X."""

    def __init__(self, d, with_tom):
        super().__init__()
        self.proj = nn.Conv3d(d, d, 5, stride=2, padding=2)
        self.proj3 = nn.Conv3d(d, d, 3, padding=1)
        if with_tom:
            self.mamba_layer = MambaLayer(d, nslices=CMMB_NSLICES)
        self.proj4 = nn.Conv3d(d, d, 3, padding=1)
        self.proj5 = nn.ConvTranspose3d(d, d, 5, stride=2, padding=2, output_padding=1)

    def forward(self, X):
        x = F.relu(instance_norm(self.proj(X)))
        x = F.relu(instance_norm(self.proj3(x)))
        if hasattr(self, "mamba_layer"):
            Dd, Hh, Ww = x.shape[2:]
            x = F.pad(x, [0, Ww % 2, 0, Hh % 2, 0, Dd % 2])   # odd dims: +1 zero at the high end
            x = self.mamba_layer(x)[:, :, :Dd, :Hh, :Ww]
        x = F.relu(instance_norm(self.proj4(x)))
        x = F.relu(instance_norm(self.proj5(x)))
        return pad_or_crop_to(x, X.shape[2:]) + X


def make_stage(variant, d):
    """The per-level stage after the CMMB; indices keep their position in the M layout."""
    conv = lambda: nn.Conv3d(d, d, 3, padding=1)  # noqa: E731
    tom = lambda: MambaLayer(d, nslices=None)     # noqa: E731  nslices = depth extent of the level
    if variant == "M":
        return nn.Sequential(tom(), conv(), tom(), conv())
    if variant == "P":
        return nn.Sequential(tom(), conv())
    if variant == "R":
        return nn.Sequential(conv())
    if variant == "no-tom":
        return nn.Sequential(nn.Identity(), conv(), nn.Identity(), conv())
    raise ValueError(f"unknown variant {variant!r}")


class MlpChannel(nn.Module):
    """Skip path after the IN: 1x1 conv d->2d, GELU (erf), 1x1 conv 2d->d, both with bias."""

    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Conv3d(d, 2 * d, 1)
        self.fc2 = nn.Conv3d(2 * d, d, 1)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Encoder(nn.Module):
    """MambaEncoder ("vit"): per level downsample -> CMMB -> stage; emits mlps[i](IN(x))."""

    def __init__(self, variant, width, in_channels):
        super().__init__()
        dims = [width, 2 * width, 4 * width, 8 * width]
        down = [nn.Sequential(nn.Conv3d(in_channels, dims[0], 7, stride=2, padding=3))]
        for i in range(1, 4):
            c = dims[i - 1]
            # IN -> conv3 -> IN -> conv2 s2; InstanceNorm3d(affine=False) holds no parameters.
            down.append(nn.Sequential(nn.InstanceNorm3d(c), nn.Conv3d(c, c, 3, padding=1),
                                      nn.InstanceNorm3d(c), nn.Conv3d(c, dims[i], 2, stride=2)))
        self.downsample_layers = nn.ModuleList(down)
        self.gscs = nn.ModuleList([CMMB(d, with_tom=variant != "R" and variant != "no-tom")
                                   for d in dims])
        self.stages = nn.ModuleList([make_stage(variant, d) for d in dims])
        self.mlps = nn.ModuleList([MlpChannel(d) for d in dims])

    def forward(self, x):
        outs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.gscs[i](x)
            x = self.stages[i](x)
            outs.append(self.mlps[i](instance_norm(x)))
        return outs


class ConvOnly(nn.Module):
    """MONAI Convolution(conv_only=True): adds the `.conv` level to the parameter names."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        return self.conv(x)


class ResBlock(nn.Module):
    """MONAI SegResNet ResBlock: GN(8) -> ReLU -> conv3 -> GN(8) -> ReLU -> conv3, + identity."""

    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c, eps=1e-5)
        self.conv1 = ConvOnly(c, c, 3)
        self.norm2 = nn.GroupNorm(8, c, eps=1e-5)
        self.conv2 = ConvOnly(c, c, 3)

    def forward(self, x):
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return y + x


class Decoder(nn.Module):
    """SegResNet decode with blocks_up (1,1,1): 1x1 conv (no bias), trilinear x2, + skip, ResBlock."""

    def __init__(self, width):
        super().__init__()
        cins = [8 * width, 4 * width, 2 * width]
        self.up_samples = nn.ModuleList([
            nn.Sequential(ConvOnly(c, c // 2, 1),
                          nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False))
            for c in cins])
        self.up_layers = nn.ModuleList([nn.Sequential(ResBlock(c // 2)) for c in cins])

    def forward(self, outs):
        down_x = outs[::-1]                      # [out3, out2, out1, out0]
        x = down_x[0]
        for j in range(3):
            x = self.up_samples[j](x) + down_x[j + 1]
            x = self.up_layers[j](x)
        return x


class SegResMamba(nn.Module):
    """(N, in_channels, D, H, W) -> logits (N, classes, D, H, W); D, H, W multiples of 16."""

    def __init__(self, variant="M", width=48, in_channels=1, classes=14):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        if width % 8 != 0:
            raise ValueError(f"width {width} is not a multiple of 8 (GroupNorm has 8 groups)")
        self.vit = Encoder(variant, width, in_channels)
        self.segresnet = Decoder(width)
        self.out = nn.ConvTranspose3d(width, classes, 2, stride=2)

    def forward(self, x):
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not a multiple of 16")
        return self.out(self.segresnet(self.vit(x)))
