"""Classic augmentation pipelines: switchable ops in a configurable order (`PipelineConfig`), the
function that runs one (`classic_view`) and the view source made of them (`ClassicViews`).

The ops themselves are `shared.views`' functions; this module only orders and switches them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.view_sources.protocol import as_float_images
from shared.views import (JITTER_FUNCTIONS, JITTERS, SimCLRViewConfig, blur_kernel_size, check_range, gaussian_blur,
                          random_grayscale, random_horizontal_flip, random_resized_crop, solarize)

OPS = ("crop", "flip", "jitter", "grayscale", "blur", "solarize")


# ---------------------------------------------------------------- pipeline config

def _pair(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}")
    lo, hi = (float(v) for v in value)
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must satisfy 0 < min <= max, got {value!r}")
    return lo, hi


def _check_switch(name: str, enabled: Any, p: Any) -> None:
    if not isinstance(enabled, bool):
        raise ValueError(f"{name}.enabled must be true or false, got {enabled!r}")
    check_range(f"{name}.p", p, 0.0, 1.0)


@dataclass
class CropOp:
    """Random resized crop (torchvision semantics, `shared.views.sample_crop_boxes`).

    `size`: output side (None: the input's); `p` < 1 leaves the other samples whole
    (resized to `size` if it differs).
    """
    enabled: bool = True
    p: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    size: int | None = None

    def __post_init__(self) -> None:
        _check_switch("crop", self.enabled, self.p)
        self.scale, self.ratio = _pair("crop.scale", self.scale), _pair("crop.ratio", self.ratio)
        if self.scale[1] > 1:
            raise ValueError(f"crop.scale max must be <= 1, got {self.scale!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"crop.size must be a positive int or None, got {self.size!r}")


@dataclass
class FlipOp:
    """Horizontal flip."""
    enabled: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_switch("flip", self.enabled, self.p)


@dataclass
class JitterOp:
    """Colour jitter of kind `kind` (`shared.views.JITTERS`): "torchvision", torchvision's ColorJitter in a
    random order per sample (`shared.views.color_jitter`), or "hsv", ContraD's layer
    (`shared.views.hsv_color_jitter`, RGB only), with the same four strengths."""
    enabled: bool = True
    p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    kind: str = "torchvision"

    def __post_init__(self) -> None:
        _check_switch("jitter", self.enabled, self.p)
        if self.kind not in JITTERS:
            raise ValueError(f"jitter.kind must be one of {list(JITTERS)}, got {self.kind!r}")
        for name in ("brightness", "contrast", "saturation"):
            check_range(f"jitter.{name}", getattr(self, name), 0.0, float("inf"))
        check_range("jitter.hue", self.hue, 0.0, 0.5)


@dataclass
class GrayscaleOp:
    enabled: bool = True
    p: float = 0.2

    def __post_init__(self) -> None:
        _check_switch("grayscale", self.enabled, self.p)


@dataclass
class BlurOp:
    """Gaussian blur, sigma ~ U(sigma) pixels; kernel side `kernel_size`, or `kernel_frac` of the image side."""
    enabled: bool = True
    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)
    kernel_frac: float = 0.1
    kernel_size: int | None = None

    def __post_init__(self) -> None:
        _check_switch("blur", self.enabled, self.p)
        self.sigma = _pair("blur.sigma", self.sigma)
        if not self.kernel_frac > 0:
            raise ValueError(f"blur.kernel_frac must be > 0, got {self.kernel_frac!r}")
        if self.kernel_size is not None and (not isinstance(self.kernel_size, int) or self.kernel_size < 1
                                             or self.kernel_size % 2 == 0):
            raise ValueError(f"blur.kernel_size must be an odd positive int or None, got {self.kernel_size!r}")


@dataclass
class SolarizeOp:
    """Invert pixels >= threshold (in [0, 1]; PIL's 128 is 128 / 255)."""
    enabled: bool = True
    p: float = 0.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        _check_switch("solarize", self.enabled, self.p)
        check_range("solarize.threshold", self.threshold, 0.0, 1.0)


@dataclass
class PipelineConfig:
    """A classic augmentation pipeline: the ops named in `order`, each run if `enabled`, with its own p.

    Defaults are SimCLR's recipe (`shared.views.SimCLRViewConfig`'s defaults, in
    `simclr_view`'s order), so ``PipelineConfig()`` makes the same views as
    ``simclr_view(x, SimCLRViewConfig())`` under the same seed. Every enabled op must
    appear in `order`; `only` / `without` switch families on and off (GenCL's pairwise
    ablation runs one family alone). A crop directly followed by a flip runs as one
    resampling with the flip folded in (as `simclr_view` does).
    """
    order: tuple[str, ...] = OPS
    crop: CropOp = field(default_factory=CropOp)
    flip: FlipOp = field(default_factory=FlipOp)
    jitter: JitterOp = field(default_factory=JitterOp)
    grayscale: GrayscaleOp = field(default_factory=GrayscaleOp)
    blur: BlurOp = field(default_factory=BlurOp)
    solarize: SolarizeOp = field(default_factory=SolarizeOp)

    def __post_init__(self) -> None:
        if isinstance(self.order, str):
            raise ValueError(f"order must be a list of op names, got {self.order!r}")
        self.order = tuple(self.order)
        unknown = [name for name in self.order if name not in OPS]
        if unknown:
            raise ValueError(f"order: unknown op {unknown[0]!r} (known: {', '.join(OPS)})")
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"order names an op twice: {list(self.order)}")
        missing = [name for name in OPS if getattr(self, name).enabled and name not in self.order]
        if missing:
            raise ValueError(f"op {missing[0]!r} is enabled but not in order {list(self.order)}; "
                             f"add it or set {missing[0]}.enabled: false")

    def enabled_ops(self) -> list[str]:
        return [name for name in self.order if getattr(self, name).enabled]

    def only(self, *names: str) -> "PipelineConfig":
        """A copy with exactly `names` enabled (none: the identity), parameters and order kept."""
        _check_names(names)
        return self._switched({name: name in names for name in OPS})

    def without(self, *names: str) -> "PipelineConfig":
        """A copy with `names` switched off."""
        _check_names(names)
        return self._switched({name: False for name in names})

    def _switched(self, enabled: Mapping[str, bool]) -> "PipelineConfig":
        ops = {name: dataclasses.replace(getattr(self, name), enabled=on) for name, on in enabled.items()}
        order = tuple(dict.fromkeys(self.order + tuple(n for n in OPS if ops.get(n, getattr(self, n)).enabled)))
        return dataclasses.replace(self, order=order, **ops)

    @classmethod
    def identity(cls) -> "PipelineConfig":
        """No op at all: the view is the image (GenCL Table 1 "Generative" pairs (gen(x), x))."""
        return cls().only()

    @classmethod
    def from_simclr(cls, cfg: SimCLRViewConfig) -> "PipelineConfig":
        """The pipeline `shared.views.simclr_view` runs for `cfg` (same draws, same output)."""
        return cls(crop=CropOp(scale=cfg.crop_scale, ratio=cfg.crop_ratio),
                   flip=FlipOp(p=cfg.flip_p),
                   jitter=JitterOp(p=cfg.jitter_p, brightness=cfg.brightness, contrast=cfg.contrast,
                                   saturation=cfg.saturation, hue=cfg.hue, kind=cfg.jitter),
                   grayscale=GrayscaleOp(p=cfg.grayscale_p),
                   blur=BlurOp(p=cfg.blur_p, sigma=cfg.blur_sigma, kernel_frac=cfg.blur_kernel_frac),
                   solarize=SolarizeOp(p=cfg.solarize_p, threshold=cfg.solarize_threshold))


def _check_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r} (known: {', '.join(OPS)})")


def vicreg_pipelines(size: int | None = None) -> tuple[PipelineConfig, PipelineConfig]:
    """VICReg's (and BYOL's) asymmetric pair, from the official ``augmentations.py``.

    Crop (0.08, 1), flip 0.5, jitter 0.4/0.4/0.2/0.1 p 0.8, grayscale 0.2, blur
    sigma U(0.1, 2) with p 1.0 / 0.1, solarize (PIL threshold 128) p 0.0 / 0.2.
    Deviations: bilinear crop (official: bicubic) and a blur kernel of 10% of the side
    (PIL's blur has no kernel size).
    """
    def view(blur_p: float, solarize_p: float) -> PipelineConfig:
        return PipelineConfig(crop=CropOp(size=size), flip=FlipOp(p=0.5),
                              jitter=JitterOp(p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1),
                              grayscale=GrayscaleOp(p=0.2), blur=BlurOp(p=blur_p),
                              solarize=SolarizeOp(p=solarize_p, threshold=128 / 255))
    return view(1.0, 0.0), view(0.1, 0.2)


# ---------------------------------------------------------------- the pipeline

def _crop(x: Tensor, op: CropOp, flip_p: float, generator: torch.Generator | None) -> Tensor:
    size = op.size if op.size is not None else tuple(x.shape[-2:])
    out = random_resized_crop(x, op.scale, op.ratio, flip_p, size, generator)
    if op.p < 1:
        hit = (torch.rand(x.shape[0], device=x.device, generator=generator) < op.p).view(-1, 1, 1, 1)
        whole = x if out.shape[-2:] == x.shape[-2:] else \
            F.interpolate(x, size=out.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        out = torch.where(hit, out, whole)
    return out


def classic_view(x: Tensor, cfg: PipelineConfig, generator: torch.Generator | None = None) -> Tensor:
    """One view of float images in [0, 1] through `cfg`'s enabled ops, in order; per-sample draws.

    Output stays on the input's device and dtype, in [0, 1]; differentiable in `x`.
    Draw order per op is `shared.views`'; a disabled op draws nothing.
    """
    ops = cfg.enabled_ops()
    i = 0
    while i < len(ops):
        name = ops[i]
        if name == "crop":
            # Crop then flip as one grid_sample: half the resampling, and the same draws as simclr_view.
            fuse = cfg.crop.p == 1 and i + 1 < len(ops) and ops[i + 1] == "flip"
            x = _crop(x, cfg.crop, cfg.flip.p if fuse else 0.0, generator)
            i += 2 if fuse else 1
            continue
        if name == "flip":
            x = random_horizontal_flip(x, cfg.flip.p, generator)
        elif name == "jitter":
            j = cfg.jitter
            x = JITTER_FUNCTIONS[j.kind](x, j.brightness, j.contrast, j.saturation, j.hue, j.p, generator)
        elif name == "grayscale":
            x = random_grayscale(x, cfg.grayscale.p, generator)
        elif name == "blur":
            b = cfg.blur
            kernel = b.kernel_size or blur_kernel_size(b.kernel_frac, min(x.shape[-2:]))
            x = gaussian_blur(x, b.p, b.sigma, kernel, generator)
        elif name == "solarize":
            x = solarize(x, cfg.solarize.p, cfg.solarize.threshold, generator)
        i += 1
    return x


# ---------------------------------------------------------------- classic views

class ClassicViews:
    """`ViewSource` of classic augmentations: one view per branch pipeline; ``index`` is ignored.

    ``ClassicViews([view1, view2])`` gives asymmetric branches (VICReg/BYOL:
    `vicreg_pipelines()`); ``ClassicViews.symmetric(cfg, n)`` n views of one pipeline,
    made in one batched call; ``ClassicViews.wrap(SimCLRViews(cfg))`` adapts an
    index-free ``views(x, generator=...)`` generator, unchanged.
    """

    def __init__(self, branches: Sequence[PipelineConfig]):
        branches = list(branches)
        if not branches or not all(isinstance(b, PipelineConfig) for b in branches):
            raise ValueError(f"branches must be a non-empty list of PipelineConfig, got {branches!r}")
        self.branches = branches
        self._wrapped: Callable[..., list[Tensor]] | None = None

    @classmethod
    def symmetric(cls, cfg: PipelineConfig, n_views: int = 2) -> "ClassicViews":
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        return cls([cfg] * n_views)

    @classmethod
    def wrap(cls, views: Callable[..., list[Tensor]]) -> "ClassicViews":
        """Adapt ``views(x, generator=None) -> list[Tensor]`` (e.g. `SimCLRViews`) to the protocol."""
        out = cls.__new__(cls)
        out.branches = []
        out._wrapped = views
        return out

    def __call__(self, x: Tensor, index: Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[Tensor]:
        if self._wrapped is not None:
            return list(self._wrapped(x, generator=generator))  # by keyword: the wrapped signature may grow
        x = as_float_images(x)
        n = len(self.branches)
        if all(b == self.branches[0] for b in self.branches):
            # One batched call (as SimCLRViews): the draws are per sample anyway.
            return list(classic_view(x.repeat(n, 1, 1, 1), self.branches[0], generator).chunk(n))
        return [classic_view(x, b, generator) for b in self.branches]
