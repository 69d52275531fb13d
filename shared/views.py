"""Batched, differentiable image augmentations: SimCLR views and DiffAugment.

The entry point for self-supervised training is `SimCLRViews(cfg)(x)`, which
returns `n_views` independent augmentations of a batch (the view generator of
STYLE.md item 2); `simclr_view` makes one. `diff_augment` is DiffAugment
(Zhao et al. 2020) for GAN training on images in [-1, 1].

Everything runs on the batch's own device with independent random parameters
per sample and no per-image Python loop, and every op is differentiable with
respect to the images (ContraD and DiffAugment back-propagate through them; the
HSV jitter's HSV step passes its gradient straight through, as ContraD's does).
Each random function takes `generator` (None = torch's global RNG for that
device; otherwise a generator on the images' device); a seeded generator gives
identical output.

Colour jitter comes in two kinds (`SimCLRViewConfig.jitter`): "torchvision"
(`color_jitter`, torchvision's ColorJitter) and "hsv" (`hsv_color_jitter`, the
colour-jitter layer of ContraD's official code, jh-jeong/ContraD augment/color_jitter.py:
contrast around each channel's own mean, then hue, saturation and value moved in HSV
space with a straight-through gradient, the two groups' order drawn once per call).

Deviations from torchvision, on purpose:
- crop + resize is one bilinear `grid_sample` (align_corners=False, border
  padding) without antialiasing, so a crop edge may blend with the pixel just
  outside the box where torchvision clamps at the box;
- grayscale uses the ITU-R 601 weights 0.299/0.587/0.114 (torchvision: 0.2989
  for red), so a gray pixel is its own grayscale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
JITTERS = ("torchvision", "hsv")  # SimCLRViewConfig.jitter: `color_jitter` or `hsv_color_jitter`
# The HSV jitter's hue factor, drawn in [-hue, hue], shifts the hue by factor * 255/360 of a turn
# (ContraD's RandomHSVFunction; hue 0.1 is a shift of at most 0.0708 turns, not 0.1).
HSV_HUE_TURNS = 255 / 360
# torchvision's RandomResizedCrop tries this many boxes before its central fallback.
CROP_TRIES = 10


# ---------------------------------------------------------------- config

@dataclass
class SimCLRViewConfig:
    """SimCLR's augmentation recipe (Chen et al. 2020, appendix A; CIFAR-style defaults).

    Colour jitter strength s = 1 (`from_strength` builds other strengths);
    `blur_kernel_frac` is the blur kernel side as a fraction of the image side
    (10% in the paper), rounded to an odd integer >= 3. `jitter` picks the colour
    jitter's semantics: "torchvision" (`color_jitter`) or "hsv" (`hsv_color_jitter`,
    ContraD's layer, RGB images only), with the same four strengths.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    jitter: str = "torchvision"

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or len(value) != 2:
                raise ValueError(f"{name} must be a pair (min, max), got {value!r}")
            lo, hi = (float(v) for v in value)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < min <= max, got {value!r}")
            setattr(self, name, (lo, hi))
        if self.crop_scale[1] > 1:
            raise ValueError(f"crop_scale max must be <= 1, got {self.crop_scale!r}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "solarize_threshold"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            check_range(name, getattr(self, name), 0.0, math.inf)
        check_range("hue", self.hue, 0.0, 0.5)
        if not self.blur_kernel_frac > 0:
            raise ValueError(f"blur_kernel_frac must be > 0, got {self.blur_kernel_frac!r}")
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {list(JITTERS)}, got {self.jitter!r}")

    @classmethod
    def from_strength(cls, strength: float, blur: bool = True, **overrides) -> "SimCLRViewConfig":
        """SimCLR's colour jitter of strength s (0.8s, 0.8s, 0.8s, 0.2s); blur p 0.5 or off."""
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength!r}")
        fields = dict(brightness=0.8 * strength, contrast=0.8 * strength, saturation=0.8 * strength,
                      hue=0.2 * strength, blur_p=0.5 if blur else 0.0)
        return cls(**{**fields, **overrides})


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    """Raise a ValueError naming `name` unless `value` is a number (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images (B, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")


def _uniform(n: int, lo: float, hi: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, device=x.device, dtype=x.dtype, generator=generator)


def _coin(n: int, p: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=x.device, generator=generator) < p


# ---------------------------------------------------------------- crop and flip

def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Integer crop boxes (top, left, h, w), shape (n, 4), as torchvision's RandomResizedCrop.

    Area fraction ~ U(scale), log aspect (w/h) ~ U(log ratio), sides rounded to
    pixels. Each sample takes the first of `CROP_TRIES` draws that fits the image
    (all drawn at once); samples with none fall back to torchvision's central
    crop of the whole image clamped to the ratio range.
    """
    if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale and ratio must be (min, max) with 0 < min <= max, got {scale!r}, {ratio!r}")
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_TRIES, device=device, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, CROP_TRIES, device=device, generator=generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    ok = fits.any(dim=1)
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))

    u = torch.rand(n, 2, device=device, generator=generator)
    top = torch.where(ok, torch.floor(u[:, 0] * (height - h + 1)), torch.full_like(h, (height - fh) // 2))
    left = torch.where(ok, torch.floor(u[:, 1] * (width - w + 1)), torch.full_like(w, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1).long()


def random_resized_crop(x: Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                        flip_p: float = 0.0, out_size: int | tuple[int, int] | None = None,
                        generator: torch.Generator | None = None) -> Tensor:
    """Random resized crop (torchvision semantics) plus horizontal flip with probability `flip_p`.

    Boxes come from `sample_crop_boxes` (drawn first, then the flips); crop,
    resize to `out_size` (default: the input size) and flip are one affine
    `grid_sample`, bilinear with align_corners=False.
    """
    _check_images(x)
    check_range("flip_p", flip_p, 0.0, 1.0)
    b, c, height, width = x.shape
    if out_size is None:
        out_size = (height, width)
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    top, left, h, w = sample_crop_boxes(b, height, width, scale, ratio, generator, x.device).to(x.dtype).unbind(1)
    sign = 1.0 - 2.0 * _coin(b, flip_p, x, generator).to(x.dtype)
    # Normalised coordinates span the outer pixel edges (align_corners=False),
    # so the box [left, left + w] maps to centre (2 left + w) / W - 1, half-width w / W.
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp(0, 1)  # bilinear weights can round 1 ulp outside [0, 1]


def random_horizontal_flip(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability `p`; exact (no resampling), unlike a crop with flip."""
    _check_images(x)
    check_range("p", p, 0.0, 1.0)
    hit = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(hit, x.flip(-1), x)


# ---------------------------------------------------------------- colour

def _grayscale(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of RGB images; single-channel images are returned as they are."""
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def _adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def _adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def _adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else _blend(x, _grayscale(x), factor)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by `shift` turns per sample; a zero shift returns the pixels untouched."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    v, _ = x.max(dim=1)
    delta = v - x.min(dim=1).values
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))  # keeps gradients finite on grays
    sextant = torch.where(v == r, (g - b) / safe_delta,
                          torch.where(v == g, (b - r) / safe_delta + 2, (r - g) / safe_delta + 4))
    hue = (sextant / 6 + shift.view(-1, 1, 1)) % 1.0
    sat = delta / torch.where(v > 0, v, torch.ones_like(v))
    return torch.where(shift.view(-1, 1, 1, 1) == 0, x, _hsv_to_rgb(hue, sat, v).clamp(0, 1))


def _hsv_to_rgb(hue: Tensor, sat: Tensor, v: Tensor) -> Tensor:
    """(B, H, W) hue in turns, saturation and value -> (B, 3, H, W) RGB.

    Closed form: channel n (R=5, G=3, B=1) is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    """
    k = (hue.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + 6 * hue.unsqueeze(1)) % 6
    return v.unsqueeze(1) * (1 - sat.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1))


_JITTER_OPS = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _adjust_hue)
_JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def _jitter_params(n: int, brightness: float, contrast: float, saturation: float, hue: float, p: float,
                   x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per-sample factors (n, 4) in op order brightness, contrast, saturation, hue, and the
    position (n, 4) of each op in that sample's random order; samples not jittered get identities."""
    factors = torch.stack([_uniform(n, max(0.0, 1 - brightness), 1 + brightness, x, generator),
                           _uniform(n, max(0.0, 1 - contrast), 1 + contrast, x, generator),
                           _uniform(n, max(0.0, 1 - saturation), 1 + saturation, x, generator),
                           _uniform(n, -hue, hue, x, generator)], dim=1)
    order = torch.rand(n, 4, device=x.device, generator=generator).argsort(dim=1)  # a random permutation per row
    position = order.argsort(dim=1)
    apply = _coin(n, p, x, generator).unsqueeze(1)
    return torch.where(apply, factors, x.new_tensor(_JITTER_IDENTITY)), position


def color_jitter(x: Tensor, brightness: float, contrast: float, saturation: float, hue: float, p: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """torchvision's ColorJitter, applied to each sample with probability `p` (RandomApply).

    Factors are U[max(0, 1-b), 1+b] for brightness, contrast and saturation and
    U[-hue, hue] turns for hue, and the four ops run in a random order per
    sample, clamping to [0, 1] after each. Vectorised as four passes: in pass k
    each op runs once, on the jittered samples whose permutation puts it at
    position k (gathered, transformed, scattered back), so the whole jitter costs
    about one application of each op to the batch.
    """
    _check_images(x)
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        check_range(name, value, 0.0, math.inf)
    check_range("hue", hue, 0.0, 0.5)
    check_range("p", p, 0.0, 1.0)
    factors, position = _jitter_params(x.shape[0], brightness, contrast, saturation, hue, p, x, generator)
    jittered = (factors != x.new_tensor(_JITTER_IDENTITY)).any(dim=1)
    for k in range(4):
        for j, op in enumerate(_JITTER_OPS):
            idx = torch.nonzero(jittered & (position[:, j] == k)).squeeze(1)
            if idx.numel():
                x = x.index_copy(0, idx, op(x.index_select(0, idx), factors[idx, j]))
    return x


# ---------------------------------------------------------------- colour: the HSV jitter (ContraD's layer)

def _hue_atan2(x: Tensor) -> Tensor:
    """(B, H, W) hue in turns [0, 1] of RGB images from atan2 (ContraD's rgb2hsv), not the hexagonal sextants.

    atan2(sqrt(3) (g - b), 2r - g - b) agrees with the hexagonal hue at multiples of 30 degrees and
    is within about 1.2 degrees of it elsewhere; a gray pixel gets hue 0.
    """
    r, g, b = x.unbind(dim=1)
    angle = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    return (angle % (2 * math.pi)) / (2 * math.pi)


def _contrast_per_channel(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each channel's deviation from that channel's own spatial mean by `factor` (B,), clamp to [0, 1]."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor.view(-1, 1, 1, 1) + mean).clamp(0, 1)


def _hsv_shift(x: Tensor, hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """Move RGB images in HSV space: hue + `hue` * HSV_HUE_TURNS turns (mod 1), saturation and value
    times their factors, each clamped to [0, 1], back to RGB. All factors (B,).

    Straight-through: the gradient wrt x is the identity (ContraD's RandomHSVFunction.backward),
    none reaches the factors. The value is exactly the HSV round trip's (x - x.detach() adds 0).
    """
    v = x.max(dim=1).values
    sat = 1 - x.min(dim=1).values / (v + 1e-8)  # ContraD's rgb2hsv (black: s = 1, v = 0, so still black)
    h = ((_hue_atan2(x) + hue.view(-1, 1, 1) * HSV_HUE_TURNS) % 1.0).clamp(0, 1)
    s = (sat * saturation.view(-1, 1, 1)).clamp(0, 1)
    v = (v * value.view(-1, 1, 1)).clamp(0, 1)
    rgb = _hsv_to_rgb(h.detach(), s.detach(), v.detach())
    return rgb + (x - x.detach())


@dataclass
class HSVJitterParams:
    """One call's draws of `hsv_color_jitter`: per sample (n,) and the op-group order of the whole call."""
    apply: Tensor  # bool: the sample is jittered (RandomApply with p)
    contrast_first: bool  # contrast then HSV, or HSV then contrast: one order for every sample of the call
    contrast: Tensor  # factor U[max(0, 1 - contrast), 1 + contrast]
    hue: Tensor  # factor U[-hue, hue]: the hue moves by factor * HSV_HUE_TURNS of a turn
    saturation: Tensor  # factor U[max(0, 1 - saturation), 1 + saturation]
    value: Tensor  # brightness as a factor on V: U[max(0, 1 - brightness), 1 + brightness]


def hsv_jitter_params(n: int, brightness: float, contrast: float, saturation: float, hue: float, p: float,
                      x: Tensor, generator: torch.Generator | None = None) -> HSVJitterParams:
    """The draws of `hsv_color_jitter` for a call on `n` samples like `x`, in the order the jitter draws
    them (the apply mask, the order, then contrast, hue, saturation and value factors): the same
    generator state gives the same parameters as the jitter itself uses."""
    apply = _coin(n, p, x, generator)
    contrast_first = bool(torch.rand((), device=x.device, generator=generator) < 0.5)  # one sync per call
    return HSVJitterParams(
        apply=apply, contrast_first=contrast_first,
        contrast=_uniform(n, max(0.0, 1 - contrast), 1 + contrast, x, generator),
        hue=_uniform(n, -hue, hue, x, generator),
        saturation=_uniform(n, max(0.0, 1 - saturation), 1 + saturation, x, generator),
        value=_uniform(n, max(0.0, 1 - brightness), 1 + brightness, x, generator))


def hsv_color_jitter(x: Tensor, brightness: float, contrast: float, saturation: float, hue: float, p: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """ContraD's colour jitter (jh-jeong/ContraD augment/color_jitter.py), applied to each RGB sample
    with probability `p`.

    Two op groups, in one order for the whole call (a fair coin: contrast first or HSV first):
    - contrast: each channel's deviation from its own spatial mean times U[max(0, 1-c), 1+c], clamped
      to [0, 1] (torchvision: around the mean of the grayscale image);
    - HSV: RGB -> HSV with the atan2 hue, hue + U[-hue, hue] * 255/360 turns mod 1 (torchvision: up
      to `hue` turns), saturation and value (brightness) each times U[max(0, 1-s), 1+s], clamped to
      [0, 1], back to RGB. Its gradient wrt the images is the identity (straight-through), as the
      official autograd Function's; contrast has its true gradient.
    The HSV round trip is not exactly the identity even with unit factors (the atan2 hue differs
    from the hexagonal one by up to about 1.2 degrees). Every sample's factors are drawn, the
    jittered ones replace their input (`hsv_jitter_params` gives the draws). Half-precision images
    (bf16 fakes under CUDA autocast) are jittered in float32 and returned in their own dtype.
    """
    _check_images(x)
    if x.shape[1] != 3:
        raise ValueError(f"jitter 'hsv' needs RGB images (B, 3, H, W), got {tuple(x.shape)}")
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        check_range(name, value, 0.0, math.inf)
    check_range("hue", hue, 0.0, 0.5)
    check_range("p", p, 0.0, 1.0)
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # atan2 and the hue arithmetic in bf16 move colours by up to 0.07
    draws = hsv_jitter_params(x.shape[0], brightness, contrast, saturation, hue, p, x, generator)
    y = x
    for group in ("contrast", "hsv") if draws.contrast_first else ("hsv", "contrast"):
        y = (_contrast_per_channel(y, draws.contrast) if group == "contrast"
             else _hsv_shift(y, draws.hue, draws.saturation, draws.value))
    return torch.where(draws.apply.view(-1, 1, 1, 1), y, x).to(dtype)


JITTER_FUNCTIONS = {"torchvision": color_jitter, "hsv": hsv_color_jitter}


def random_grayscale(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each RGB sample by its grayscale (kept as C channels) with probability `p`."""
    _check_images(x)
    check_range("p", p, 0.0, 1.0)
    hit = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(hit, _grayscale(x).expand_as(x), x)


def gaussian_blur(x: Tensor, p: float, sigma: tuple[float, float], kernel_size: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur with probability `p`, sigma ~ U(sigma) per sample (torchvision's GaussianBlur).

    Separable: one grouped depthwise conv per axis with a kernel per sample,
    reflect padding; unblurred samples get a delta kernel.
    """
    _check_images(x)
    check_range("p", p, 0.0, 1.0)
    b, c, height, width = x.shape
    if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size // 2 >= min(height, width):
        raise ValueError(f"kernel_size must be odd with kernel_size // 2 < the image side "
                         f"{min(height, width)}, got {kernel_size}")
    if p == 0:
        return x  # recipes without blur (gan_simclr) skip the convolution entirely
    s = _uniform(b, sigma[0], sigma[1], x, generator).view(b, 1)
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - kernel_size // 2
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(x.dtype).expand_as(kernel)
    kernel = torch.where(_coin(b, p, x, generator).view(b, 1), kernel, delta)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, k): one kernel per (sample, channel) group
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, height, width).clamp(0, 1)  # the normalised kernel's rounding can step 1 ulp outside


def solarize(x: Tensor, p: float, threshold: float, generator: torch.Generator | None = None) -> Tensor:
    """Invert pixels >= `threshold` (x -> 1 - x) in each sample with probability `p`."""
    _check_images(x)
    check_range("p", p, 0.0, 1.0)
    if p == 0:
        return x
    hit = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(hit & (x >= threshold), 1 - x, x)


def blur_kernel_size(frac: float, side: int) -> int:
    """The odd kernel side nearest `frac * side`, at least 3 (SimCLR: 10% of the image side)."""
    return max(3, 2 * round((frac * side - 1) / 2) + 1)


# ---------------------------------------------------------------- SimCLR views

def simclr_view(x: Tensor, cfg: SimCLRViewConfig, generator: torch.Generator | None = None) -> Tensor:
    """One SimCLR view of float images in [0, 1]: crop + flip, colour jitter (`cfg.jitter`'s kind),
    grayscale, blur, solarize.

    Output has the input's shape and dtype and stays in [0, 1].
    """
    _check_images(x)
    x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.flip_p, generator=generator)
    jitter = JITTER_FUNCTIONS[cfg.jitter]
    x = jitter(x, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p, generator)
    x = random_grayscale(x, cfg.grayscale_p, generator)
    kernel = blur_kernel_size(cfg.blur_kernel_frac, min(x.shape[-2:]))
    x = gaussian_blur(x, cfg.blur_p, cfg.blur_sigma, kernel, generator)
    return solarize(x, cfg.solarize_p, cfg.solarize_threshold, generator)


class SimCLRViews:
    """View generator `views(x) -> list[Tensor]`: `n_views` independent `simclr_view`s of a batch.

    Accepts float images in [0, 1] or uint8 images in [0, 255] (converted to float32).
    """

    def __init__(self, cfg: SimCLRViewConfig, n_views: int = 2):
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        self.cfg = cfg
        self.n_views = n_views

    def __call__(self, x: Tensor, index: Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[Tensor]:
        """The views of batch ``x``; ``index`` (the samples' dataset rows, the view-source protocol) is unused."""
        if isinstance(index, torch.Generator):  # the older call form views(x, generator)
            index, generator = None, index
        if x.dtype == torch.uint8:
            x = x.float() / 255
        # All views in one batch: the draws are per sample anyway, and one call halves the overhead.
        views = simclr_view(x.repeat(self.n_views, 1, 1, 1), self.cfg, generator)
        return list(views.chunk(self.n_views))


# ---------------------------------------------------------------- DiffAugment

def rand_brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment brightness: add U(-0.5, 0.5) per sample."""
    return x + _uniform(x.shape[0], -0.5, 0.5, x, generator).view(-1, 1, 1, 1)


def rand_saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment saturation: scale the deviation from the channel mean by U(0, 2) per sample."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x.shape[0], 0.0, 2.0, x, generator).view(-1, 1, 1, 1) + mean


def rand_contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment contrast: scale the deviation from the image mean by U(0.5, 1.5) per sample."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x.shape[0], 0.5, 1.5, x, generator).view(-1, 1, 1, 1) + mean


def rand_translation(x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None,
                     fill: Literal["zero", "reflect"] = "zero") -> Tensor:
    """DiffAugment translation: integer shifts in [-s, s], s = round(ratio * side), zero fill by default.

    Output pixel (i, j) of a sample is input pixel (i + dy, j + dx); dy (rows) is drawn
    before dx (columns). Where that is outside the image, `fill` decides: "zero" (DiffAugment)
    gives 0; "reflect" reads the image mirrored at its edge, the edge pixel repeated
    (numpy's "symmetric" padding: row -1 is row 0, row H is row H - 1), as ContraD's
    HFlip + translation of CR / bCR. Both fills draw the same shifts.
    """
    if fill not in ("zero", "reflect"):
        raise ValueError(f"rand_translation: fill must be 'zero' or 'reflect', got {fill!r}")
    b, _, height, width = x.shape
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)  # the official rounding
    if fill == "reflect" and (sy > height or sx > width):  # one mirror covers shifts up to the side
        raise ValueError(f"rand_translation: fill 'reflect' needs shifts of at most the side, got ratio {ratio} "
                         f"on {height} x {width} images")
    dy = torch.randint(-sy, sy + 1, (b, 1), device=x.device, generator=generator)
    dx = torch.randint(-sx, sx + 1, (b, 1), device=x.device, generator=generator)
    rows = torch.arange(height, device=x.device) + dy  # (B, H)
    cols = torch.arange(width, device=x.device) + dx  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    if fill == "reflect":
        rows, cols = _reflect_index(rows, height), _reflect_index(cols, width)
        return x[batch, :, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2)
    inside = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)).unsqueeze(1)
    # Advanced indices around a slice put the indexed dims first: (B, H, W, C).
    moved = x[batch, :, rows.clamp(0, height - 1).unsqueeze(2), cols.clamp(0, width - 1).unsqueeze(1)]
    return moved.permute(0, 3, 1, 2) * inside.unsqueeze(1).to(x.dtype)


def _reflect_index(index: Tensor, side: int) -> Tensor:
    """Indices in [-side, 2 side) mirrored into [0, side) with the edge repeated: i < 0 -> -i - 1,
    i >= side -> 2 side - 1 - i."""
    return torch.where(index < 0, -index - 1, torch.where(index >= side, 2 * side - 1 - index, index))


def rand_cutout(x: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment cutout: zero a (ratio*H) x (ratio*W) rectangle per sample, possibly over the edge.

    The rectangle's centre row is U{0, ..., H - (size % 2)} as in the official
    code (rows drawn before columns), its first row centre - size // 2.
    """
    b, _, height, width = x.shape
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + 1 - ch % 2, (b, 1), device=x.device, generator=generator)
    cx = torch.randint(0, width + 1 - cw % 2, (b, 1), device=x.device, generator=generator)
    rows = torch.arange(height, device=x.device) - (cy - ch // 2)  # row offset inside the rectangle
    cols = torch.arange(width, device=x.device) - (cx - cw // 2)
    cut = ((rows >= 0) & (rows < ch)).unsqueeze(2) & ((cols >= 0) & (cols < cw)).unsqueeze(1)
    return x * (~cut).unsqueeze(1).to(x.dtype)


DIFF_AUGMENT_POLICIES = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment (Zhao et al. 2020) of images in [-1, 1], no clamping, differentiable in x.

    `policy` is a comma-separated list of "color" (brightness, saturation,
    contrast), "translation" and "cutout", applied in the order given; an empty
    policy returns x. Apply it to real and fake images alike, in D and G steps.
    """
    _check_images(x)
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIFF_AUGMENT_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; valid: {sorted(DIFF_AUGMENT_POLICIES)}")
    for name in names:
        for op in DIFF_AUGMENT_POLICIES[name]:
            x = op(x, generator=generator)
    return x
