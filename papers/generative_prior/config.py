"""Typed configs of the generative_prior stages that are not one module's own.

Liu & Yan, "Exploring generative model prior for self-supervised learning" (slides). The slides name no
dataset, backbone, metric or optimiser; the defaults here are the assumptions the package README lists
(CIFAR-10, CIFAR-stem ResNet-18, linear top-1, Adam with base lr 3e-3 and embedding 64), following the
wave-2 specification (``../shared/papers/wave2_specs.md`` section 3.C) where the slides are silent.

Each stage module owns the config of what only it does (the EBM and its chains in ``ebm.py``, the SSL
losses in ``methods.py``); this module holds the data subset, the seeds, the GAN whose discriminator is the
second prior, and the registry of pre-training runs (which SSL method, which Langevin snapshot at which
lambda, which discriminator-feature coefficient), shared by the pre-training stage and the report.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from shared.config import RunsConfig  # noqa: F401 - the SSL seeds (section `runs`)
from shared.metrics import MetricsConfig
from shared.trainers.gan import GANConfig

PARAMS = Path(__file__).with_name("params.yaml")

METHODS = ("simclr", "byol")
LANGEVIN_MODES = ("aux_loss", "add_to_dataset", "both")

# Every pre-training run the package knows: the cells of the slides' six tables, the two baselines and the
# two controls: the step-0 Langevin view (I_0 alone) and the D view from D at its initialisation (`discinit`).
# One name per DVC matrix entry (dvc.yaml lists the same names); a scale runs the subset named
# in `pretrain.run_names` and writes skip markers for the rest. Decimal points are written `p` (0.01 -> 0p01).
RUN_NAMES = (
    "simclr_baseline", "simclr_default", "simclr_steps0", "simclr_steps5", "simclr_steps10", "simclr_steps20",
    "simclr_alpha0p5", "simclr_alpha0p7", "simclr_std0p5", "simclr_std2", "simclr_stepsize5", "simclr_stepsize20",
    "simclr_disc0p001", "simclr_disc0p01", "simclr_disc0p1", "simclr_discinit0p01",
    "byol_baseline", "byol_default", "byol_steps0", "byol_steps5", "byol_steps10", "byol_steps20",
    "byol_alpha0p5", "byol_alpha0p7", "byol_lambda0p001", "byol_lambda0p1",
    "byol_disc0p01", "byol_disc0p1", "byol_disc1", "byol_discinit0p1",
)


@dataclasses.dataclass
class DataConfig:
    """The SSL training set (a stratified subset of CIFAR-10 train) and the test set of the evaluation."""
    per_class: int | None = None  # images per class of the SSL / linear-head training set; None: all 5,000
    subset_seed: int = 0  # stratified draw (shared.data.stratified_subset)
    test_per_class: int | None = None  # test images per class; None: all 1,000

    def __post_init__(self):
        for key in ("per_class", "test_per_class"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"data.{key} must be >= 1 or null, got {value}")


@dataclasses.dataclass
class LangevinUse:
    """Idea #1: the Langevin view of a run: which chain, which snapshot, how it enters the loss."""
    chain: str = "default"  # a key of `langevin.chains` (ebm.py's LangevinConfig)
    snapshot: int = 15  # Langevin steps of the view; 0 is I_0 itself (the control: no EBM)
    lam: float = 0.01  # lambda of the auxiliary loss
    mode: Literal["aux_loss", "add_to_dataset", "both"] = "aux_loss"  # slides' options (1) / (2); spec 3.F risk 4

    def __post_init__(self):
        if self.snapshot < 0 or self.lam < 0:
            raise ValueError(f"langevin: need snapshot >= 0 and lam >= 0, got {self}")


@dataclasses.dataclass
class DiscUse:
    """Idea #2: the frozen GAN discriminator's features of an augmented view as another view."""
    coeff: float = 0.01  # weight of the discriminator-view loss
    head: Literal["trainable", "fixed_random"] = "trainable"  # h_D: trained, or a fixed random projection
    # which D: "trained" the train_gan stage's D at the end of training (the slides' idea); "init" the same D at
    # its initialisation (a control: random convolutional features of the architecture, no GAN prior)
    source: Literal["trained", "init"] = "trained"

    def __post_init__(self):
        if self.coeff < 0:
            raise ValueError(f"disc.coeff must be >= 0, got {self.coeff}")


@dataclasses.dataclass
class RunSpec:
    """One pre-training run: the SSL method, and at most one of the two priors."""
    method: Literal["simclr", "byol"] = "simclr"
    langevin: LangevinUse | None = None
    disc: DiscUse | None = None

    def __post_init__(self):
        if self.langevin is not None and self.disc is not None:
            raise ValueError("a run uses the Langevin view or the discriminator view, not both (the slides' ideas "
                             "#1 and #2 are separate experiments)")


@dataclasses.dataclass
class GANStageConfig:
    """The GAN whose frozen discriminator gives idea #2's view (the slides name none: SNDCGAN on the SSL set)."""
    discriminator: Literal["sndcgan", "snresnet18"] = "sndcgan"
    width: float = 1.0
    z_dim: int = 128
    latent_prior: Literal["normal", "uniform"] = "normal"
    # DiffAugment on every D input: "" none (the default at every scale), "color,translation,cutout" its
    # setting for 10% of CIFAR-10 (a probe of it at mini is in the README)
    policy: str = ""
    train: GANConfig = dataclasses.field(default_factory=lambda: GANConfig(
        steps=100000, batch_size=64, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), r1_gamma=0.0, r1_interval=0,
        style_mixing_prob=0.0, mirror=False, ema_kimg=0.0, ema_start_kimg=0.0, log_every=100, sample_every=5000,
        checkpoint_every=5000, eval_every=5000))
    fid_samples: int = 10000
    # the in-domain extractor's FID picks the checkpoint; the Inception FID of the best G at the end
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)


def check_run_name(name: str) -> str:
    if name not in RUN_NAMES:
        raise ValueError(f"unknown run {name!r}; the runs are {', '.join(RUN_NAMES)}")
    return name
