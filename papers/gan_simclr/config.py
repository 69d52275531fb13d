"""Typed configs of the gan_simclr stages; defaults are the paper's numbers (Sec. 5)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from shared.metrics import MetricsConfig
from shared.models.stylegan2 import StyleGAN2Config
from shared.trainers.gan import GANConfig
from shared.trainers.linear_eval import LinearEvalConfig
from shared.trainers.ssl import SSLConfig
from shared.views import SimCLRViewConfig

PARAMS = Path(__file__).with_name("params.yaml")


def _paper_optimizers() -> dict[str, SSLConfig]:
    # 600 epochs, batch 128, linear eval every 10 epochs (Sec. 5, 5.1). Adam 3e-4 without weight
    # decay, or LARS with SimCLR's defaults as the unofficial SimCLR code sets them: lr 0.3 * 128/256,
    # weight decay 1e-6, momentum 0.9, eta 0.001, cosine annealing, no warm-up.
    common = dict(epochs=600, batch_size=128, eval_every=10)
    return {"adam": SSLConfig(optimizer="adam", lr=3e-4, **common),
            "lars": SSLConfig(optimizer="lars", lr=0.3 * 128 / 256, weight_decay=1e-6, momentum=0.9, eta=0.001,
                              schedule="cosine", **common)}


@dataclasses.dataclass
class PretrainConfig:
    """SimCLR pre-training on real + fake images, and its linear evaluation."""
    width: float = 1.0  # ResNet-18 width multiplier (paper: 1)
    projection_dim: int = 64  # projector Linear(512, 512) - ReLU - Linear(512, 64)
    temperature: float = 0.5
    sampler: Literal["balanced", "uniform"] = "balanced"  # balanced: the paper's (Sec. 4)
    n_seeds: int = 3  # trials per setup (paper: 3)
    test_limit: int | None = None  # evaluate on a stratified k-image test subset (None: the full test set)
    views: SimCLRViewConfig = dataclasses.field(
        default_factory=lambda: SimCLRViewConfig.from_strength(0.5, blur=False))  # strength 0.5, no blur
    optimizers: dict[str, SSLConfig] = dataclasses.field(default_factory=_paper_optimizers)
    linear: LinearEvalConfig = dataclasses.field(default_factory=LinearEvalConfig)  # 100 epochs Adam 3e-4


@dataclasses.dataclass
class GANStageConfig:
    """StyleGAN2 + DiffAugment on the 5k subset (Sec. 4: the DiffAugment code's CIFAR defaults)."""
    architecture: StyleGAN2Config = dataclasses.field(default_factory=StyleGAN2Config)
    train: GANConfig = dataclasses.field(default_factory=GANConfig)
    policy: str = "color,translation,cutout"
    fid_samples: int = 5000  # sample quality: FID of 5k samples against the test set
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)


@dataclasses.dataclass
class GenerateConfig:
    """Samples from G_ema of the best FID checkpoint; each fake count is its own draw."""
    seed: int = 2021  # count k is drawn with seed + k
    truncation_psi: float = 1.0  # no truncation: the fakes cover G's whole distribution
    batch_size: int = 500
    grid: int = 64  # images in the PNG grid
    count_scale: float = 1.0  # draw count * count_scale images (smoke: its real set is 200 / 5000)
