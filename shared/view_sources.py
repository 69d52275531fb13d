"""View sources: everything the SSL trainer calls as ``views(x, index) -> list[Tensor]``.

One protocol (`ViewSource`), four implementations:

- `ClassicViews`: classic augmentation pipelines (`PipelineConfig`: an ordered list of
  named ops, each with its parameters, probability and an on/off switch), the same
  pipeline for every view or one per branch (VICReg/BYOL's asymmetric pair); it can
  also wrap an index-free view generator such as `shared.views.SimCLRViews`.
- `PrecomputedViews`: generated images written once by a DVC stage (one per training
  image, a uint8 ``.npy`` aligned by dataset row), memory-mapped and looked up by
  ``index``, with a per-row fingerprint of the source images checked on every lookup.
- `GeneratorViews`: an online generator called on the batch (a learned augmenter
  ``G(x, z)``, a Langevin sampler ``sample(x)``), without gradient unless asked.
- `GammaMix`: gives each sample, with probability gamma, a generated image instead of
  the original as the input of the chosen branch(es), followed by a classic pipeline
  (GenCL's rate gamma and T^G; the generative prior's extra Langevin view).

The ops themselves are `shared.views`' functions; this module only orders, switches and
routes them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shared.io import write_temp
from shared.views import (SimCLRViewConfig, _check_range, blur_kernel_size, color_jitter, gaussian_blur,
                          random_grayscale, random_horizontal_flip, random_resized_crop, solarize)

OPS = ("crop", "flip", "jitter", "grayscale", "blur", "solarize")


# ---------------------------------------------------------------- the protocol

@runtime_checkable
class ViewSource(Protocol):
    """What the SSL trainer calls on every batch: ``views(x, index) -> list[Tensor]``.

    Contract:
    - ``x``: uint8 images ``(N, C, H, W)`` in [0, 255] on the training device (float
      images in [0, 1] are accepted too, for sources composed on already-converted batches).
    - ``index``: int64 ``(N,)`` dataset row of each image, on the same device; sources that
      do not look anything up ignore it.
    - returns a list of views, each a floating ``(N, C', H', W')`` tensor in [0, 1] on
      ``x``'s device (float32 from uint8 input; a float input keeps its dtype), row i of
      every view made from row i of ``x``: the models' input convention of `shared.views`.
    - randomness: every draw comes from ``generator`` when one is given (on ``x``'s device),
      otherwise from torch's global RNG, so the caller seeds a run (``torch.manual_seed``)
      and a seeded generator makes the views reproducible.
    - differentiable in ``x`` wherever the underlying ops are (all of `shared.views`).
    """

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]: ...


@runtime_checkable
class GeneratedSource(Protocol):
    """A source of one generated image per input row: ``generated(x, index) -> (N, C, H, W)`` float in [0, 1].

    Same conventions as `ViewSource` (device, RNG); `GammaMix` calls it on the selected rows only.
    """

    def generated(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


def as_float_images(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images are returned unchanged. Asserts (N, C, H, W)."""
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    return x


def _check_index(x: Tensor, index: Tensor) -> None:
    if index.dim() != 1 or index.shape[0] != x.shape[0] or index.dtype != torch.int64:
        raise ValueError(f"index must be int64 of shape ({x.shape[0]},) matching the batch, "
                         f"got {index.dtype} of shape {tuple(index.shape)}")
    if index.device != x.device:
        raise ValueError(f"index is on {index.device} but the images are on {x.device}")


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
    _check_range(f"{name}.p", p, 0.0, 1.0)


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
    """torchvision ColorJitter in a random order per sample (`shared.views.color_jitter`)."""
    enabled: bool = True
    p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2

    def __post_init__(self) -> None:
        _check_switch("jitter", self.enabled, self.p)
        for name in ("brightness", "contrast", "saturation"):
            _check_range(f"jitter.{name}", getattr(self, name), 0.0, float("inf"))
        _check_range("jitter.hue", self.hue, 0.0, 0.5)


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
        _check_range("solarize.threshold", self.threshold, 0.0, 1.0)


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
                                   saturation=cfg.saturation, hue=cfg.hue),
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
            x = color_jitter(x, j.brightness, j.contrast, j.saturation, j.hue, j.p, generator)
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


# ---------------------------------------------------------------- fingerprints

# Fixed forever: changing either breaks every stored fingerprint (they record both and are checked).
FINGERPRINT_SEED = 0x5EED
FINGERPRINT_BITS = 16
FINGERPRINT_COLUMNS = 2
_weights_cache: dict[tuple[int, torch.device], Tensor] = {}


def row_fingerprints(x: Tensor) -> Tensor:
    """A per-row fingerprint of uint8 images: int64 ``(N, 2)``, identical on every device.

    Two fixed seeded projections of the pixels with integer weights in [0, 2^16),
    computed in float64: every product and partial sum is an integer below 2^53, so
    the result is exact whatever the summation order (CPU, CUDA) and two different
    images collide with probability about 2^-32. Float images in [0, 1] are rounded
    back to their uint8 values first.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if x.is_floating_point():
        flat = (flat.detach() * 255).round()
    elif x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    d = flat.shape[1]
    if 255 * (2 ** FINGERPRINT_BITS) * d >= 2 ** 53:
        raise ValueError(f"images of {d} values per row are too large to fingerprint exactly")
    key = (d, x.device)
    if key not in _weights_cache:
        g = torch.Generator().manual_seed(FINGERPRINT_SEED)
        w = torch.randint(0, 2 ** FINGERPRINT_BITS, (d, FINGERPRINT_COLUMNS), generator=g)
        _weights_cache[key] = w.to(device=x.device, dtype=torch.float64)
    with torch.autocast(x.device.type, enabled=False):
        return (flat.to(torch.float64) @ _weights_cache[key]).long()


def _fingerprint_spec() -> dict:
    return {"kind": "float64 integer projection", "seed": FINGERPRINT_SEED, "bits": FINGERPRINT_BITS,
            "columns": FINGERPRINT_COLUMNS}


# ---------------------------------------------------------------- precomputed views

FORMAT = "precomputed-views/1"
PROBE_ROWS = 3  # rows hashed into the meta file to tie it to its image array


def precomputed_files(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(images, fingerprints, meta) files of a precomputed set: ``x.npy``, ``x.fingerprint.npy``, ``x.meta.json``.

    List all three as the stage's ``outs`` in ``dvc.yaml``.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"precomputed images must be a .npy file, got {path}")
    stem = path.with_suffix("")
    return path, stem.with_name(stem.name + ".fingerprint.npy"), stem.with_name(stem.name + ".meta.json")


def _probe_hash(images: np.ndarray) -> str:
    n = images.shape[0]
    rows = sorted({0, n // 2, n - 1}) if n else []
    h = hashlib.sha256()
    for i in rows:
        h.update(np.ascontiguousarray(images[i]).tobytes())
    return h.hexdigest()


def _as_uint8_array(name: str, a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"{name} must be uint8 (N, C, H, W) (lossless), got {a.dtype} of shape {a.shape}")
    return a


def _fingerprints_of(images: np.ndarray, chunk: int = 1024) -> np.ndarray:
    out = [row_fingerprints(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk]))).numpy()
           for i in range(0, images.shape[0], chunk)]
    return np.concatenate(out) if out else np.zeros((0, FINGERPRINT_COLUMNS), np.int64)


def write_precomputed(path: str | os.PathLike, generated: Tensor | np.ndarray, source_images: Tensor | np.ndarray,
                      meta: Mapping[str, Any] | None = None) -> None:
    """Store one generated image per source row, with the sources' row fingerprints, atomically.

    `generated`: uint8 (N, C, H, W); `source_images`: the uint8 (N, C', H', W') rows they
    were made from, in the training dataset's row order (row i of `generated` belongs to
    dataset row i). Writes `precomputed_files(path)`; `meta` (JSON-able: generator,
    seed, settings) is stored under ``"meta"``. All three files are written to temp
    files first and renamed only when all are complete, the image array last; on any
    error no new file is left behind.
    """
    generated = _as_uint8_array("generated", generated)
    source_images = _as_uint8_array("source_images", source_images)
    if generated.shape[0] != source_images.shape[0]:
        raise ValueError(f"generated has {generated.shape[0]} rows but source_images has {source_images.shape[0]}: "
                         f"one generated image per source row")
    images_path, fp_path, meta_path = precomputed_files(path)
    fingerprints = _fingerprints_of(source_images)
    record = {"format": FORMAT, "rows": int(generated.shape[0]), "shape": list(generated.shape[1:]),
              "dtype": "uint8", "source_shape": list(source_images.shape[1:]), "fingerprint": _fingerprint_spec(),
              "fingerprint_sha256": hashlib.sha256(fingerprints.tobytes()).hexdigest(),
              "probe_sha256": _probe_hash(generated), "meta": dict(meta or {})}
    meta_bytes = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()  # fails before any file is made

    temps: list[tuple[Path, Path]] = []
    try:
        temps.append((write_temp(fp_path, lambda f: np.save(f, fingerprints)), fp_path))
        temps.append((write_temp(meta_path, lambda f: f.write(meta_bytes)), meta_path))
        temps.append((write_temp(images_path, lambda f: np.save(f, generated)), images_path))
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in temps:  # the images last: a reader that finds them finds the matching sidecars
        os.replace(tmp, final)


class PrecomputedViews:
    """Generated images precomputed by a DVC stage, looked up by dataset row ``index``.

    ``generated(x, index)`` returns the stored rows ``index`` as float in [0, 1] on
    ``x``'s device; ``views(x, index)`` returns them as a single view (pair them with
    originals through `GammaMix`). The image array is memory-mapped; the fingerprints
    (16 bytes a row) are held on the device. With ``verify`` (default) every lookup
    recomputes the fingerprints of the batch's source images ``x`` and compares them
    with those stored for ``index``, so a misaligned or shuffled index, or a dataset
    whose order changed since the stage ran, raises instead of silently pairing images
    with other images' augmentations. Measured on one CPU thread for a 128 x 3 x 64 x 64
    batch: 2-3 ms, against 0.26 s for its two SimCLR views and 5 s for a ResNet-18
    (width 0.25) step on them. `stage` names the DVC stage that writes the file, for
    the error on a missing file.
    """

    def __init__(self, path: str | os.PathLike, stage: str | None = None, verify: bool = True):
        self.path, fp_path, meta_path = precomputed_files(path)
        self.stage = stage
        self.verify = verify
        how = (f"it is made by the DVC stage {stage!r} (run `dvc repro {stage}`)" if stage
               else "it is made by the DVC stage that lists it in outs (see the paper's dvc.yaml)")
        for p in (self.path, fp_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"precomputed views file {p} not found: {how}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}; {how}")
        self.images = np.load(self.path, mmap_mode="r")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.path}: expected uint8 (N, C, H, W), got {self.images.dtype} "
                             f"of shape {self.images.shape}")
        expected = (self.meta["rows"], *self.meta["shape"])
        if self.images.shape != expected or _probe_hash(self.images) != self.meta["probe_sha256"]:
            raise ValueError(f"{self.path} does not match {meta_path} (shape {self.images.shape} vs {expected}, "
                             f"or different content): written by two different runs; {how}")
        fingerprints = np.load(fp_path)
        if (fingerprints.shape != (self.images.shape[0], FINGERPRINT_COLUMNS)
                or hashlib.sha256(fingerprints.tobytes()).hexdigest() != self.meta["fingerprint_sha256"]):
            raise ValueError(f"{fp_path} does not match {meta_path}; {how}")
        if self.meta["fingerprint"] != _fingerprint_spec():
            raise ValueError(f"{fp_path} was written with fingerprint {self.meta['fingerprint']}, "
                             f"this code computes {_fingerprint_spec()}; {how}")
        self.source_shape = tuple(self.meta["source_shape"])
        self._fingerprints = torch.from_numpy(fingerprints)
        self._how = how

    def __len__(self) -> int:
        return self.images.shape[0]

    def _stored_fingerprints(self, device: torch.device) -> Tensor:
        if self._fingerprints.device != device:
            self._fingerprints = self._fingerprints.to(device)
        return self._fingerprints

    def check_alignment(self, x: Tensor, index: Tensor) -> None:
        """Raise if ``x`` are not the source images the stage stored for rows ``index``."""
        if tuple(x.shape[1:]) != self.source_shape:
            raise ValueError(f"{self.path} was written from source images of shape {self.source_shape}, "
                             f"the batch's are {tuple(x.shape[1:])}: a different dataset or preparation")
        wrong = (row_fingerprints(x) != self._stored_fingerprints(x.device)[index]).any(dim=1)
        if bool(wrong.any()):
            pos = torch.nonzero(wrong).squeeze(1)
            raise ValueError(
                f"{self.path}: {pos.numel()} of {x.shape[0]} batch images are not the source images stored for "
                f"their index (batch positions {pos[:5].tolist()}, dataset rows {index[pos[:5]].tolist()}): the "
                f"index is misaligned or shuffled, or the dataset's row order changed since the file was written; "
                f"{self._how}")

    def generated(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        _check_index(x, index)
        rows = index.cpu().numpy()
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path} holds rows 0..{len(self) - 1}, asked for {rows.min()}..{rows.max()}")
        if self.verify:
            self.check_alignment(x, index)
        out = torch.from_numpy(self.images[rows]).to(x.device, non_blocking=True)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return out.to(dtype) / 255

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        return [self.generated(x, index, generator)]


# ---------------------------------------------------------------- online generator views

Latent = Callable[[int, torch.device, torch.Generator | None], Tensor]  # (n, device, generator) -> z


def normal_latent(dim: int) -> Latent:
    """z ~ N(0, I) of size `dim` per sample."""
    return lambda n, device, generator: torch.randn(n, dim, device=device, generator=generator)


def uniform_latent(dim: int) -> Latent:
    """z ~ U[0, 1]^dim per sample."""
    return lambda n, device, generator: torch.rand(n, dim, device=device, generator=generator)


def bank_latent(bank: Tensor) -> Latent:
    """z drawn uniformly, with replacement, from the rows of `bank` (e.g. G_L's codes of the target set)."""
    if bank.dim() != 2 or bank.shape[0] == 0:
        raise ValueError(f"bank must be a non-empty (K, d) tensor, got shape {tuple(bank.shape)}")

    def draw(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        pick = torch.randint(0, bank.shape[0], (n,), device=device, generator=generator)
        return bank.to(device)[pick]
    return draw


class GeneratorViews:
    """An online generator called on the batch: ``generate(x)`` or ``generate(x, z)``.

    `generate` is any callable, typically a module (a learned augmenter ``G(x, z)``) or
    a bound method (``sampler.sample``). It receives float images mapped from [0, 1]
    to `in_range`, plus ``z = latent(N, device, generator)`` when `latent` is given,
    plus ``generator=`` when `pass_generator`; its output, in `out_range`, is mapped
    back to [0, 1] and clamped. By default it runs under ``torch.no_grad()`` (a frozen
    generator); ``grad=True`` keeps the graph so a loss can train it. The module's
    train/eval mode is never touched: set it before training (eval for a frozen one).
    """

    def __init__(self, generate: Callable[..., Tensor], *, latent: Latent | None = None, grad: bool = False,
                 in_range: tuple[float, float] = (0.0, 1.0), out_range: tuple[float, float] = (0.0, 1.0),
                 pass_generator: bool = False):
        for name, (lo, hi) in (("in_range", in_range), ("out_range", out_range)):
            if not lo < hi:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)!r}")
        self.generate = generate
        self.latent = latent
        self.grad = grad
        self.in_range = in_range
        self.out_range = out_range
        self.pass_generator = pass_generator

    def generated(self, x: Tensor, index: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        xf = as_float_images(x)
        lo, hi = self.in_range
        args = [lo + (hi - lo) * xf]
        if self.latent is not None:
            args.append(self.latent(xf.shape[0], xf.device, generator))
        kwargs = {"generator": generator} if self.pass_generator else {}
        if self.grad:
            y = self.generate(*args, **kwargs)
        else:
            with torch.no_grad():
                y = self.generate(*args, **kwargs)
        if not isinstance(y, Tensor) or y.dim() != 4 or y.shape[0] != xf.shape[0] or not y.is_floating_point():
            raise ValueError(f"the generator must return float images ({xf.shape[0]}, C, H, W), got "
                             f"{type(y).__name__} {getattr(y, 'dtype', '')} {tuple(getattr(y, 'shape', ()))}")
        if y.device != xf.device:
            raise ValueError(f"the generator returned images on {y.device}, the batch is on {xf.device}")
        lo, hi = self.out_range
        return ((y.to(xf.dtype) - lo) / (hi - lo)).clamp(0, 1)

    def __call__(self, x: Tensor, index: Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[Tensor]:
        return [self.generated(x, index, generator)]


# ---------------------------------------------------------------- gamma mix

Branch = Literal["first", "second", "both", "random", "extra"]


@dataclass
class GammaMixConfig:
    """Which samples and branches get the generated image (GenCL's rate gamma).

    gamma: probability that a sample gets it, an independent Bernoulli draw per
      sample per batch (GenCL's PROPOSE reading; gamma 0 is the classic method).
    branch: which view's input it replaces for a selected sample: "first", "second",
      "both" (the two views of the pair), "random" (one of the two, fair coin per
      sample), or "extra" (appends a view, made from the generated image for selected
      samples and from the original otherwise: the generative prior's auxiliary view).
      Default "second": GenCL's PROPOSE (wave-2 spec 1.C) keeps VICReg view 1 as R.
    generated_pipeline: T^G, the classic pipeline applied after the generated image
      (GenCL: crop, flip, solarisation, jitter); None: the replaced branch's own.
    """
    gamma: float = 0.0
    branch: Branch = "second"
    generated_pipeline: PipelineConfig | None = None

    def __post_init__(self) -> None:
        _check_range("gamma", self.gamma, 0.0, 1.0)
        if self.branch not in ("first", "second", "both", "random", "extra"):
            raise ValueError(f"branch must be one of first, second, both, random, extra; got {self.branch!r}")


@dataclass
class MixedViews:
    views: list[Tensor]
    mask: Tensor  # bool (N, n_views): True where the view was made from the generated image


class GammaMix:
    """`ViewSource`: classic branch views, where each selected sample's chosen branch starts from a generated image.

    For sample i and view v: input = ``source.generated(x)[i]`` if ``mask[i, v]`` else
    ``x[i]``; then ``cfg.generated_pipeline`` (or branch v's pipeline) if generated,
    else ``branches[v]``. Generated images are requested for the selected rows only
    (none at gamma 0). `views_and_mask` returns the (N, n_views) mask; ``last_mask``
    keeps the latest for logging. Draw order: selection, branch coin ("random"), the
    source, then each view's pipeline(s).
    """

    def __init__(self, cfg: GammaMixConfig, branches: Sequence[PipelineConfig], source: GeneratedSource):
        self.cfg = cfg
        self.branches = list(branches)
        if cfg.branch in ("second", "both", "random") and len(self.branches) < 2:
            raise ValueError(f"branch {cfg.branch!r} needs at least two branch pipelines, got {len(self.branches)}")
        if not self.branches:
            raise ValueError("GammaMix needs at least one branch pipeline")
        if cfg.branch == "extra":
            self.branches.append(cfg.generated_pipeline or self.branches[-1])
        if not hasattr(source, "generated"):
            raise TypeError(f"source must have generated(x, index, generator), got {type(source).__name__}")
        self.source = source
        self.last_mask: Tensor | None = None

    def _mask(self, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        hit = torch.rand(n, device=device, generator=generator) < self.cfg.gamma  # exact at gamma 0 and 1
        mask = torch.zeros(n, len(self.branches), dtype=torch.bool, device=device)
        branch = self.cfg.branch
        if branch == "first":
            mask[:, 0] = hit
        elif branch == "second":
            mask[:, 1] = hit
        elif branch == "both":
            mask[:, 0] = mask[:, 1] = hit
        elif branch == "random":
            coin = torch.rand(n, device=device, generator=generator) < 0.5
            mask[:, 0], mask[:, 1] = hit & coin, hit & ~coin
        else:
            mask[:, -1] = hit
        return mask

    def views_and_mask(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> MixedViews:
        _check_index(x, index)
        xf = as_float_images(x)
        mask = self._mask(x.shape[0], x.device, generator)
        selected = torch.nonzero(mask.any(dim=1)).squeeze(1)
        gen = None
        if selected.numel():
            gen = self.source.generated(x.index_select(0, selected), index.index_select(0, selected), generator)
            if gen.dim() != 4 or gen.shape[0] != selected.numel() or gen.device != xf.device:
                raise ValueError(f"the source returned {tuple(gen.shape)} on {gen.device} for {selected.numel()} "
                                 f"selected rows on {xf.device}")
        # Row of `gen` holding each selected sample.
        slot = torch.cumsum(mask.any(dim=1).long(), 0) - 1
        views = []
        for v, pipeline in enumerate(self.branches):
            m = mask[:, v]
            from_gen = torch.nonzero(m).squeeze(1)
            if from_gen.numel() == 0:
                views.append(classic_view(xf, pipeline, generator))
                continue
            gen_pipeline = self.cfg.generated_pipeline or pipeline
            made = classic_view(gen.index_select(0, slot[from_gen]), gen_pipeline, generator)
            if from_gen.numel() == x.shape[0]:
                views.append(made)
                continue
            from_x = torch.nonzero(~m).squeeze(1)
            kept = classic_view(xf.index_select(0, from_x), pipeline, generator)
            if kept.shape[1:] != made.shape[1:]:
                raise ValueError(f"view {v}: generated-image views are {tuple(made.shape[1:])} but original views "
                                 f"are {tuple(kept.shape[1:])}; give both pipelines the same crop.size")
            order = torch.cat([from_x, from_gen]).argsort()  # back to batch order
            views.append(torch.cat([kept, made]).index_select(0, order))
        self.last_mask = mask
        return MixedViews(views, mask)

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        return self.views_and_mask(x, index, generator).views
