"""Typed configs of the contrad stages; defaults are the paper's CIFAR-10 protocol (official code's values)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from shared import config
from shared.metrics import MetricsConfig
from shared.models.stylegan2 import PRESETS as STYLEGAN2_PRESETS
from shared.trainers.gan import GANConfig, check_latent_prior
from shared.trainers.linear_eval import LinearEvalConfig
from shared.views import SimCLRViewConfig

PARAMS = Path(__file__).with_name("params.yaml")

# D; G is SNDCGAN for the first two (Table 1's first two blocks), StyleGAN2's G for StyleGAN2's D (its third block)
ARCHITECTURES = ("sndcgan", "snresnet18", "stylegan2")
STYLEGAN2_METHODS = ("baseline", "diffaugment", "contrad", "simclr")  # Table 1's StyleGAN2 block and Table 3's rows
# diffaugment: Table 1's DiffAug row as labelled ("Trans, CutOut"); diffaugment_cc: the policy the official command
# runs for that row (EXPERIMENTS.md `--aug=diffaug` -> augment/__init__.py `diffaug()`: "color,cutout"), an extra row;
# cr / bcr: consistency regularisation (Table 1's CR and bCR rows); simclr: D trained by L_con+ alone (Table 3)
METHODS = ("baseline", "diffaugment", "diffaugment_cc", "cr", "bcr", "contrad", "simclr")


def _contrad_views() -> SimCLRViewConfig:
    # ContraD's `simclr` augmentation (official augment.gin): no blur; its own colour jitter
    # (augment/color_jitter.py: per-channel contrast, HSV hue/saturation/value, hue x 255/360).
    return SimCLRViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, brightness=0.4,
                            contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8, grayscale_p=0.2, blur_p=0.0,
                            solarize_p=0.0, jitter="hsv")


def _paper_train() -> GANConfig:
    # configs/gan/cifar10/c10_b512.gin: batch 512, 200k steps, n_critic 1, Adam 2e-4 (0.5, 0.999), non-saturating;
    # 3000-step linear warm-up; no R1, no style mixing, no mirrored reals (the augmentation flips).
    return GANConfig(steps=200_000, batch_size=512, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), r1_gamma=0.0,
                     r1_interval=0, style_mixing_prob=0.0, mirror=False, warmup_steps=3000, ema_kimg=0.0,
                     ema_start_kimg=0.0, log_every=100, sample_every=10_000, checkpoint_every=5000,
                     eval_every=5000)


@dataclasses.dataclass
class ArchitectureConfig:
    width: float = 1.0  # channel multiplier of G and D (paper: 1); SN-GANs only
    z_dim: int = 128
    score_hidden: int = 512  # hidden width of ContraD's heads (official d_hidden)
    latent_prior: str = "uniform"  # G_SNDCGAN.sample_latent: z ~ U(-1, 1)^z_dim ("normal": N(0, I))
    preset: str | None = None  # StyleGAN2 only: shared.models.stylegan2.PRESETS entry (z_dim overrides its own)
    # keys of `train` (a GANConfig) this architecture sets differently: StyleGAN2's official optimiser and
    # regularisers; they override `train` at every scale, so a scale's `train` overrides must repeat them here
    train: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_latent_prior(self.latent_prior)
        if self.preset is not None and self.preset not in STYLEGAN2_PRESETS:
            raise ValueError(f"preset must be one of {sorted(STYLEGAN2_PRESETS)}, got {self.preset!r}")
        if unknown := sorted(set(self.train) - {f.name for f in dataclasses.fields(GANConfig)}):
            raise ValueError(f"train: unknown GANConfig keys {unknown}")


def _stylegan2_train() -> dict[str, Any]:
    # README `train_stylegan2.py configs/gan/stylegan2/c10_style64.gin stylegan2 --mode=contrad --aug=simclr
    # --lbd_r1=0.1 --no_lazy --halflife_k=1000 --use_warmup`: batch 64, 800k steps, Adam 0.002 (0, 0.99),
    # non-saturating; R1 gamma 0.1 on every D step at the augmented reals; G_ema half-life 1000 kimg, started at
    # 1000 kimg; style mixing 0.9 (--style_mix); the 3000-step warm-up (gan.gin); the `cifar10_hflip` dataset
    return dict(steps=800_000, batch_size=64, lr_g=0.002, lr_d=0.002, betas=(0.0, 0.99), r1_gamma=0.1,
                r1_interval=1, r1_input="augmented", style_mixing_prob=0.9, mirror=True, warmup_steps=3000,
                ema_kimg=1000.0, ema_start_kimg=1000.0)


def _paper_architectures() -> dict[str, ArchitectureConfig]:
    # StyleGAN2: models/gan/__init__.py `stylegan2` (small32 channels 512-512-256-128, n_mlp 8, style dim 512,
    # heads of d_hidden 512 on the 8192-d flattened conv output, N(0, I) latents)
    return {"sndcgan": ArchitectureConfig(score_hidden=512), "snresnet18": ArchitectureConfig(score_hidden=1024),
            "stylegan2": ArchitectureConfig(z_dim=512, score_hidden=512, latent_prior="normal", preset="paper",
                                            train=_stylegan2_train())}


@dataclasses.dataclass
class TrainStageConfig:
    """GAN training of one (architecture, method, seed); what runs at a scale is `run`."""
    architectures: dict[str, ArchitectureConfig] = dataclasses.field(default_factory=_paper_architectures)
    run_architectures: list[str] = dataclasses.field(default_factory=lambda: list(ARCHITECTURES))
    run_methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    n_seeds: int = 1  # Table 1 reports single numbers; Table 3 is 3 runs of the linear evaluation
    train: GANConfig = dataclasses.field(default_factory=_paper_train)
    diffaugment_policy: str = "translation,cutout"  # Table 1's DiffAug row, as its label says
    diffaugment_cc_policy: str = "color,cutout"  # the official command's DiffAugment policy (augment `diffaug`)
    temperature: float = 0.1  # --temp
    lambda_a: float = 1.0  # --lbd_a
    lambda_real: float = 10.0  # CR / bCR: the weight of the reals' consistency penalty (--lbd)
    lambda_fake: float = 10.0  # bCR: the weight of the fakes' consistency penalty (--lbd2)
    views: SimCLRViewConfig = dataclasses.field(default_factory=_contrad_views)
    fid_samples: int = 10_000  # FID of 10k samples against the CIFAR-10 test set
    # A GAN run is collapsed when its best G_ema's sample diversity (shared.metrics.diversity_ratio of the
    # in-domain features: 1 for real test images, 0.47-0.49 for one CIFAR-10 class alone, 0.01 for one image
    # repeated with noise, 0.000 for an untrained G) is below this; the report leaves such runs out. 0: never.
    collapse_threshold: float = 0.1
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)

    def train_for(self, architecture: str) -> GANConfig:
        """`train` with the architecture's own keys (`architectures.<architecture>.train`) over it."""
        overrides = self.architectures[architecture].train
        if not overrides:
            return self.train
        return config.build(GANConfig, {**config.to_dict(self.train), **overrides},
                            source="papers/contrad/params.yaml", prefix=f"train.architectures.{architecture}.train.")

    def __post_init__(self):
        for name, allowed, values in (("run_architectures", ARCHITECTURES, self.run_architectures),
                                      ("run_methods", METHODS, self.run_methods)):
            if unknown := [v for v in values if v not in allowed]:
                raise ValueError(f"{name}: unknown {unknown}; allowed: {list(allowed)}")
        if missing := [a for a in self.run_architectures if a not in self.architectures]:
            raise ValueError(f"run_architectures {missing} have no entry under architectures")
        if self.n_seeds < 1:
            raise ValueError(f"n_seeds must be >= 1, got {self.n_seeds}")
        if not 0 <= self.collapse_threshold < 1:
            raise ValueError(f"collapse_threshold must be in [0, 1) (0: never collapsed), "
                             f"got {self.collapse_threshold}")


@dataclasses.dataclass
class EvaluateConfig:
    """Linear evaluation of D's penultimate features, computed once (official test_lineval.py: plain SGD 0.1, no
    momentum or weight decay, 100 epochs, x0.1 at 60/75/90, batch 256, the last epoch's test accuracy)."""
    linear: LinearEvalConfig = dataclasses.field(default_factory=lambda: LinearEvalConfig(
        epochs=100, batch_size=256, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
        milestones=(60, 75, 90), gamma=0.1))
    repeats: int = 3  # "mean and standard deviation across 3 runs of the evaluation" (Table 3)
    train_limit: int | None = None  # a stratified subset of the train set for the linear head (None: all)
    test_limit: int | None = None  # a stratified subset of the test set (None: all)
