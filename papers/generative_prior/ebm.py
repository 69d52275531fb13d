"""Idea #1's prior: an energy-based model of the SSL images, IGEBM's Langevin dynamics, its training and its chains.

Energy E(x) of images x in [0, 1] (lower = more likely). The slides cite Du & Mordatch 2019 (IGEBM) for the
Langevin dynamics I_{t+1} = I_t + alpha grad f(I_t) + omega with f = -E; their "step size 10" and "std 1.0"
are IGEBM's `--step_lr` and `--noise_scale` (wave-2 spec 3.C). IGEBM's step (openai/ebm_code_release,
train.py), which `langevin_step` follows in this order:

    x <- x + N(0, (0.005 * noise_scale)^2)        noise first; sigma is 0.005 x the slides' "std"
    g <- d/dx E(x)                                 per image (the gradient of the batch's summed energy)
    x <- x - step_lr * clip(g, -grad_clip, grad_clip)   elementwise clip (`proj_norm` 0.01): a pixel moves
    x <- clip(x, 0, 1)                                    at most step_lr * grad_clip = 0.1 per step

Training (`train_ebm`) is IGEBM's contrastive divergence with a replay buffer: positives are a batch of
training images; negatives start from the buffer (95%) or U(0, 1) (5%), run `langevin_steps` steps and go
back into the buffer; the loss is E(x+) - E(x-) + reg (E(x+)^2 + E(x-)^2) (means over the batch, reg 1).
`EBMConfig`'s defaults are IGEBM's CIFAR-10 protocol (README command, train.py); see its fields.

The Langevin views of the SSL stage (`LangevinConfig`, the `langevin` stage) start from the slides' noisy
interpolation I_0 = beta x + (1 - beta) eps, eps ~ U(0, 1) (`interpolated_start`; the tables' "alpha" is
this beta) and run one chain whose snapshots after k steps are the views (the steps ablation reads several
snapshots of the same chain). Their randomness is a pure function of (seed, dataset row, step)
(`counter_uniform`, `counter_normal`: a counter-based hash, not a stateful generator), so a row's chain does
not depend on the batch it runs in, the batch size or the device (up to float rounding).

Deviations from IGEBM, on purpose: see `ResNetEnergy` (architecture details); the number of iterations
(unstated); the replay buffer keeps float32 images in a ring (IGEBM: a FIFO list of float arrays, the same
thing); no data augmentation of the positives; spectral norm is PyTorch's (one power iteration per training
forward, none in eval mode) and the net samples in eval mode, so only the training forward (one per
iteration, on [x+, x-]) moves the power iteration (IGEBM's TF code updates it at every forward, sampling
included); one process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from tqdm import tqdm

from shared import checkpoint
from shared.device import to_device
from shared.tracking import Logger
from shared.trainers.common import EpochLoader, NonFiniteLossError
from shared.trainers.gan import endless_batches

NOISE_STD = 0.005  # IGEBM: the Langevin noise is N(0, (0.005 * noise_scale)^2) for images in [0, 1]
LRELU_SLOPE = 0.2  # tf.nn.leaky_relu's default, IGEBM's activation
ARCHS = ("resnet", "convnet")
ENERGY_FORMAT = "generative_prior/energy/1"

__all__ = ["EBMConfig", "ChainConfig", "LangevinConfig", "ConvNetEnergy", "ResNetEnergy", "ReplayBuffer",
           "build_energy", "save_energy", "load_energy", "sampling", "langevin_step", "langevin_chain",
           "interpolated_start", "cd_loss", "train_ebm", "counter_uniform", "counter_normal", "snapshot_file",
           "energies", "auc"]


# ---------------------------------------------------------------- configs

@dataclasses.dataclass
class EBMConfig:
    """The energy network and its training. Defaults: IGEBM's unconditional CIFAR-10 run (README command
    `--step_lr=10.0 --num_steps=60 --proj_norm=0.01 ... --cclass=False`, train.py defaults), except the
    number of iterations, which neither the slides nor IGEBM state (its code trains until stopped): 100k
    iterations at batch 128 (256 passes over 50k images) is ours."""
    arch: Literal["resnet", "convnet"] = "resnet"  # IGEBM's ResNet32-like net, or spec 3.D's small SN ConvNet
    width: float = 1.0  # channel multiplier: resnet 128 * width filters (IGEBM num_filters), convnet 32-64-128-128
    steps: int = 100_000  # training iterations (ours; see above)
    batch_size: int = 128
    lr: float = 1e-4  # README command --lr=1e-4 (train.py's flag default is 3e-4)
    betas: tuple[float, float] = (0.0, 0.999)
    langevin_steps: int = 60  # --num_steps=60 for CIFAR-10
    step_lr: float = 10.0
    noise_scale: float = 1.0  # sigma = 0.005 * noise_scale
    grad_clip: float = 0.01  # --proj_norm: the energy gradient clipped elementwise to +-0.01
    reg: float = 1.0  # --l2_coeff: weight of E(x+)^2 + E(x-)^2
    buffer_size: int = 50_000
    reinit: float = 0.05  # fraction of negatives started from U(0, 1) rather than the buffer
    log_every: int = 100  # iterations between logged means (the history)
    checkpoint_every: int = 1000  # iterations; the last one always checkpoints
    n_sample_grid: int = 64  # buffer images in samples.png
    n_check: int = 1000  # images per set of the final energy check (test, buffer, noise)

    def __post_init__(self):
        for name in ("steps", "batch_size", "langevin_steps", "buffer_size", "log_every", "checkpoint_every",
                     "n_sample_grid", "n_check"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("width", "lr", "step_lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.noise_scale < 0 or self.reg < 0:
            raise ValueError(f"noise_scale and reg must be >= 0, got {self.noise_scale}, {self.reg}")
        if not 0 <= self.reinit <= 1:
            raise ValueError(f"reinit must be in [0, 1], got {self.reinit}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size ({self.buffer_size}) must hold at least one batch ({self.batch_size})")
        if self.checkpoint_every % self.log_every:  # a checkpoint ends a log interval: no partial means to keep
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every "
                             f"({self.log_every})")


@dataclasses.dataclass
class ChainConfig:
    """One Langevin chain of the views: I_0 = beta x + (1 - beta) U(0, 1), then max(snapshots) IGEBM steps;
    the images after each of `snapshots` steps are written (0 is I_0 itself). Defaults: the slides' default
    setting (steps 15 among the snapshots, step size 10, std 1.0, alpha 0.6)."""
    beta: float = 0.6  # the tables' "alpha": weight of the clean image in I_0
    step_lr: float = 10.0  # the slides' "step size"
    noise_scale: float = 1.0  # the slides' "std of noise": sigma = 0.005 * noise_scale
    grad_clip: float = 0.01  # IGEBM's proj_norm, as in training
    snapshots: list[int] = dataclasses.field(default_factory=lambda: [0, 5, 10, 15, 20])

    def __post_init__(self):
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if not (self.step_lr > 0 and self.grad_clip > 0 and self.noise_scale >= 0):
            raise ValueError(f"need step_lr > 0, grad_clip > 0, noise_scale >= 0, got {self}")
        if not self.snapshots or any(k < 0 for k in self.snapshots) or sorted(set(self.snapshots)) != self.snapshots:
            raise ValueError(f"snapshots must be distinct steps >= 0 in increasing order, got {self.snapshots}")

    @property
    def steps(self) -> int:
        return self.snapshots[-1]


def _paper_chains() -> dict[str, ChainConfig]:
    # The slides' idea-#1 ablations (spec 3.A, P1-P5): each varies one setting of the default; the steps
    # ablation (5, 10, 15, 20) is read from the default chain's snapshots, the others at 15 steps.
    return {"default": ChainConfig(),
            "alpha0p5": ChainConfig(beta=0.5, snapshots=[15]),
            "alpha0p7": ChainConfig(beta=0.7, snapshots=[15]),
            "std0p5": ChainConfig(noise_scale=0.5, snapshots=[15]),
            "std2": ChainConfig(noise_scale=2.0, snapshots=[15]),
            "stepsize5": ChainConfig(step_lr=5.0, snapshots=[15]),
            "stepsize20": ChainConfig(step_lr=20.0, snapshots=[15])}


@dataclasses.dataclass
class LangevinConfig:
    """The chains the `langevin` stage knows and the ones a scale runs (the others write skip markers)."""
    chains: dict[str, ChainConfig] = dataclasses.field(default_factory=_paper_chains)
    run_chains: list[str] = dataclasses.field(default_factory=lambda: list(_paper_chains()))
    batch_size: int = 500  # images per batch of chains (any size gives the same views: see the module doc)
    n_grid: int = 8  # images (rows) of chain.png

    def __post_init__(self):
        if unknown := [c for c in self.run_chains if c not in self.chains]:
            raise ValueError(f"run_chains names {unknown}, which are not in chains ({sorted(self.chains)})")
        if self.batch_size < 1 or self.n_grid < 1:
            raise ValueError(f"batch_size and n_grid must be >= 1, got {self.batch_size}, {self.n_grid}")

    def chain(self, name: str) -> ChainConfig:
        if name not in self.chains:
            raise ValueError(f"unknown chain {name!r}: langevin.chains has {', '.join(sorted(self.chains))}")
        return self.chains[name]

    def check_use(self, chain: str, snapshot: int) -> None:
        """Raise unless `chain` is run at this scale and writes `snapshot` (what an SSL run reads)."""
        if snapshot not in self.chain(chain).snapshots:
            raise ValueError(f"chain {chain!r} writes snapshots {self.chains[chain].snapshots}, not {snapshot}")
        if chain not in self.run_chains:
            raise ValueError(f"chain {chain!r} is not in langevin.run_chains ({self.run_chains}) at this scale")


def snapshot_file(chain_dir: str | Path, snapshot: int) -> Path:
    """The precomputed views of a chain's snapshot: `<langevin out>/<chain>/step<k>.npy` (PrecomputedViews)."""
    return Path(chain_dir) / f"step{snapshot}.npy"


# ---------------------------------------------------------------- energy networks

def _sn_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1))


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _images(x: Tensor) -> Tensor:
    """The input checked and in channels_last, the layout the nets run fastest in (weights moved with
    `shared.device.to_device`): 1.8x faster Langevin steps than NCHW on one CPU thread, measured."""
    assert x.ndim == 4 and x.shape[1] == 3, f"expected images (B, 3, H, W) in [0, 1], got {tuple(x.shape)}"
    return x.contiguous(memory_format=torch.channels_last)


class ConvNetEnergy(nn.Module):
    """Spec 3.D's small energy net: spectrally normalised 3x3 convs 3 -> 32 -> 64 -> 128 -> 128 (x width), stride
    2 after the first (32 -> 16 -> 8 -> 4 px at 32 x 32), LeakyReLU 0.2 after each, the last map summed over
    space, a linear layer to the energy (B,). About 13 M multiply-adds per 32 x 32 image at width 1. The linear
    output layer is not normalised (as IGEBM's `fc5`)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [3] + [_channels(b, width) for b in (32, 64, 128, 128)]
        self.convs = nn.ModuleList(_sn_conv(c[i], c[i + 1], stride=1 if i == 0 else 2) for i in range(4))
        self.out = nn.Linear(c[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        x = _images(x)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
        return self.out(x.sum(dim=(2, 3))).squeeze(1)


class _Block(nn.Module):
    """IGEBM's residual block: conv, LeakyReLU, conv, plus the input (through a conv where the width changes),
    2 x 2 average pooling when it downsamples, LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        self.c1, self.c2 = _sn_conv(c_in, c_out), _sn_conv(c_out, c_out)
        self.shortcut = _sn_conv(c_in, c_out) if c_in != c_out else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.leaky_relu(self.c1(x), LRELU_SLOPE))
        h = h + (x if self.shortcut is None else self.shortcut(x))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return F.leaky_relu(h, LRELU_SLOPE)


class ResNetEnergy(nn.Module):
    """IGEBM's unconditional CIFAR-10 energy net (`ResNet32`, models.py), with F = 128 x width filters:
    a 3x3 conv 3 -> F and LeakyReLU, six residual blocks (F, down), (F), (2F, down), (2F), (2F, down), (2F)
    (32 -> 16 -> 8 -> 4 px), ReLU, the sum over space, a linear layer 2F -> 1. Every conv is spectrally
    normalised, the output layer is not. About 0.85 G multiply-adds per 32 x 32 image at width 1 (5.3 M parameters).

    Differences from IGEBM's ResNet32, on purpose (small, for a plain PyTorch module): IGEBM's convolutions
    have no bias but a learned bias added to their input ("extra_bias") and the second conv of a block a
    learned per-channel gain, with its own initialisation; here they are ordinary biased convs with
    PyTorch's default initialisation. No attention block (IGEBM's `--use_attention` is off for CIFAR-10).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        f = _channels(128, width)
        self.stem = _sn_conv(3, f)
        plan = [(f, f, True), (f, f, False), (f, 2 * f, True), (2 * f, 2 * f, False), (2 * f, 2 * f, True),
                (2 * f, 2 * f, False)]
        self.blocks = nn.Sequential(*(_Block(*p) for p in plan))
        self.out = nn.Linear(2 * f, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = _images(x)
        h = self.blocks(F.leaky_relu(self.stem(x), LRELU_SLOPE))
        return self.out(F.relu(h).sum(dim=(2, 3))).squeeze(1)


def build_energy(arch: str, width: float) -> nn.Module:
    if arch == "convnet":
        return ConvNetEnergy(width)
    if arch == "resnet":
        return ResNetEnergy(width)
    raise ValueError(f"ebm.arch must be one of {ARCHS}, got {arch!r}")


def save_energy(path: str | Path, energy: nn.Module, cfg: EBMConfig, steps: int) -> None:
    """`energy.pt`: the weights, the architecture and the training config (atomically)."""
    checkpoint.save(path, {"format": ENERGY_FORMAT, "arch": cfg.arch, "width": cfg.width, "steps": steps,
                           "state": energy.state_dict(), "config": dataclasses.asdict(cfg)})


def load_energy(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The energy net of `energy.pt` on `device`, in eval mode, its parameters frozen (requires_grad False)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: it is made by `dvc repro papers/generative_prior/dvc.yaml:"
                                f"train_ebm` (python -m papers.generative_prior.train_ebm --out {path.parent})")
    state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != ENERGY_FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not an energy file written by papers.generative_prior."
                                         f"train_ebm (format {ENERGY_FORMAT})")
    energy = build_energy(state["arch"], state["width"])
    try:
        energy.load_state_dict(state["state"])
    except RuntimeError as err:
        raise checkpoint.CheckpointError(f"{path}: its weights do not fit a {state['arch']} of width "
                                         f"{state['width']} ({err})") from err
    return to_device(energy, device).eval().requires_grad_(False)


# ---------------------------------------------------------------- counter-based randomness

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment (2^64 / golden ratio)
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # SplitMix64's finaliser multipliers
_COUNTER_SALT = 0x632BE59BD9B4E019


def _signed(c: int) -> int:
    """A 64-bit pattern as the int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


def _srl(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 tensors holding uint64 bit patterns (products wrap modulo 2^64)."""
    z = (z ^ _srl(z, 30)) * _signed(_MIX1)
    z = (z ^ _srl(z, 27)) * _signed(_MIX2)
    return z ^ _srl(z, 31)


def _mix64_int(z: int) -> int:
    z &= _M64
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def counter_bits(seed: int, rows: Tensor, stream: int, n: int) -> Tensor:
    """int64 (len(rows), n) 64-bit hashes; entry (i, j) depends only on (seed, stream, rows[i], j).

    The SplitMix64 finaliser of the key chain (seed, stream) -> row -> counter j, computed on `rows`'s
    device in int64 arithmetic (which wraps modulo 2^64, as the unsigned hash needs).
    """
    if rows.ndim != 1 or rows.dtype != torch.int64:
        raise ValueError(f"rows must be a 1-D int64 tensor, got {rows.dtype} {tuple(rows.shape)}")
    root = _mix64_int((seed & _M64) * _GOLDEN + (stream & _M64))
    per_row = _mix64(torch.full_like(rows, _signed(root)) ^ _mix64((rows + 1) * _signed(_GOLDEN)))
    j = torch.arange(1, n + 1, dtype=torch.int64, device=rows.device)
    counters = _mix64(j * _signed(_GOLDEN) + _signed(_COUNTER_SALT))
    return _mix64(per_row[:, None] ^ counters[None, :])


def _unit(bits24: Tensor) -> Tensor:
    return (bits24.float() + 0.5) * 2.0 ** -24  # in (0, 1): never 0, so log() is finite


def counter_uniform(seed: int, rows: Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """float32 U(0, 1) draws of shape (len(rows), *shape), 24 bits each; row i depends only on
    (seed, stream, rows[i])."""
    bits = counter_bits(seed, rows, stream, math.prod(shape))
    return _unit(_srl(bits, 40)).reshape(len(rows), *shape)


def counter_normal(seed: int, rows: Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """float32 N(0, 1) draws of shape (len(rows), *shape) by Box-Muller on two 24-bit uniforms of one hash."""
    bits = counter_bits(seed, rows, stream, math.prod(shape))
    u1, u2 = _unit(_srl(bits, 40)), _unit((bits >> 16) & 0xFFFFFF)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).reshape(len(rows), *shape)


# ---------------------------------------------------------------- Langevin dynamics

@contextlib.contextmanager
def sampling(energy: nn.Module) -> Iterator[nn.Module]:
    """The energy net ready to sample: eval mode (spectral norm keeps its power-iteration vectors), parameters
    without requires_grad (no graph through them, no .grad), spectral-norm weights computed once (cached);
    mode and requires_grad are put back afterwards."""
    was_training = energy.training
    flags = [(p, p.requires_grad) for p in energy.parameters()]
    energy.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with parametrize.cached():
            yield energy
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        energy.train(was_training)


def energy_grad(energy: nn.Module, x: Tensor) -> Tensor:
    """d/dx of the summed energy of the batch: each image's own energy gradient (no layer mixes images)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(energy(x).sum(), x)
    return grad


def langevin_step(energy: nn.Module, x: Tensor, step_lr: float, noise_scale: float, grad_clip: float,
                  noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One IGEBM Langevin step on images x in [0, 1] (see the module doc): noise, clipped gradient step, clamp.

    `noise`: the step's N(0, 1) draws (x's shape), scaled here by 0.005 * noise_scale; None draws them from
    `generator` (None: the global RNG). Call it inside `sampling(energy)`; the result has no graph.
    """
    if noise is None:
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    elif noise.shape != x.shape:
        raise ValueError(f"noise must have x's shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    x = x.detach() + NOISE_STD * noise_scale * noise
    grad = energy_grad(energy, x)
    return (x - step_lr * grad.clamp(-grad_clip, grad_clip)).clamp(0, 1).detach()


def langevin_chain(energy: nn.Module, x0: Tensor, steps: int, step_lr: float, noise_scale: float, grad_clip: float,
                   snapshots: tuple[int, ...] | list[int] = (), noise: Callable[[int], Tensor] | None = None,
                   generator: torch.Generator | None = None, progress: bool = False) -> dict[int, Tensor]:
    """`steps` Langevin steps from x0, one chain; {k: images after k steps} for each k in `snapshots` (0: x0).

    `noise(k)` gives the N(0, 1) draws of step k = 1..steps (None: from `generator`, or the global RNG).
    The net samples in eval mode with frozen parameters (`sampling`) and is left as it was.
    """
    if any(not 0 <= k <= steps for k in snapshots):
        raise ValueError(f"snapshots must lie in [0, {steps}], got {list(snapshots)}")
    out = {0: x0.detach().clone()} if 0 in snapshots else {}
    x = x0.detach()
    with sampling(energy):
        for k in tqdm(range(1, steps + 1), desc="langevin", leave=False, disable=not progress):
            x = langevin_step(energy, x, step_lr, noise_scale, grad_clip,
                              noise=None if noise is None else noise(k), generator=generator)
            if k in snapshots:
                out[k] = x.clone()
    return out


def interpolated_start(x: Tensor, beta: float, generator: torch.Generator | None = None,
                       eps: Tensor | None = None) -> Tensor:
    """The slides' I_0 = beta x + (1 - beta) eps, eps ~ U(0, 1) per pixel (x in [0, 1]; `eps` given or drawn)."""
    if eps is None:
        eps = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    elif eps.shape != x.shape:
        raise ValueError(f"eps must have x's shape {tuple(x.shape)}, got {tuple(eps.shape)}")
    return beta * x + (1 - beta) * eps


@torch.no_grad()
def energies(energy: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """E(x) (N,) on the CPU for float images in [0, 1], in eval mode (the net's mode is put back)."""
    device = next(energy.parameters()).device
    was_training = energy.training
    energy.eval()
    out = torch.cat([energy(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])
    energy.train(was_training)
    return out


def auc(lower: Tensor, higher: Tensor) -> float:
    """P(a < b) + P(a = b) / 2 for a from `lower`, b from `higher`: the ROC AUC of telling the two sets apart by
    their values (Mann-Whitney U / (n_lower n_higher), ties at average ranks). 1: every `higher` value is above
    every `lower` one; 0.5: no separation."""
    ranks = rankdata(torch.cat([lower, higher]).double().numpy())
    n_low, n_high = len(lower), len(higher)
    return float((ranks[n_low:].sum() - n_high * (n_high + 1) / 2) / (n_low * n_high))


# ---------------------------------------------------------------- replay buffer

class ReplayBuffer:
    """IGEBM's replay buffer: the last `capacity` negatives (float images in [0, 1]) in a ring.

    `sample(n, reinit)` starts n chains: uniform draws (with replacement) from the stored images, of which a
    fraction `reinit` (each chain independently) is replaced by U(0, 1) noise; while the buffer holds no more
    than n images every chain starts from noise (IGEBM: `len(replay_buffer) > batch_size`). Its state
    (`state_dict`) goes into the training checkpoint.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.shape = capacity, tuple(shape)
        self.images = torch.zeros(capacity, *self.shape, device=device)
        self.size = 0  # images stored
        self.next = 0  # where the next push writes

    def __len__(self) -> int:
        return self.size

    def push(self, x: Tensor) -> None:
        x = x.detach().to(self.images.device, self.images.dtype)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"the buffer holds images {self.shape}, got {tuple(x.shape[1:])}")
        x = x[-self.capacity:]  # a push larger than the buffer keeps its last images
        slots = (self.next + torch.arange(len(x), device=self.images.device)) % self.capacity
        self.images[slots] = x
        self.next = (self.next + len(x)) % self.capacity
        self.size = min(self.size + len(x), self.capacity)

    def sample(self, n: int, reinit: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(x0 (n, *shape), fresh (n,) bool: the chains started from U(0, 1))."""
        device = self.images.device
        noise = torch.rand(n, *self.shape, device=device, generator=generator)
        if self.size <= n:
            return noise, torch.ones(n, dtype=torch.bool, device=device)
        picks = torch.randint(0, self.size, (n,), device=device, generator=generator)
        fresh = torch.rand(n, device=device, generator=generator) < reinit
        x0 = torch.where(fresh.view(-1, *([1] * len(self.shape))), noise, self.images[picks])
        return x0, fresh

    def stored(self) -> Tensor:
        """The stored images, oldest first."""
        if self.size < self.capacity:
            return self.images[:self.size]
        return torch.cat([self.images[self.next:], self.images[:self.next]])

    def state_dict(self) -> dict:
        return {"images": self.images.clone(), "size": self.size, "next": self.next, "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or tuple(state["images"].shape[1:]) != self.shape:
            raise ValueError(f"a buffer of {state['capacity']} x {tuple(state['images'].shape[1:])} cannot be loaded "
                             f"into one of {self.capacity} x {self.shape}")
        self.images.copy_(state["images"])
        self.size, self.next = state["size"], state["next"]


# ---------------------------------------------------------------- training

def cd_loss(e_pos: Tensor, e_neg: Tensor, reg: float) -> Tensor:
    """IGEBM's contrastive-divergence loss: mean E(x+) - mean E(x-) + reg (mean E(x+)^2 + mean E(x-)^2).

    e_pos, e_neg: (B,) energies of the data and of the Langevin negatives (these carry no graph to the
    sampler: the negatives are constants). Lowering it pushes data energies down and negatives up; the
    squared term keeps energies near 0 (`--l2_coeff`, 1 for CIFAR-10).
    """
    assert e_pos.ndim == 1 and e_neg.ndim == 1, f"expected (B,) energies, got {e_pos.shape}, {e_neg.shape}"
    return e_pos.mean() - e_neg.mean() + reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean())


def moment_gap(neg: Tensor, pos: Tensor) -> float:
    """Mean over channels of |mean(neg) - mean(pos)| + |std(neg) - std(pos)| (pixel statistics): a cheap sign of
    whether the negatives look like data (0) or like flat or noisy images."""
    dims = (0, 2, 3)
    return float(((neg.mean(dims) - pos.mean(dims)).abs() + (neg.std(dims) - pos.std(dims)).abs()).mean())


@dataclasses.dataclass
class EBMResult:
    history: list[dict[str, float]]  # one row per log interval: step, means over it, and e_noise
    steps: int
    buffer: ReplayBuffer
    train_seconds: float  # the loop's wall-clock seconds up to the last checkpoint, summed over resumed runs


def train_ebm(cfg: EBMConfig, energy: nn.Module, loader: EpochLoader, *, out_dir: str | Path, logger: Logger,
              device: torch.device, progress: bool = True) -> EBMResult:
    """Train `energy` by IGEBM's contrastive divergence on `loader`'s uint8 batches for `cfg.steps` iterations.

    Per iteration: a batch of data x+ (uint8 -> [0, 1]); negatives x- from the replay buffer (`reinit` from
    U(0, 1)), `langevin_steps` Langevin steps with the net in eval mode and frozen (`sampling`); one training
    forward of the net on [x+, x-] (one spectral-norm power iteration); `cd_loss`; one Adam step; x- pushed
    into the buffer. Every `log_every` iterations the means of loss, E+ and E- over the interval, the energy of
    a fixed batch of U(0, 1) noise (`e_noise`) and `moment_gap` of the last negatives are logged and kept in
    the history. The checkpoint `out_dir/checkpoint.pt` (net, Adam, buffer, iteration, loader position,
    history, every RNG) is written every `checkpoint_every` iterations and at the end, and resumed if present:
    a resumed run repeats what the uninterrupted one would have done. Raises NonFiniteLossError naming the
    iteration and the value if the loss is NaN or infinite. One process (no torchrun).
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    if len(loader) == 0:
        raise ValueError("the loader yields no batches (fewer images than ebm.batch_size with drop_last?)")
    opt = torch.optim.Adam(energy.parameters(), lr=cfg.lr, betas=cfg.betas)
    step, epoch, batches_done, history, train_seconds = 0, 0, 0, [], 0.0
    buffer: ReplayBuffer | None = None
    state = checkpoint.load(ckpt_path, map_location=device)
    if state is not None:
        energy.load_state_dict(state["energy"])
        opt.load_state_dict(state["opt"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        history, train_seconds = state["history"], state["train_seconds"]
        buffer = ReplayBuffer(cfg.buffer_size, tuple(state["buffer"]["images"].shape[1:]), device)
        buffer.load_state_dict(state["buffer"])
        checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {ckpt_path} at iteration {step}")

    batches = endless_batches(loader, epoch, batches_done)
    probe: Tensor | None = None  # fixed U(0, 1) images for e_noise (own generator: the RNGs do not move)
    sums: dict[str, float] = {}
    energy.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="ebm", unit="it", disable=not progress)
    seconds_before, started = train_seconds, time.perf_counter()
    while step < cfg.steps:
        # ---- data and negatives
        epoch, batches_done, batch = next(batches)
        x = batch[0]
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[0] != cfg.batch_size:
            raise ValueError(f"expected uint8 batches (ebm.batch_size={cfg.batch_size}, C, H, W), got {x.dtype} "
                             f"{tuple(x.shape)}; build the loader with drop_last=True")
        pos = x.to(device).float() / 255
        if buffer is None:
            buffer = ReplayBuffer(cfg.buffer_size, tuple(pos.shape[1:]), device)
        if probe is None:
            probe = torch.rand(min(cfg.batch_size, 256), *pos.shape[1:], generator=torch.Generator().manual_seed(0))
        x0, fresh = buffer.sample(cfg.batch_size, cfg.reinit)
        neg = langevin_chain(energy, x0, cfg.langevin_steps, cfg.step_lr, cfg.noise_scale, cfg.grad_clip,
                             snapshots=(cfg.langevin_steps,))[cfg.langevin_steps]

        # ---- contrastive divergence step
        e_pos, e_neg = energy(torch.cat([pos, neg])).split(cfg.batch_size)
        loss = cd_loss(e_pos, e_neg, cfg.reg)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"non-finite EBM loss {value} at iteration {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        buffer.push(neg)
        step += 1
        bar.update(1)
        for key, v in (("loss", value), ("e_pos", e_pos.mean().item()), ("e_neg", e_neg.mean().item()),
                       ("fresh", fresh.float().mean().item())):
            sums[key] = sums.get(key, 0.0) + v

        # ---- log, checkpoint
        last = step == cfg.steps
        if step % cfg.log_every == 0 or last:
            n = step - (history[-1]["step"] if history else 0)
            row = {"step": step, **{k: v / n for k, v in sums.items()},
                   "e_noise": float(energies(energy, probe).mean()), "moment_gap": moment_gap(neg, pos)}
            history.append(row)
            sums = {}
            logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{row['loss']:.3f}", e_pos=f"{row['e_pos']:.3f}", e_neg=f"{row['e_neg']:.3f}")
        if step % cfg.checkpoint_every == 0 or last:
            train_seconds = seconds_before + time.perf_counter() - started
            checkpoint.save(ckpt_path, {
                "energy": energy.state_dict(), "opt": opt.state_dict(), "buffer": buffer.state_dict(),
                "step": step, "epoch": epoch, "batches_done": batches_done, "history": history,
                "train_seconds": train_seconds, "rng": checkpoint.rng_state(), "config": dataclasses.asdict(cfg)})
    bar.close()
    assert buffer is not None  # made at the first iteration or read from the checkpoint
    return EBMResult(history=history, steps=step, buffer=buffer, train_seconds=train_seconds)
