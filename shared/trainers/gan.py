"""The GAN trainer: one explicit loop for any (d_loss, g_loss) method.

Read top to bottom: optimisers and G_ema, resume from the checkpoint if there is
one, then per step: `d_steps_per_g` D steps (a real batch, fakes from G without
gradient, the method's D loss, plus R1 on the reals every `r1_interval`-th D
step), one G step (the method's G loss through D), and the EMA update of G_ema;
log, sample a grid from G_ema, evaluate, checkpoint. A resumed run repeats exactly
what the uninterrupted run would have done: the checkpoint holds G, D, G_ema, both
optimisers, the step, the loader position (epoch, batch) and every RNG, and
sampling and evaluation leave the RNGs as they found them.

A resumed run also writes every output again, identical to the uninterrupted run's,
even when it has no step left to train: DVC deletes a stage's outputs other than the
persisted checkpoint before it re-runs the stage. So the checkpoint also holds the
best G_ema (what `best.pt` is made of), the sample grids written so far (as their PNG
bytes) and the training seconds so far; at the start the trainer makes `best.pt` and
`samples/` what the checkpoint says (and removes those of an earlier run on a fresh start).

Defaults are DiffAugment-StyleGAN2's CIFAR settings (mit-han-lab/data-efficient-gans,
DiffAugment-stylegan2/run_cifar.py and training/{training_loop,loss}.py, TF), the
code gan_simclr used. What the official codes do, for the record:
- DiffAugment TF (run_cifar.py): batch 32, Adam lr 0.002 betas (0, 0.99) eps 1e-8 for
  both nets, R1 gamma 0.1 applied every step (lazy_regularization=False), with the
  gradient taken at the *augmented* reals (`ns_r1_DiffAugment` reassigns `reals`
  before D sees them), style mixing 0.9, no path-length regularisation, reals
  mirrored, EMA half-life 1000 kimg and G_ema = G until 1000 kimg, 25000 kimg in all.
- DiffAugment PyTorch port / stylegan2-ada-pytorch `--cfg=cifar`: batch 64, lr 0.0025,
  R1 gamma 0.01 lazily every 16 D steps as a separate phase, gradient at the
  *un-augmented* reals (through the augmentation), EMA 500 kimg with ramp-up 0.05,
  no style mixing, no path length, D architecture "orig".
- ContraD (train_stylegan2.py): batch 64, lr 0.002 betas (0, 0.99), R1 lazily every 16
  steps at the augmented reals, style mixing 0.9, EMA half-life 20 kimg.

Deviations, on purpose: the D steps come before the G step (the official loops run
G first); lazy R1 is added to that step's D loss with weight gamma/2 * r1_interval
(as DiffAugment's TF loop and ContraD do), not a separate optimiser step, so there
is no Adam lr/beta correction for it; R1 runs its own D forward on a fresh
augmentation of the reals.

The latent prior is one of `LATENT_PRIORS`: "normal", z ~ N(0, I) (StyleGAN2, the default), or
"uniform", z ~ U(-1, 1)^z_dim (the SNDCGAN generator of ContraD's official code, models/gan/sndcgan.py
`sample_latent`). `sample_latent` is the one place z is drawn: the D and G steps, the sample grids and
`sample_images` (so `fid_evaluate`) all call it with the run's `latent_prior`, given like `z_dim`.

Conditional GANs, G(z, c) and D(x, c): `train_gan(..., condition=provider)`. A
`ConditionProvider` turns each loader batch into the reals D sees and the
conditions of the reals and of the fakes (`sample(batch) -> ConditionedBatch`), and
gives fixed conditions for sample grids and evaluation (`fixed(n, seed)`). Two
come with the trainer, in `shared.trainers.conditions`:
- `ClassConditions`: c = the batch's labels, for D's reals and for G's fakes.
- `InstanceConditions` (IC-GAN, Casanova et al. 2021): c = the L2-normalised feature
  h_i of the batch's instances i (features from a frozen encoder, computed once);
  D's real for instance i is a uniform draw from the k nearest neighbours of i by
  cosine similarity (`knn_neighbourhoods`, computed once), its fake is G(z, h_i).
The G step reuses the fakes' conditions of the last D batch. The official
BigGAN / IC-GAN loops draw the fakes' conditions separately (uniform labels, uniform
instances), for each D step and the G step; with a loader that shuffles uniformly
the conditions have the same distribution, but here a fake and a real of one batch
share their condition. Without a provider (None) nothing changes: the same calls,
the same random draws.

Under torchrun (`shared.distributed`) every rank runs this loop on its share of each
global batch of `batch_size` reals, with as many fakes of its own latents; after each
backward the gradients of D (D step) or G (G step) are averaged over the ranks with one
all-reduce, as StyleGAN2-ADA's multi-GPU loop does (not DistributedDataParallel: R1
differentiates through D twice, and D runs several forwards per step), so every rank
takes the single-process step on the global batch. Layers that mix samples (StyleGAN2's
minibatch-stddev groups) see only the rank's share, as on the official multi-GPU runs.
Rank 0 samples, evaluates (the metrics reach every rank), logs and writes the files;
the checkpoint holds nothing that depends on the world size. Each rank draws its latents
and augmentations from its own stream, re-seeded at every checkpoint, so a resumed run
draws what the uninterrupted one drew.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from shared import checkpoint, distributed
from shared.device import autocast, prepare_batch
from shared.gan_losses import Augment, GANMethod, discriminate, r1_penalty
from shared.io import atomic_write
from shared.tracking import Logger, NullLogger
from shared.trainers.common import EpochLoader, NonFiniteLossError
from shared.trainers.conditions import (  # noqa: F401 - re-exported: callers import them from here
    ClassConditions, ConditionedBatch, ConditionProvider, InstanceConditions, knn_neighbourhoods)

Evaluate = Callable[[nn.Module, int], dict[str, float]]
LATENT_PRIORS = ("normal", "uniform")  # N(0, I); U(-1, 1)^z_dim


@dataclasses.dataclass
class GANConfig:
    """GAN training protocol. Defaults: DiffAugment-StyleGAN2 on CIFAR-10 (TF run_cifar.py)."""
    steps: int = 781_250  # G updates: 25000 kimg at batch 32
    batch_size: int = 32
    lr_g: float = 0.002
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.1  # run_cifar.py --gamma; the penalty is weighted gamma / 2
    r1_interval: int = 1  # D steps between R1 terms (1: every step, as DiffAugment TF; 16: StyleGAN2's lazy R1; 0: off)
    r1_input: Literal["augmented", "clean"] = "augmented"  # where R1's gradient is taken (see the module docstring)
    ema_kimg: float = 1000.0  # half-life of G_ema in thousands of G images: beta = 0.5 ** (batch / (ema_kimg * 1000))
    ema_start_kimg: float = 1000.0  # G_ema copies G before this many kimg (DiffAugment: ema_start = ema_kimg)
    ema_rampup: float = 0.0  # ADA: half-life at most ema_rampup * images seen so far; 0 disables
    style_mixing_prob: float = 0.9
    mirror: bool = True  # x-flip each real with probability 0.5 (run_cifar.py mirror_augment=True)
    d_steps_per_g: int = 1
    warmup_steps: int = 0  # linear lr warm-up of both optimisers over this many G steps (ContraD: 3000); 0: none
    log_every: int = 100  # steps
    sample_every: int = 5000  # steps; the last step always samples
    checkpoint_every: int = 5000  # steps; the last step always checkpoints
    eval_every: int = 10_000  # steps; the last step always evaluates
    best_key: str = "fid"  # evaluation metric whose minimum is kept as best.pt
    n_sample_grid: int = 64
    sample_seed: int = 0  # the grid's fixed latents (and noise) come from this seed

    def __post_init__(self):
        for name in ("steps", "batch_size", "d_steps_per_g", "log_every", "sample_every", "checkpoint_every",
                     "eval_every", "n_sample_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError(f"lr_g and lr_d must be > 0, got {self.lr_g}, {self.lr_d}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("warmup_steps", "r1_gamma", "r1_interval", "ema_kimg", "ema_start_kimg", "ema_rampup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.r1_input not in ("augmented", "clean"):
            raise ValueError(f"r1_input must be 'augmented' or 'clean', got {self.r1_input!r}")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")


@dataclasses.dataclass
class GANResult:
    G_ema: nn.Module
    history: list[dict[str, float]]  # one entry per evaluation, each with its "step"
    best: dict[str, float] | None  # {"step": s, best_key: value} of the best evaluation
    steps: int
    train_seconds: float  # wall-clock seconds of the loop up to the last checkpoint, summed over resumed runs
    final: dict[str, float] | None = None  # {"step": best step, ...}: `final_evaluate` of the best G_ema, once


# ---------------------------------------------------------------- helpers

def check_latent_prior(prior: str) -> str:
    """`prior` if it is one of `LATENT_PRIORS`, else a ValueError naming the allowed ones."""
    if prior not in LATENT_PRIORS:
        raise ValueError(f"latent_prior must be one of {list(LATENT_PRIORS)}, got {prior!r}")
    return prior


def sample_latent(n: int, z_dim: int, prior: str, device: torch.device | str | None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Latents z (n, z_dim): "normal" N(0, I), or "uniform" U(-1, 1) per coordinate ([-1, 1) exactly).

    Drawn from `generator` (None: torch's global RNG of `device`); the normal prior draws exactly what
    `torch.randn(n, z_dim)` draws.
    """
    if check_latent_prior(prior) == "normal":
        return torch.randn(n, z_dim, device=device, generator=generator)
    return torch.rand(n, z_dim, device=device, generator=generator) * 2 - 1


class RNGPreserved:
    """Run a block (sampling, evaluation) without moving any RNG the training loop draws from."""

    def __enter__(self):
        self.state = checkpoint.rng_state()

    def __exit__(self, *exc):
        checkpoint.set_rng_state(self.state)
        return False


def _generate(G: nn.Module, z: Tensor, style_mixing_prob: float = 0.0, truncation_psi: float = 1.0,
              c: Tensor | None = None) -> Tensor:
    # Options are passed only when used, so generators without them (SNDCGAN) work too;
    # a condition makes it G(z, c).
    kwargs = {}
    if style_mixing_prob > 0:
        kwargs["style_mixing_prob"] = style_mixing_prob
    if truncation_psi != 1:
        kwargs["truncation_psi"] = truncation_psi
    return G(z, **kwargs) if c is None else G(z, c, **kwargs)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] (the official rounding: x * 127.5 + 128, clamped, truncated)."""
    return (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_model_range(x: Tensor, device: torch.device) -> Tensor:
    """uint8 images (B, C, H, W) -> float in [-1, 1] on `device`, in the model's memory format."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"the GAN trainer expects uint8 (B, C, H, W) batches, got {x.dtype} {tuple(x.shape)}")
    return prepare_batch(x.to(device).float() / 127.5 - 1, device)


@torch.no_grad()
def sample_images(G_ema: nn.Module, n: int, batch_size: int, seed: int, device: torch.device,
                  truncation_psi: float = 1.0, z_dim: int | None = None, c: Tensor | None = None,
                  latent_prior: str = "normal") -> Tensor:
    """`n` uint8 images (n, C, H, W) on the CPU from G_ema in eval mode, deterministic by `seed`.

    Latents (`sample_latent` with `latent_prior`) and per-layer noise are drawn from the global
    RNGs seeded with `seed` inside a block that restores them afterwards, so sampling never
    perturbs training. The same (seed, batch_size, latent_prior) gives the same images. A
    conditional G gets `c`, one condition per image ((n,) labels or (n, d) features, e.g. a
    provider's `fixed(n, seed)`).
    """
    z_dim = G_ema.z_dim if z_dim is None else z_dim
    if c is not None and c.shape[0] != n:
        raise ValueError(f"sample_images: need one condition per image, got {c.shape[0]} for n={n}")
    was_training = G_ema.training
    G_ema.eval()
    out = []
    with RNGPreserved():
        torch.manual_seed(seed)
        z = sample_latent(n, z_dim, latent_prior, device)
        conditions = [None] * math.ceil(n / batch_size) if c is None else c.to(device).split(batch_size)
        for chunk, c_chunk in zip(z.split(batch_size), conditions, strict=True):
            with autocast(device):
                out.append(to_uint8(_generate(G_ema, chunk, truncation_psi=truncation_psi, c=c_chunk)).cpu())
    G_ema.train(was_training)
    return torch.cat(out)


def fid_evaluate(scorer, n: int, batch_size: int, device: torch.device, z_dim: int | None = None,
                 condition: ConditionProvider | None = None, latent_prior: str = "normal") -> Evaluate:
    """The trainer's `evaluate`: score `n` G_ema samples drawn with the step as seed from the latent
    prior `latent_prior` (`scorer`: a `shared.metrics.FIDScorer`, returning fid_<kind> / is_<kind>);
    a conditional G gets the provider's `fixed(n, seed=step)` conditions."""
    check_latent_prior(latent_prior)

    def evaluate(G_ema: nn.Module, step: int) -> dict[str, float]:
        c = None if condition is None else condition.fixed(n, seed=step, device=device)
        return scorer.score(sample_images(G_ema, n, batch_size, seed=step, device=device, z_dim=z_dim, c=c,
                                          latent_prior=latent_prior))
    return evaluate


def image_grid(images: Tensor, nrow: int) -> Tensor:
    """uint8 (N, C, H, W) -> one uint8 (rows * H, nrow * W, C) grid, `nrow` images per row, row-major.

    A last row that is not full is padded with black.
    """
    assert images.dtype == torch.uint8 and images.ndim == 4, \
        f"need uint8 NCHW, got {images.dtype} {tuple(images.shape)}"
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    images = torch.cat([images, images.new_zeros(rows * nrow - n, c, h, w)])
    return images.reshape(rows, nrow, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, nrow * w, c)


def png_bytes(grid: Tensor) -> bytes:
    """A uint8 (H, W, C) grid encoded as PNG (grayscale for one channel)."""
    array = grid.numpy()
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


def write_outputs(out_dir: Path, best: dict[str, float] | None, best_G_ema: dict | None,
                  samples: dict[str, bytes]) -> None:
    """Make `out_dir/best.pt` and `out_dir/samples/step_*.png` exactly what a checkpoint says they are.

    `best.pt` is {"G_ema": best_G_ema, **best}, or absent when there is no best yet; the grids
    are `samples` (file name -> PNG bytes) and no other. A run's outputs are then the same
    whether it resumed or not: DVC deletes them before it re-runs a stage, and a persisted
    folder may hold those of a run with another config.
    """
    best_path, sample_dir = out_dir / "best.pt", out_dir / "samples"
    if best is None:
        best_path.unlink(missing_ok=True)
    else:
        checkpoint.save(best_path, {"G_ema": best_G_ema, **best})
    for stale in sorted(sample_dir.glob("step_*.png")):
        if stale.name not in samples:
            stale.unlink()
    for name, png in samples.items():
        atomic_write(sample_dir / name, lambda f, png=png: f.write(png))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise) are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def ema_beta(cfg: GANConfig, nimg: int) -> float:
    """The EMA decay after `nimg` generated images: 0 (copy) before ema_start_kimg, then 0.5 ** (batch / half-life)."""
    if nimg < cfg.ema_start_kimg * 1000:
        return 0.0
    half_life = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        half_life = min(half_life, nimg * cfg.ema_rampup)
    return 0.5 ** (cfg.batch_size / half_life) if half_life > 0 else 0.0


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor: the lr grows linearly to its value over the first `warmup_steps` updates."""
    return lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def check_finite(loss: Tensor, what: str, step: int) -> float:
    """The loss as a float (under torchrun its mean over the ranks, so every rank decides alike);
    NonFiniteLossError naming `what`, the value and the step if it is NaN or infinite."""
    value = distributed.mean(loss).item()
    if not math.isfinite(value):
        raise NonFiniteLossError(f"non-finite {what} loss {value} at step {step}")
    return value


def endless_batches(loader: EpochLoader, epoch: int, skip: int) -> Iterator[tuple[int, int, Sequence[Tensor]]]:
    """Batches forever from batch `skip` of `epoch`; yields (epoch, batches done in it, batch).

    A batch is the loader's tuple as it comes: (x, y) or (x, y, index).
    """
    while True:
        loader.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i >= skip:  # a resumed run re-walks the epoch's order up to where it stopped
                yield epoch, i + 1, batch
        epoch, skip = epoch + 1, 0


def r1_on_reals(D: nn.Module, real: Tensor, augment: Augment, r1_input: str, c: Tensor | None = None) -> Tensor:
    """R1 at the augmented reals (DiffAugment TF, ContraD) or at the clean reals through `augment` (ADA).

    A conditional D is called as D(x, c) with the reals' conditions `c`; the gradient is taken wrt x only.
    """
    if r1_input == "augmented":
        x = augment(real).detach().requires_grad_(True)
        return r1_penalty(discriminate(D, x, c), x)
    x = real.detach().requires_grad_(True)
    return r1_penalty(discriminate(D, augment(x), c), x)


# ---------------------------------------------------------------- the two steps

def _condition_kwargs(**conditions: Tensor | None) -> dict[str, Tensor | None]:
    # The method sees condition keywords only in a conditional run (see shared.gan_losses).
    return {} if all(c is None for c in conditions.values()) else conditions


def d_step(G: nn.Module, D: nn.Module, method: GANMethod, real: Tensor, opt_d: torch.optim.Optimizer,
           cfg: GANConfig, d_index: int, z_dim: int, device: torch.device, step: int,
           c_real: Tensor | None = None, c_fake: Tensor | None = None,
           latent_prior: str = "normal") -> dict[str, float]:
    """One D update on `real` (in [-1, 1]) and fresh fakes of latents from `latent_prior`; R1 when
    `d_index` % r1_interval == 0.

    A conditional run gives the reals' conditions `c_real` (D(real, c_real)) and the fakes'
    `c_fake` (D(G(z, c_fake), c_fake)), one per image.
    """
    D.requires_grad_(True)
    z = sample_latent(real.shape[0], z_dim, latent_prior, device)
    with torch.no_grad(), autocast(device):
        fake = _generate(G, z, cfg.style_mixing_prob, c=c_fake)
    with autocast(device):
        loss, logs = method.d_loss(D, real, fake, method.augment, **_condition_kwargs(c_real=c_real, c_fake=c_fake))
        if cfg.r1_interval and cfg.r1_gamma > 0 and d_index % cfg.r1_interval == 0:
            r1 = r1_on_reals(D, real, method.augment, cfg.r1_input, c=c_real)
            loss = loss + (cfg.r1_gamma / 2 * cfg.r1_interval) * r1  # lazy: weighted by the interval
            logs = {**logs, "d/r1": r1.item()}
    logs = {**logs, "d/total": check_finite(loss, "D", step)}
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(D.parameters())  # under torchrun: the global batch's gradient
    opt_d.step()
    return logs


def g_step(G: nn.Module, D: nn.Module, method: GANMethod, opt_g: torch.optim.Optimizer, cfg: GANConfig,
           batch_size: int, z_dim: int, device: torch.device, step: int,
           c_fake: Tensor | None = None, latent_prior: str = "normal") -> dict[str, float]:
    """One G update on latents from `latent_prior`; D is frozen (no parameter gradients) but passes
    gradients to its input.

    A conditional run gives the fakes' conditions `c_fake` ((batch_size,) or (batch_size, d)).
    """
    D.requires_grad_(False)
    z = sample_latent(batch_size, z_dim, latent_prior, device)
    with autocast(device):
        fake = _generate(G, z, cfg.style_mixing_prob, c=c_fake)
        loss, logs = method.g_loss(D, fake, method.augment, **_condition_kwargs(c_fake=c_fake))
    logs = {**logs, "g/total": check_finite(loss, "G", step)}
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(G.parameters())
    opt_g.step()
    D.requires_grad_(True)
    return logs


# ---------------------------------------------------------------- the loop

def train_gan(cfg: GANConfig, G: nn.Module, D: nn.Module, method: GANMethod, loader: EpochLoader, *,
              out_dir: str | Path, logger: Logger, device: torch.device, z_dim: int,
              evaluate: Evaluate | None = None, condition: ConditionProvider | None = None,
              final_evaluate: Evaluate | None = None, progress: bool = True,
              latent_prior: str = "normal") -> GANResult:
    """Train G and D with `method` on `loader`'s uint8 batches for `cfg.steps` G updates.

    G's latents are (z_dim,) vectors from `latent_prior` ("normal" or "uniform", see `sample_latent`)
    in the D and G steps and the sample grids; give `fid_evaluate` the same prior.

    `loader` yields (x_uint8, y) or (x_uint8, y, index) batches of exactly `cfg.batch_size`
    (drop_last) with a deterministic order per `set_epoch(e)`. With a `condition` provider
    the GAN is conditional: G(z, c), D(x, c), the reals and conditions from
    `condition.sample(batch)`, the grid from `condition.fixed(n_sample_grid, sample_seed)`
    (give `fid_evaluate` the provider too). Every `sample_every` steps a grid of
    `n_sample_grid` images from G_ema with fixed latents is logged and saved as
    `out_dir/samples/step_XXXXXXX.png`. `evaluate(G_ema, step)` (e.g. FID) runs every
    `eval_every` steps and after the last; its metrics are logged as `eval/<name>` and
    kept in the history, and when `cfg.best_key` improves (lower is better) G_ema is
    saved to `out_dir/best.pt`. The checkpoint `out_dir/checkpoint.pt` is resumed if present,
    and `best.pt` and `samples/` are then rewritten from it (a fresh start removes them);
    a checkpoint from before this rule raises CheckpointError. Raises NonFiniteLossError
    naming the step and value if a loss diverges.

    `final_evaluate(G_ema, step)` (e.g. the Inception FID, too dear to run at every evaluation)
    runs once, after the last step, on the best G_ema (the one `best.pt` holds) with the best
    step as its seed; its metrics are the result's `final`, logged as `final/<name>` and kept in
    the checkpoint, so a resumed finished run reads them back instead of evaluating again.

    Under torchrun (see the module docstring) `loader` is the same global loader on every rank
    and `evaluate` runs on rank 0; only rank 0 logs and writes files.
    """
    check_latent_prior(latent_prior)
    out_dir = Path(out_dir)
    ckpt_path, best_path = out_dir / "checkpoint.pt", out_dir / "best.pt"
    if len(loader) == 0:
        raise ValueError("the loader yields no batches (fewer images than batch_size with drop_last?)")
    distributed.setup(device)
    main, world = distributed.is_main(), distributed.world_size()
    if not main:
        logger = NullLogger()
    loader = distributed.shard(loader, cfg.batch_size)
    rank_batch = cfg.batch_size // world  # this rank's share of every batch
    base_seed = torch.initial_seed()  # each rank's stream per checkpoint interval derives from it
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas, eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas, eps=1e-8)
    # Both schedules step once per G step (the D schedule too, whatever d_steps_per_g is).
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, warmup_factor(cfg.warmup_steps))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, warmup_factor(cfg.warmup_steps))
    step, epoch, batches_done, history, best = 0, 0, 0, [], None
    best_G_ema, samples, train_seconds = None, {}, 0.0  # G_ema's state at `best`; file name -> PNG bytes

    state = distributed.load_checkpoint(ckpt_path, map_location=device)
    saved = state  # the last checkpoint's content: the final evaluation is added to it
    if state is not None:
        if missing := [k for k in ("best_G_ema", "samples", "train_seconds") if k not in state]:
            raise checkpoint.CheckpointError(
                f"checkpoint {ckpt_path} predates resumable outputs (it has no {', '.join(map(repr, missing))}): "
                f"a resumed run could not write best.pt and samples/ again; delete it to restart the stage "
                f"from scratch")
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sched_g.load_state_dict(state["sched_g"])
        sched_d.load_state_dict(state["sched_d"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        history, best = state["history"], state["best"]
        best_G_ema, samples, train_seconds = state["best_G_ema"], state["samples"], state["train_seconds"]
        checkpoint.set_rng_state(state["rng"])
        if main:
            print(f"resumed from {ckpt_path} at step {step}")
    if main:
        write_outputs(out_dir, best, best_G_ema, samples)
    distributed.broadcast_state(G, D, G_ema)  # every rank starts from rank 0's networks
    distributed.seed_rank(base_seed, step)

    G.train()
    D.train()
    reals = endless_batches(loader, epoch, batches_done)
    grid_c = None if condition is None else condition.fixed(cfg.n_sample_grid, cfg.sample_seed, device)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"gan {method.name}", unit="step",
               disable=not progress or not main)
    seconds_before, started = train_seconds, time.perf_counter()
    while step < cfg.steps:
        # ---- D: real batch, fakes without gradient, method's D loss (+ R1)
        for k in range(cfg.d_steps_per_g):
            epoch, batches_done, batch = next(reals)
            x, c_real, c_fake = (batch[0], None, None) if condition is None else condition.sample(batch, device)
            if x.shape[0] != rank_batch:
                share = f" ({world} ranks, {rank_batch} each)" if world > 1 else ""
                raise ValueError(f"got a batch of {x.shape[0]}, expected batch_size={cfg.batch_size}{share}; "
                                 f"build the loader with that batch size and drop_last=True")
            real = to_model_range(x, device)
            if cfg.mirror:
                flip = torch.rand(real.shape[0], 1, 1, 1, device=device) < 0.5
                real = torch.where(flip, real.flip(3), real)
            d_logs = d_step(G, D, method, real, opt_d, cfg, step * cfg.d_steps_per_g + k, z_dim, device, step + 1,
                            c_real=c_real, c_fake=c_fake, latent_prior=latent_prior)

        # ---- G: method's G loss through the frozen D, then the EMA of G (a D-only method skips it)
        g_logs = {}
        if method.g_loss is not None:
            g_logs = g_step(G, D, method, opt_g, cfg, rank_batch, z_dim, device, step + 1, c_fake=c_fake,
                            latent_prior=latent_prior)
            sched_g.step()
        sched_d.step()
        step += 1
        beta = ema_beta(cfg, step * cfg.batch_size)
        update_ema(G_ema, G, beta)
        bar.update(1)

        # ---- log, sample, evaluate, checkpoint
        last = step == cfg.steps
        if step % cfg.log_every == 0:
            logs = distributed.mean_logs({**d_logs, **g_logs})  # the global batch's (means over ranks)
            logger.log_metrics({**{f"train/{k}": v for k, v in logs.items()},
                                "train/ema_beta": beta, "train/kimg": step * cfg.batch_size / 1000}, step=step)
            bar.set_postfix({k.split("/")[0]: f"{v:.3f}" for k, v in logs.items() if k.endswith("/total")})
        if (step % cfg.sample_every == 0 or last) and main:
            images = sample_images(G_ema, cfg.n_sample_grid, cfg.batch_size, cfg.sample_seed, device, z_dim=z_dim,
                                   c=grid_c, latent_prior=latent_prior)
            grid = image_grid(images, nrow=math.ceil(math.sqrt(cfg.n_sample_grid)))
            name = f"step_{step:07d}.png"
            samples[name] = png_bytes(grid)
            atomic_write(out_dir / "samples" / name, lambda f: f.write(samples[name]))
            logger.log_image(grid, f"samples/{name}")
        if evaluate is not None and (step % cfg.eval_every == 0 or last):
            metrics = None
            if main:
                with RNGPreserved():
                    metrics = evaluate(G_ema, step)
            metrics = distributed.broadcast_object(metrics)
            history.append({"step": step, **metrics})
            logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=step)
            value = metrics.get(cfg.best_key)
            if value is not None and (best is None or value < best[cfg.best_key]):
                best = {"step": step, cfg.best_key: value}
                best_G_ema = copy.deepcopy(G_ema.state_dict())  # a copy: G_ema moves on
                if main:
                    checkpoint.save(best_path, {"G_ema": best_G_ema, **best})
        if step % cfg.checkpoint_every == 0 or last:
            # The last checkpoint's seconds are the result's, so a resumed finished run reports the same.
            train_seconds = seconds_before + time.perf_counter() - started
            saved = {
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                "step": step, "epoch": epoch, "batches_done": batches_done, "history": history, "best": best,
                "best_G_ema": best_G_ema, "samples": samples, "train_seconds": train_seconds,
                "rng": checkpoint.rng_state(), "config": dataclasses.asdict(cfg),
            }
            if main:
                checkpoint.save(ckpt_path, saved)
            distributed.barrier()  # the others wait while rank 0 writes
            distributed.seed_rank(base_seed, step)  # a run resumed here draws the same numbers
    bar.close()

    # ---- once, at the end: the dear evaluation of the best G_ema (a finished run resumed reads it back)
    final = None
    if final_evaluate is not None and best is not None:
        final = (saved or {}).get("final")
        if final is None or final.get("step") != best["step"]:
            final = None
            if main:
                best_G = copy.deepcopy(G_ema)
                best_G.load_state_dict(best_G_ema)
                with RNGPreserved():
                    final = {"step": best["step"], **final_evaluate(best_G, best["step"])}
                checkpoint.save(ckpt_path, {**saved, "final": final})
            final = distributed.broadcast_object(final)
            distributed.barrier()
        logger.log_metrics({f"final/{k}": v for k, v in final.items() if k != "step"}, step=step)
    return GANResult(G_ema=G_ema, history=history, best=best, steps=step, train_seconds=train_seconds, final=final)
