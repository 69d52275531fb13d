"""StyleGAN2 (Karras et al. 2020) for small images, in plain PyTorch (no custom CUDA ops).

Generator: a mapping network (z normalised by its RMS, `map_layers` equalized-lr
FC layers with lr multiplier 0.01 and lrelu 0.2 * sqrt(2)) gives w, broadcast to
one w per layer ("ws"); the synthesis network starts from a learned 4x4 constant
and, per resolution, runs modulated + demodulated 3x3 convolutions, adds
per-pixel noise scaled by a learned strength, adds a bias and applies lrelu; the
"skip" architecture sums a toRGB output (modulated 1x1, no demodulation) of every
resolution into the upsampled image. Discriminator: "resnet" architecture
(fromRGB at the top resolution, residual blocks scaled by 1/sqrt(2), each halving
the resolution), then minibatch standard deviation, a 3x3 conv, an FC layer
(`features`) and the output FC (one logit).

Semantics follow NVlabs' stylegan2-ada-pytorch `training/networks.py` and the TF
StyleGAN2 that DiffAugment's CIFAR code uses (read, not copied). Channels at
resolution r are min(channel_base // r, channel_max).

Deviations, on purpose:
- Resampling uses the same [1, 3, 3, 1] FIR filter with zero padding, built from
  grouped convolutions; the filter is applied before the 3x3 convolution (G:
  upsample then conv; D: blur then strided conv) where the official code fuses a
  transposed / strided conv with the filter. Both are linear and shift-invariant,
  so they agree away from the image border.
- No fp16 and no activation clamping (`conv_clamp`): bf16 autocast has float32's range.
- Style mixing draws one crossover layer per sample, as the TF StyleGAN2 code that
  DiffAugment uses (ADA draws one per batch).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)  # keeps the activations' second moment through lrelu (StyleGAN's def_gain)
FIR = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resampling filter


# ---------------------------------------------------------------- config and presets

@dataclasses.dataclass
class StyleGAN2Config:
    """Architecture sizes. Defaults: the "paper" preset (see `PRESETS`)."""
    z_dim: int = 512
    w_dim: int = 512
    channel_base: int = 4096  # channels(r) = min(channel_base // r, channel_max)
    channel_max: int = 512
    map_layers: int = 8
    mbstd_group: int = 4
    resolution: int = 32
    img_channels: int = 3
    d_architecture: Literal["resnet", "orig"] = "resnet"

    def __post_init__(self):
        for name in ("z_dim", "w_dim", "channel_base", "channel_max", "map_layers", "mbstd_group", "img_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.d_architecture not in ("resnet", "orig"):
            raise ValueError(f"d_architecture must be 'resnet' or 'orig', got {self.d_architecture!r}")


PRESETS: dict[str, StyleGAN2Config] = {
    # DiffAugment-stylegan2/run_cifar.py (TF; the code gan_simclr used and the source of the
    # suite's quoted 10%-CIFAR FIDs): fmap_base 2048 in TF's nf(stage) = fmap_base / 2^stage is
    # channel_base 4096 here -> 512, 512, 256, 128 channels at 4, 8, 16, 32; G_mapping's
    # default 8 layers, z = w = 512; D_stylegan2 "resnet" with mbstd group 4. ContraD's
    # StyleGAN2 (rosinality-based, small32=True, n_mlp=8, residual D, group 4) is the same.
    "paper": StyleGAN2Config(),
    # stylegan2-ada-pytorch train.py --cfg=cifar: fmaps 1 -> channel_base 32768 (512 channels at
    # every resolution up to 64), map 2, mbstd 32, and D architecture "orig" (no residual skips).
    "ada_cifar": StyleGAN2Config(channel_base=32768, map_layers=2, mbstd_group=32, d_architecture="orig"),
    # 128-128-64-32 channels: one D + G step at batch 32, 32x32, channels_last took 0.22-0.27 s on
    # 2 (shared) CPU cores with lazy R1 (r1_interval 16), 0.37 s with R1 every step.
    "mini": StyleGAN2Config(z_dim=128, w_dim=128, channel_base=1024, channel_max=128, map_layers=2),
    "smoke": StyleGAN2Config(z_dim=32, w_dim=32, channel_base=128, channel_max=32, map_layers=2),
}


def stylegan2(cfg: StyleGAN2Config, d_head: bool = True) -> tuple["Generator", "Discriminator"]:
    """A (Generator, Discriminator) pair built from one config; `d_head=False`: D without its FC and output
    layers (`Discriminator(head=False)`), for a method that brings its own heads."""
    G = Generator(cfg.z_dim, cfg.w_dim, cfg.resolution, cfg.img_channels, cfg.channel_base,
                  cfg.channel_max, cfg.map_layers)
    D = Discriminator(cfg.resolution, cfg.img_channels, cfg.channel_base, cfg.channel_max,
                      cfg.mbstd_group, cfg.d_architecture, head=d_head)
    return G, D


def stylegan2_cifar(scale: str, d_head: bool = True, **overrides) -> tuple["Generator", "Discriminator"]:
    """The preset `scale` ("paper", "ada_cifar", "mini", "smoke") with field overrides."""
    if scale not in PRESETS:
        raise ValueError(f"unknown StyleGAN2 preset {scale!r}; known: {sorted(PRESETS)}")
    return stylegan2(dataclasses.replace(PRESETS[scale], **overrides), d_head=d_head)


def channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


# ---------------------------------------------------------------- building blocks

def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def fir_filter() -> Tensor:
    """The 2-D resampling filter (4, 4), the outer product of FIR normalised to sum 1.

    Modules keep it as a non-persistent buffer so it lives on the model's device
    (no host-to-device copy per call).
    """
    f = torch.tensor(FIR)
    k = torch.outer(f, f)
    return k / k.sum()


def _per_channel(f: Tensor, x: Tensor, gain: float) -> Tensor:
    return (f.to(x.dtype) * gain).expand(x.shape[1], 1, 4, 4)


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x upsampling with the filter `f` (zero insertion, filter with gain 4, zero borders).

    In the interior this equals bilinear interpolation with align_corners=False.
    """
    return F.conv_transpose2d(x, _per_channel(f, x, 4.0), stride=2, padding=1, groups=x.shape[1])


def blur2d(x: Tensor, f: Tensor, padding: int) -> Tensor:
    """The low-pass filter `f` (gain 1) with zero padding; (H, W) -> (H + 2p - 3, W + 2p - 3)."""
    return F.conv2d(x, _per_channel(f, x, 1.0), padding=padding, groups=x.shape[1])


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate.

    Weights are stored as N(0, 1/lr_mul^2) and scaled at run time by lr_mul/sqrt(fan_in),
    so Adam's step moves every layer at the same relative rate; `lr_mul` (0.01 in the
    mapping network) slows a layer down. The bias is stored divided by lr_mul.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: Literal["linear", "lrelu"] = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else self.bias * self.lr_mul
        x = F.linear(x, self.weight * self.weight_gain, b)
        return lrelu(x) if self.activation == "lrelu" else x


class EqualConv2d(nn.Module):
    """k x k convolution with equalized learning rate, optional bias, lrelu and 2x downsampling.

    With `down`, the input is FIR-blurred (padded so the output is exactly half the
    size) and the convolution has stride 2, as conv2d_resample's down path.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 activation: Literal["linear", "lrelu"] = "linear", down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel * kernel)
        self.activation, self.down, self.kernel = activation, down, kernel
        if down:
            self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        if self.down:
            # filter taps 4 - stride 2 + kernel - 1, split evenly: an output of exactly H / 2
            x = blur2d(x, self.fir, padding=(self.kernel + 1) // 2)
            x = F.conv2d(x, w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=self.kernel // 2)
        return lrelu(x) if self.activation == "lrelu" else x


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True,
                     fused: bool = True) -> Tensor:
    """StyleGAN2's weight (de)modulation.

    Sample b convolves with w'_oikk = s_bi w_oikk, demodulated to
    w''_oikk = w'_oikk / sqrt(sum_ikk w'_oikk^2 + 1e-8) so that unit-variance inputs give
    unit-variance outputs. `fused` runs one grouped convolution over the batch (a
    kernel per sample); otherwise inputs are scaled by s, convolved with the shared
    weight and outputs scaled by the demodulation factors (ADA's training path). Same maths.

    Args:
        x: (B, I, H, W) input.
        weight: (O, I, k, k) shared weight, k odd (same padding).
        styles: (B, I) per-sample input scales s.
    """
    b, i, h, w_ = x.shape
    o, _, k, _ = weight.shape
    assert styles.shape == (b, i), f"styles must be {(b, i)}, got {tuple(styles.shape)}"
    dcoefs = None
    if demodulate:
        # sum_ikk (s_bi w_oikk)^2 = sum_i s_bi^2 (sum_kk w_oikk^2): a (B, I) @ (I, O) product
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    if fused:
        wb = weight.unsqueeze(0) * styles.reshape(b, 1, i, 1, 1)
        if dcoefs is not None:
            wb = wb * dcoefs.reshape(b, o, 1, 1, 1)
        y = F.conv2d(x.reshape(1, b * i, h, w_), wb.reshape(b * o, i, k, k), padding=k // 2, groups=b)
        return y.reshape(b, o, h, w_)
    y = F.conv2d(x * styles.reshape(b, i, 1, 1), weight, padding=k // 2)
    return y if dcoefs is None else y * dcoefs.reshape(b, o, 1, 1)


def minibatch_stddev(x: Tensor, group_size: int, num_channels: int = 1) -> Tensor:
    """Append the minibatch standard deviation as `num_channels` extra feature maps.

    The batch is split into groups of G = min(group_size, N) samples, strided as in
    StyleGAN: sample n belongs to group n mod (N / G). Per group, the population
    standard deviation (+1e-8 under the root) of every feature over the group's
    samples is averaged over features and pixels and broadcast to its members.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"minibatch_stddev: batch {n} is not divisible by the group size {g}")
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w).float()  # (G, M, F, c, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (M, F, c, H, W)
    y = y.mean(dim=[2, 3, 4]).reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


# ---------------------------------------------------------------- generator

class MappingNetwork(nn.Module):
    """z -> w: RMS-normalise z, then `num_layers` FC layers (lr multiplier 0.01, lrelu)."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu")
                                      for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, z: Tensor) -> Tensor:
        z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        return self.layers(z)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally after 2x upsampling), noise, bias, lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        # No equalized-lr gain: demodulation makes the output independent of the weight's scale.
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.up = up
        if up:
            self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str, fused: bool) -> Tensor:
        if self.up:
            x = upsample2d(x, self.fir)
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True, fused=fused)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const
        return lrelu(x + noise * self.noise_strength + self.bias.reshape(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation, plus bias."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)  # equalized lr, folded into the styles

    def forward(self, x: Tensor, w: Tensor, fused: bool) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused) + self.bias.reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0), conv1, toRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int):
        super().__init__()
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.num_conv = 1 if self.conv0 is None else 2
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str,
                fused: bool) -> tuple[Tensor, Tensor]:
        """`ws`: (B, num_conv + 1, w_dim), one w per conv and one for toRGB."""
        if self.conv0 is None:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, fused)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode, fused)
        y = self.torgb(x, ws[:, self.num_conv], fused)
        img = y if img is None else upsample2d(img, self.fir) + y
        return x, img


class Generator(nn.Module):
    """StyleGAN2 generator, "skip" architecture; `forward(z)` -> images of about [-1, 1].

    Layers get their w in order; toRGB at resolution r shares its w with the first conv
    at 2r (as in StyleGAN2), so there are num_ws = 2 log2(resolution) - 2 ws.
    `fused_modconv` picks the grouped-conv form of `modulated_conv2d` (one kernel per
    sample); the default shared-weight form is ADA's training path and measured 1.7x
    faster per training step on 2 CPU cores (mini preset, batch 32). Same maths.
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 32, img_channels: int = 3,
                 channel_base: int = 4096, channel_max: int = 512, map_layers: int = 8,
                 w_avg_beta: float = 0.995, fused_modconv: bool = False):
        super().__init__()
        self.z_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, w_dim, img_resolution, img_channels
        self.w_avg_beta = w_avg_beta  # decay of the running mean of w, for truncation
        self.fused_modconv = fused_modconv
        self.mapping = MappingNetwork(z_dim, w_dim, map_layers)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        blocks, res, in_ch = [], 4, 0
        while res <= img_resolution:
            out_ch = channels(res, channel_base, channel_max)
            blocks.append(SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels))
            in_ch, res = out_ch, res * 2
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in blocks) + 1

    def ws(self, z: Tensor, truncation_psi: float = 1.0, style_mixing_prob: float = 0.0) -> Tensor:
        """Map z (B, z_dim) to per-layer ws (B, num_ws, w_dim); in training mode, track the mean w."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be (B, {self.z_dim}), got {tuple(z.shape)}"
        w = self.mapping(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if style_mixing_prob > 0:
            # Layers from a random crossover on take their w from a second latent.
            b = z.shape[0]
            w2 = self.mapping(torch.randn_like(z))
            cutoff = torch.randint(1, self.num_ws, (b,), device=z.device)
            cutoff = torch.where(torch.rand(b, device=z.device) < style_mixing_prob, cutoff, self.num_ws)
            second = torch.arange(self.num_ws, device=z.device).unsqueeze(0) >= cutoff.unsqueeze(1)
            ws = torch.where(second.unsqueeze(2), w2.unsqueeze(1), ws)
        if truncation_psi != 1:
            ws = self.w_avg + truncation_psi * (ws - self.w_avg)
        return ws

    def synthesis(self, ws: Tensor, noise_mode: Literal["random", "const"] = "random") -> Tensor:
        if noise_mode not in ("random", "const"):
            raise ValueError(f"noise_mode must be 'random' or 'const', got {noise_mode!r}")
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), \
            f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}"
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i:i + block.num_conv + 1], noise_mode, self.fused_modconv)
            i += block.num_conv
        return img

    def forward(self, z: Tensor, truncation_psi: float = 1.0, style_mixing_prob: float = 0.0,
                noise_mode: Literal["random", "const"] = "random") -> Tensor:
        return self.synthesis(self.ws(z, truncation_psi, style_mixing_prob), noise_mode)


# ---------------------------------------------------------------- discriminator

class DiscriminatorBlock(nn.Module):
    """3x3 conv, 3x3 conv with 2x downsampling; "resnet" adds a 1x1 downsampled skip, both scaled 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.conv0(x))
        return y if self.skip is None else (y + self.skip(x)) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """StyleGAN2 discriminator; `forward(x)` -> logits (B,), `features(x)` -> (B, feature_dim).

    `features` is the output of the FC layer after the last conv, the input of the
    output layer. With `head=False` the FC and output layers are not built and `features`
    is the flattened 4x4 conv output (16 x channels wide): the trunk ContraD's official
    StyleGAN2 D (`ResidualDiscriminatorP.penultimate`) hands to its own heads.
    """

    def __init__(self, img_resolution: int = 32, img_channels: int = 3, channel_base: int = 4096,
                 channel_max: int = 512, mbstd_group: int = 4, architecture: Literal["resnet", "orig"] = "resnet",
                 head: bool = True):
        super().__init__()
        ch = lambda r: channels(r, channel_base, channel_max)  # noqa: E731
        self.img_resolution, self.img_channels, self.mbstd_group = img_resolution, img_channels, mbstd_group
        self.from_rgb = EqualConv2d(img_channels, ch(img_resolution), 1, activation="lrelu")
        blocks, res = [], img_resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(ch(res), ch(res // 2), residual=architecture == "resnet"))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = ch(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 4 * 4, c4, activation="lrelu") if head else None
        self.out = EqualLinear(c4, 1) if head else None
        self.feature_dim = c4 if head else c4 * 4 * 4

    def features(self, x: Tensor) -> Tensor:
        r = self.img_resolution
        assert x.ndim == 4 and x.shape[1:] == (self.img_channels, r, r), \
            f"expected images (B, {self.img_channels}, {r}, {r}), got {tuple(x.shape)}"
        x = self.blocks(self.from_rgb(x))
        x = self.conv(minibatch_stddev(x, self.mbstd_group)).flatten(1)
        return x if self.fc is None else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.out is None:
            raise RuntimeError("this discriminator was built with head=False; use features(x) and your own head")
        return self.out(self.features(x)).squeeze(1)
