"""Typed configs of the augmentation_generator stages; defaults are the paper's EMNIST-Omniglot protocol.

Hayase, Yasutomi, Inoue, "Downstream Augmentation Generation for Contrastive Learning". Where the
paper is silent, the default follows the wave-2 specification (``../shared/papers/wave2_specs.md``
section 2.C) and says so beside the field; the package README lists every such choice.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from shared.config import RunsConfig  # noqa: F401 - the seeds of every stage (section `runs`)
from shared.trainers.adversarial import AdversarialConfig
from shared.trainers.linear_eval import LinearEvalConfig
from shared.trainers.ssl import SSLConfig
from shared.views import SimCLRViewConfig

PARAMS = Path(__file__).with_name("params.yaml")

# Table 1's EMNIST-Omniglot rows that run offline: MoCo v2 re-trained on X_p (baseline), on X_p with G_A as an
# additional augmentation (ours), and on X_p together with the dotted fine-tuning images (reference).
VARIANTS = ("xp", "xp_ga", "xp_xf")
# Encoders the linear evaluation scores: the pre-trained F (an extra row, "no re-training") and the three variants.
ENCODERS = ("pretrained",) + VARIANTS


@dataclasses.dataclass
class DotsConfig:
    """The random dots of X^D (the paper's Fig. 4 is missing: count, size and ink are ours, fixed, never tuned)."""
    count_min: int = 10  # dots per image drawn uniformly from [count_min, count_max]
    count_max: int = 40
    size: int = 2  # side of a square dot in pixels at the 28 x 28 resolution
    ink: int = 255  # the ink value of Omniglot strokes after the polarity flip (MNIST's ink is bright)
    seed: int = 0  # dots of image i come from a generator seeded with (seed, i)

    def __post_init__(self):
        if not 0 <= self.count_min <= self.count_max or self.size < 1 or not 0 <= self.ink <= 255:
            raise ValueError(f"dots: need 0 <= count_min <= count_max, size >= 1 and 0 <= ink <= 255; got {self}")


@dataclasses.dataclass
class DataConfig:
    """X_p (pre-training), X_f / X_t (Omniglot fine-tuning / test drawers) and their dotted copies."""
    pretrain_set: Literal["mnist", "emnist"] = "mnist"  # EMNIST ByClass is the paper's; not available offline
    pretrain_limit_per_class: int | None = None  # None: all of X_p
    size: int = 28  # Omniglot 105 x 105 -> size x size, antialiased
    fine_drawers: int = 15  # of Omniglot's 20 drawers per character; the other 20 - fine_drawers are the test set
    drawer_split: Literal["first", "seeded"] = "first"  # first: drawers 0..14 fine-tune; seeded: a per-character draw
    split_seed: int = 0  # for drawer_split: seeded
    omniglot_limit_characters: int | None = None  # None: all 1,623 characters (smoke: a few)
    # the specification's optional variant (not the paper's split): X_p = MNIST + every image of Omniglot's
    # background alphabets (clean), X_f / X_t = the evaluation alphabets only (659 characters)
    background_in_xp: bool = False
    dots: DotsConfig = dataclasses.field(default_factory=DotsConfig)

    def __post_init__(self):
        if not 1 <= self.fine_drawers < 20:
            raise ValueError(f"data.fine_drawers must be in [1, 19], got {self.fine_drawers}")
        if not 1 <= self.size <= 105:  # area resize only shrinks Omniglot's 105 x 105
            raise ValueError(f"data.size must be in [1, 105], got {self.size}")
        for key in ("pretrain_limit_per_class", "omniglot_limit_characters"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1 or null, got {getattr(self, key)}")


@dataclasses.dataclass
class MoCoConfig:
    """MoCo v2 (official main_moco.py with --mlp --moco-t 0.2 --aug-plus --cos)."""
    dim: int = 128
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    hidden_dim: int | None = None  # None: the encoder's feature width (official --mlp)
    bn_splits: int = 8  # shuffled-BN emulation on one device (shared.methods.mocov2.SplitBatchNorm2d)


def _aug_plus() -> SimCLRViewConfig:
    # MoCo v2's aug-plus at the images' own resolution; saturation, hue and grayscale do nothing to 1-channel images.
    return SimCLRViewConfig(crop_scale=(0.2, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
                            hue=0.1, jitter_p=0.8, grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0))


def _moco_schedule() -> SSLConfig:
    # main_moco.py: SGD lr 0.03 at batch 256, momentum 0.9, wd 1e-4, 200 epochs, cosine (--cos)
    return SSLConfig(epochs=200, batch_size=256, optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=1e-4,
                     schedule="cosine", eval_every=10)


@dataclasses.dataclass
class MonitorConfig:
    """The cheap curve of the SSL stages (never used to select anything): at every evaluation of the trainer, a
    weighted kNN of F's features, X~_f (dotted) -> X_t^C and X_t^D, on the first `classes` characters."""
    classes: int | None = 200  # None: all 1,623 (about 40k images through F per evaluation)
    knn_k: int = 20
    knn_temperature: float = 0.07

    def __post_init__(self):
        if (self.classes is not None and self.classes < 1) or self.knn_k < 1 or self.knn_temperature <= 0:
            raise ValueError(f"monitor: need classes >= 1 (or null), knn_k >= 1 and knn_temperature > 0; got {self}")


@dataclasses.dataclass
class PretrainConfig:
    """Pre-training of F on X_p: MoCo v2, CIFAR-stem ResNet-18 on 1-channel images."""
    width: float = 1.0  # ResNet-18 channel multiplier
    moco: MoCoConfig = dataclasses.field(default_factory=MoCoConfig)
    ssl: SSLConfig = dataclasses.field(default_factory=_moco_schedule)
    views: SimCLRViewConfig = dataclasses.field(default_factory=_aug_plus)
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)


@dataclasses.dataclass
class GameConfig:
    """The generator game (eq. 7-13, Algorithm 1): G_A, G_E / G_L against D_f, D_p on the frozen F."""
    hidden: int = 912  # "perceptrons with four layers, each with 912 hidden units"
    layers: int = 4
    z_dim: int = 16  # z ~ U[0, 1]^z_dim (unstated; spec 2.C)
    critic_hidden: int = 512  # D_f, D_p: MLP on F's features (unstated; spec 2.C)
    lam: float = 10.0  # weight of the cycle losses l_r (unstated; CycleGAN's)
    # CycleGAN's identity terms ||G_E(x_p) - x_p|| + ||G_A(x~_f, z) - x~_f|| at identity x lam (CycleGAN: 0.5);
    # not in the paper: 0 is its objective
    identity: float = 0.0
    # G_A's and G_E's images as sigmoid(logit(x) + perceptron), identity at initialisation (models.GeneratorSpec):
    # not the paper's plain perceptron; the mini sets it (the plain perceptrons did not learn in its budget)
    skip: bool = False
    batch_size: int = 256
    # "momentum SGD with a learning rate of 3e-4 with a batch size of 256", 100 epochs of X~_f (24,345 images)
    train: AdversarialConfig = dataclasses.field(default_factory=lambda: AdversarialConfig(
        steps=9510, optimizer="sgd", lr_g=3e-4, lr_d=3e-4, momentum=0.9, simultaneous=True, log_every=100,
        checkpoint_every=500, eval_every=100))  # eval: cheap checks + the loss means since the last one (the curve)
    grid_images: int = 8  # rows of the sample grids
    grid_z: int = 8  # z values per row in the z sweep (Figure 5)
    eval_images: int = 256  # fixed images of each set scored at every evaluation during training
    check_images: int = 4096  # pre-training / fine-tuning images of the final checks that need F (A8, accuracies)
    cache_real_features: bool = True  # F of every real image once (F is frozen): same numbers, fewer F passes

    def __post_init__(self):
        for name in ("hidden", "z_dim", "critic_hidden", "batch_size", "grid_images", "grid_z", "eval_images",
                     "check_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"game.{name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 2 or self.lam < 0 or self.identity < 0:
            raise ValueError(f"game.layers must be >= 2, game.lam and game.identity >= 0, got {self.layers}, "
                             f"{self.lam}, {self.identity}")
        if self.check_images < 4:
            raise ValueError(f"game.check_images must be >= 4 (A8 fits a direction on half), got {self.check_images}")


@dataclasses.dataclass
class RetrainConfig:
    """Re-training F (eq. 15) with G_A frozen as an extra augmentation, and the two compute-matched baselines."""
    init: Literal["pretrained", "scratch"] = "pretrained"  # unstated: continue from the pre-trained F
    # init pretrained: continue MoCo's heads, key encoder and queue from the pre-training too ("pretrained"), or
    # start them afresh around the pre-trained F ("fresh"; the key encoder then copies F)
    heads: Literal["pretrained", "fresh"] = "pretrained"
    ga_branch: Literal["key", "both"] = "key"  # which view G_A's output feeds (unstated: the key view)
    ga_p: float = 1.0  # per-sample probability that G_A is applied
    moco: MoCoConfig = dataclasses.field(default_factory=MoCoConfig)
    ssl: SSLConfig = dataclasses.field(default_factory=_moco_schedule)
    views: SimCLRViewConfig = dataclasses.field(default_factory=_aug_plus)
    # Every variant runs exactly this many optimiser steps of ssl.batch_size, split into ssl.epochs equal parts (a
    # checkpoint and a monitor evaluation after each). None: ssl.epochs passes of X_p (floor(|X_p| / batch) steps
    # each), also for xp_xf, whose data set is larger.
    steps: int | None = None
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)

    def __post_init__(self):
        if not 0.0 <= self.ga_p <= 1.0:
            raise ValueError(f"retrain.ga_p must be in [0, 1], got {self.ga_p}")
        if self.steps is not None and (self.steps < 1 or self.steps % self.ssl.epochs):
            raise ValueError(f"retrain.steps ({self.steps}) must be a positive multiple of retrain.ssl.epochs "
                             f"({self.ssl.epochs}): the steps are split into ssl.epochs equal parts")


@dataclasses.dataclass
class EvaluateConfig:
    """A new linear head on frozen features of X~_f (dotted fine-tuning set), tested on X_t^C and X_t^D; kNN beside.

    The paper gives no protocol; MoCo's main_lincls.py: SGD lr 30, momentum 0.9, wd 0, 100 epochs, x0.1 at 60, 80.
    """
    linear: LinearEvalConfig = dataclasses.field(default_factory=lambda: LinearEvalConfig(
        epochs=100, batch_size=256, optimizer="sgd", lr=30.0, momentum=0.9, weight_decay=0.0, milestones=(60, 80),
        gamma=0.1))
    knn_k: int = 20
    knn_temperature: float = 0.07
