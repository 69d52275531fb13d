"""Generated views made on the batch: an online generator as a view source (`GeneratorViews`, with its
latent samplers) and the per-sample rate gamma that swaps a branch's input for a generated image
(`GammaMix`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from shared.view_sources.pipeline import PipelineConfig, classic_view
from shared.view_sources.protocol import GeneratedSource, as_float_images, check_index
from shared.views import check_range


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
        check_range("gamma", self.gamma, 0.0, 1.0)
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
        check_index(x, index)
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
