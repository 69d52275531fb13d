"""SNDCGAN and SNResNet-18 (Miyato et al. 2018) for 32x32 images: ContraD's CIFAR architectures.

Generator (SNDCGAN, both pairs of ContraD's Table 1 use it): z (128) -> Linear to
8*ngf x 4 x 4, BatchNorm, ReLU; three ConvTranspose(4, stride 2) + BatchNorm + ReLU
to 32x32 with 4, 2, 1 x ngf channels; ConvTranspose(3, stride 1) to RGB; tanh.
Discriminators: every Conv2d and Linear is spectrally normalised
(`torch.nn.utils.parametrizations.spectral_norm`, one power iteration per training
forward), activations are LeakyReLU 0.1, and there is no normalisation layer.
- SNDCGAN D: seven 3x3/4x4 convs (ndf, 2, 2, 4, 4, 8, 8 x ndf channels; the 4x4
  ones have stride 2), `features` = the flattened 8*ndf x 4 x 4 map (8192 at width 1).
- SNResNet-18 D: a 3x3 stem and four stages of two residual blocks (64, 128, 256,
  512 channels, stride 2 from the second stage on), conv-lrelu-conv + shortcut
  (1x1 conv where the shape changes) then lrelu, no BatchNorm; `features` = the
  global average of the last 4x4 map (512 at width 1).
`forward(x)` returns logits (B,) from a spectrally normalised Linear on `features`
(the output layer of the baseline / DiffAugment methods; ContraD puts its own heads
on `features` and builds the backbone with `linear_head=False`).

Shapes and initialisation follow ContraD's official code (jh-jeong/ContraD,
models/gan/sndcgan.py, snresnet.py; read, not copied), which matches Mimicry's
SNDCGAN: G and the SNDCGAN D start from N(0, 0.02) weights and zero biases,
SNResNet-18 keeps PyTorch's default initialisation. `width` scales every channel
count (64 * width, at least 1) for small runs; width 1 is the paper's model.

Deviations, on purpose: images are in [-1, 1] in and out (the official G ends with
tanh then maps to [0, 1] and its D maps [0, 1] back to [-1, 1] first: the same
networks); the G's first BatchNorm is a BatchNorm1d over the Linear's 8192 outputs,
which is what the official BatchNorm2d on a (B, 8192, 1, 1) view computes;
spectral norm is the parametrization API rather than the deprecated hook (same
estimate: one power iteration per training forward, eps 1e-12).
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

LRELU_SLOPE = 0.1  # ContraD / Mimicry / Miyato et al. SNDCGAN

__all__ = ["SNDCGANGenerator", "SNDCGANDiscriminator", "SNResNetDiscriminator", "DiscriminatorFeatures", "sngan"]


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _check_width(width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")


def _check_resolution(resolution: int) -> None:
    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 (three stride-2 stages), got {resolution}")


def _normal_init(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) weights and zero biases for every conv / linear layer (DCGAN's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _apply_spectral_norm(module: nn.Module) -> None:
    """Spectral norm on every Conv2d and Linear weight, after their initialisation.

    Registration runs 15 power iterations on the initial weight, so the estimate is
    good from the first forward; training forwards then run one each.
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spectral_norm(m)


def _check_images(x: Tensor, channels: int, resolution: int | None) -> None:
    side = "H, W" if resolution is None else f"{resolution}, {resolution}"
    ok = x.ndim == 4 and x.shape[1] == channels and (resolution is None or x.shape[2:] == (resolution, resolution))
    assert ok, f"expected images (B, {channels}, {side}), got {tuple(x.shape)}"


# ---------------------------------------------------------------- generator

class SNDCGANGenerator(nn.Module):
    """z (B, z_dim) -> images (B, C, resolution, resolution) in [-1, 1]."""

    def __init__(self, z_dim: int = 128, width: float = 1.0, img_channels: int = 3, resolution: int = 32):
        super().__init__()
        _check_width(width)
        _check_resolution(resolution)
        ngf = _channels(64, width)
        self.z_dim, self.img_channels, self.resolution = z_dim, img_channels, resolution
        self.bottom = resolution // 8
        self.base_channels = 8 * ngf
        self.linear = nn.Linear(z_dim, self.base_channels * self.bottom ** 2)
        self.bn0 = nn.BatchNorm1d(self.base_channels * self.bottom ** 2)
        layers: list[nn.Module] = []
        for c_in, c_out in ((8 * ngf, 4 * ngf), (4 * ngf, 2 * ngf), (2 * ngf, ngf)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(ngf, img_channels, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        _normal_init(self)  # BatchNorm keeps weight 1, bias 0

    def forward(self, z: Tensor) -> Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected z (B, {self.z_dim}), got {tuple(z.shape)}"
        x = F.relu(self.bn0(self.linear(z)))
        return self.main(x.view(-1, self.base_channels, self.bottom, self.bottom))


# ---------------------------------------------------------------- discriminators

class SNDCGANDiscriminator(nn.Module):
    """SNDCGAN D; `features(x)` -> (B, feature_dim), `forward(x)` -> logits (B,)."""

    def __init__(self, width: float = 1.0, img_channels: int = 3, resolution: int = 32, linear_head: bool = True):
        super().__init__()
        _check_width(width)
        _check_resolution(resolution)
        ndf = _channels(64, width)
        self.img_channels, self.resolution = img_channels, resolution
        # (in, out, kernel, stride): 3x3 stride 1 keeps the size, 4x4 stride 2 halves it.
        specs = [(img_channels, ndf, 3, 1), (ndf, 2 * ndf, 4, 2), (2 * ndf, 2 * ndf, 3, 1),
                 (2 * ndf, 4 * ndf, 4, 2), (4 * ndf, 4 * ndf, 3, 1), (4 * ndf, 8 * ndf, 4, 2),
                 (8 * ndf, 8 * ndf, 3, 1)]
        layers: list[nn.Module] = []
        for c_in, c_out, k, s in specs:
            layers += [nn.Conv2d(c_in, c_out, k, s, 1), nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
        self.main = nn.Sequential(*layers)
        self.feature_dim = 8 * ndf * (resolution // 8) ** 2
        self.linear = nn.Linear(self.feature_dim, 1) if linear_head else None
        _normal_init(self)
        _apply_spectral_norm(self)

    def features(self, x: Tensor) -> Tensor:
        _check_images(x, self.img_channels, self.resolution)
        return self.main(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is None:
            raise RuntimeError("this discriminator was built with linear_head=False; use features(x) and your own head")
        return self.linear(self.features(x)).squeeze(1)


class SNBasicBlock(nn.Module):
    """conv3x3(stride) - lrelu - conv3x3, plus the (1x1 conv) shortcut, then lrelu; no BatchNorm."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.shortcut = (nn.Conv2d(in_channels, channels, 1, stride)
                         if stride != 1 or in_channels != channels else None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x), LRELU_SLOPE))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.leaky_relu(out + skip, LRELU_SLOPE)


class SNResNetDiscriminator(nn.Module):
    """SNResNet-18 D; `features(x)` -> (B, feature_dim), `forward(x)` -> logits (B,)."""

    def __init__(self, width: float = 1.0, img_channels: int = 3, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 linear_head: bool = True):
        super().__init__()
        _check_width(width)
        widths = [_channels(c, width) for c in (64, 128, 256, 512)]
        self.img_channels = img_channels
        self.conv1 = nn.Conv2d(img_channels, widths[0], 3, 1, 1)
        stages, c_in = [], widths[0]
        for i, (c, n) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for j in range(n):
                stage.append(SNBasicBlock(c_in, c, 2 if i > 0 and j == 0 else 1))
                c_in = c
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = widths[-1]
        self.linear = nn.Linear(self.feature_dim, 1) if linear_head else None
        _apply_spectral_norm(self)  # PyTorch's default init, as the official SNResNet

    def features(self, x: Tensor) -> Tensor:
        _check_images(x, self.img_channels, None)
        out = F.leaky_relu(self.conv1(x), LRELU_SLOPE)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(2, 3))  # = avg_pool2d(4) at 32x32, where the last map is 4x4

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is None:
            raise RuntimeError("this discriminator was built with linear_head=False; use features(x) and your own head")
        return self.linear(self.features(x)).squeeze(1)


class DiscriminatorFeatures(nn.Module):
    """A discriminator's penultimate features ``D.features`` of images in [0, 1] (what
    ``shared.trainers.linear_eval.extract_features`` feeds), D seeing its own [-1, 1] range."""

    def __init__(self, D: nn.Module):
        super().__init__()
        self.D = D

    def forward(self, x: Tensor) -> Tensor:
        return self.D.features(x * 2 - 1)


def sngan(discriminator: Literal["sndcgan", "snresnet18"] = "sndcgan", width: float = 1.0, z_dim: int = 128,
          linear_head: bool = True) -> tuple[SNDCGANGenerator, nn.Module]:
    """ContraD's CIFAR pairs at 32x32: G = SNDCGAN with D = SNDCGAN or SNResNet-18, both at `width`."""
    G = SNDCGANGenerator(z_dim=z_dim, width=width)
    if discriminator == "sndcgan":
        return G, SNDCGANDiscriminator(width=width, linear_head=linear_head)
    if discriminator == "snresnet18":
        return G, SNResNetDiscriminator(width=width, linear_head=linear_head)
    raise ValueError(f"discriminator must be 'sndcgan' or 'snresnet18', got {discriminator!r}")
