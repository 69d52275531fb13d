"""ContraD as a GAN method for the shared trainer: a discriminator with three heads and its (d_loss, g_loss) pair.

The official code (jh-jeong/ContraD: models/gan/base.py, training/gan/contrad.py,
augment/__init__.py; read, not copied) fixes what the paper leaves open:
- D is one encoder with three heads on its penultimate features, all inside the D
  module, so D's optimiser trains them: two projection heads Linear(d_penul,
  d_hidden), LeakyReLU 0.1, Linear(d_hidden, 128) -- h_r for L_con+ (`projection`)
  and h_f for L_con- (`projection2`) -- and the score head h_d Linear(d_penul,
  d_hidden), LeakyReLU 0.1, Linear(d_hidden, 1) (`TinyDiscriminator`). d_hidden is
  512 for SNDCGAN and 1024 for SNResNet-18 and serves the projection heads too.
  For SNDCGAN and SNResNet-18 the heads' Linear layers are spectrally normalised
  like the rest of D (the official D applies spectral_norm to every Linear it owns,
  heads included; its StyleGAN2 D does not). The SNDCGAN D initialises its heads
  N(0, 0.02) with zero biases, SNResNet-18 keeps PyTorch's defaults.
- D step: one forward of D over aug([real; real; fake]) (3N images, independent
  augmentations per sample, on the device); the score head sees detached features
  (`sg_linear=True`), so L_dis trains h_d only; d_real is from real view 1 and
  d_fake from the fakes (real view 2 is not scored). Loss = L_con+ + lbd_a L_con- + L_dis.
- G step: softplus(-h_d(D(aug(G(z))))), through all of D (features not detached).
- Augmentation `simclr`: RandomResizedCrop scale (0.2, 1) ratio (3/4, 4/3), flip,
  ColorJitterLayer(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, no blur. Its colour
  jitter is not torchvision's (augment/color_jitter.py, augment/utils.py): contrast around
  each channel's own mean; hue, saturation and value (brightness) moved in HSV space, the
  hue by U[-0.1, 0.1] * 255/360 of a turn; the two groups in one random order per batch;
  a straight-through (identity) gradient through the HSV round trip. `contrad_views` uses
  the suite's implementation of it, `shared.views.hsv_color_jitter` (`jitter: hsv`);
  `jitter: torchvision` gives torchvision's ColorJitter instead.

Deviations, on purpose: crop and flip are the suite's `shared.views.simclr_view`
(torchvision semantics; the official layers differ in details such as reflection
padding at crop borders and how crop tries are pooled across the batch); images
stay in [-1, 1] outside the augmentation. The hyperparameters keep the suite's
names `temperature` and `lambda_a` for the official `--temp` and `--lbd_a`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from papers.contrad.losses import con_neg, con_pos, dis_loss
from shared.gan_losses import Augment, GANMethod, Logs, ns_g_loss
from shared.models.heads import mlp_head
from shared.views import SimCLRViewConfig, simclr_view

__all__ = ["ContraDOutput", "ContraDHeads", "ContraDDiscriminator", "contrad_views", "contrad_augment",
           "contrad", "simclr_d_loss", "simclr_only"]


# ---------------------------------------------------------------- heads and discriminator

class ContraDOutput(NamedTuple):
    score: Tensor  # (B,) logits of h_d
    z_pos: Tensor  # (B, proj_dim) h_r's projections, for L_con+
    z_neg: Tensor  # (B, proj_dim) h_f's projections, for L_con-


class ContraDHeads(nn.Module):
    """h_r, h_f and h_d on D's penultimate features (B, feature_dim).

    Args:
        feature_dim: width of the features.
        proj_dim: output width of the projection heads (128).
        score_hidden: hidden width of h_d (official d_hidden: 512 SNDCGAN, 1024 SNResNet-18).
        proj_hidden: hidden width of h_r and h_f; None takes score_hidden, as the official code.
        spectral_norm: spectrally normalise every head Linear (official for SNDCGAN / SNResNet-18,
            not for StyleGAN2).
        init_std: N(0, init_std) weights and zero biases (0.02 for SNDCGAN); None keeps PyTorch's init.
    """

    def __init__(self, feature_dim: int, proj_dim: int = 128, score_hidden: int = 512, proj_hidden: int | None = None,
                 spectral_norm: bool = True, init_std: float | None = None):
        super().__init__()
        proj_hidden = score_hidden if proj_hidden is None else proj_hidden
        self.proj_pos = mlp_head(feature_dim, [proj_hidden], proj_dim, activation="leaky_relu")
        self.proj_neg = mlp_head(feature_dim, [proj_hidden], proj_dim, activation="leaky_relu")
        self.score = mlp_head(feature_dim, [score_hidden], 1, activation="leaky_relu")
        for m in list(self.modules()):  # a copy: registering a parametrization adds modules
            if isinstance(m, nn.Linear):
                if init_std is not None:
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)
                if spectral_norm:
                    parametrizations.spectral_norm(m)

    def score_logits(self, features: Tensor) -> Tensor:
        return self.score(features).squeeze(1)

    def forward(self, features: Tensor, stop_grad_score: bool = True) -> ContraDOutput:
        """All three heads; with `stop_grad_score` h_d sees detached features (ContraD's D step)."""
        score = self.score_logits(features.detach() if stop_grad_score else features)
        return ContraDOutput(score, self.proj_pos(features), self.proj_neg(features))


class ContraDDiscriminator(nn.Module):
    """A backbone with `features(x)` and `feature_dim`, plus ContraD's three heads.

    `forward(x)` is the score h_d(D(x)) (B,) through the whole network (G step, R1,
    evaluation); `forward_heads(x)` is the D step's single pass, with the score on
    detached features. The backbone's own output layer, if it has one, is unused:
    build SNDCGAN / SNResNet-18 backbones with `linear_head=False`.
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, score_hidden: int = 512,
                 proj_hidden: int | None = None, spectral_norm: bool = True, init_std: float | None = None):
        super().__init__()
        has_features = callable(getattr(backbone, "features", None))
        if not (has_features and isinstance(getattr(backbone, "feature_dim", None), int)):
            raise TypeError(f"the backbone must have features(x) and an int feature_dim, got {type(backbone).__name__}")
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.heads = ContraDHeads(backbone.feature_dim, proj_dim, score_hidden, proj_hidden, spectral_norm, init_std)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.heads.score_logits(self.features(x))

    def forward_heads(self, x: Tensor, stop_grad_score: bool = True) -> ContraDOutput:
        return self.heads(self.features(x), stop_grad_score)


# ---------------------------------------------------------------- augmentation

def contrad_views(**overrides) -> SimCLRViewConfig:
    """ContraD's `simclr` augmentation for D (augment/__init__.py and configs/defaults/augment.gin),
    with its own colour jitter (`jitter="hsv"`)."""
    fields = dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, brightness=0.4, contrast=0.4,
                  saturation=0.4, hue=0.1, jitter_p=0.8, grayscale_p=0.2, blur_p=0.0, solarize_p=0.0,
                  jitter="hsv")
    return SimCLRViewConfig(**{**fields, **overrides})


def contrad_augment(x: Tensor, cfg: SimCLRViewConfig) -> Tensor:
    """One differentiable SimCLR view per sample of images in [-1, 1], returned in [-1, 1]."""
    return simclr_view((x + 1) / 2, cfg) * 2 - 1


# ---------------------------------------------------------------- the method

def _check_contrad_d(D: nn.Module) -> None:
    if not callable(getattr(D, "forward_heads", None)):
        raise TypeError(f"ContraD needs a ContraDDiscriminator (forward_heads), got {type(D).__name__}")


def contrad_d_loss(D: nn.Module, real: Tensor, fake: Tensor, augment: Augment, temperature: float = 0.1,
                   lambda_a: float = 1.0) -> tuple[Tensor, Logs]:
    """ContraD's D loss L_con+ + lambda_a L_con- + L_dis on one pass over aug([real; real; fake])."""
    _check_contrad_d(D)
    assert real.shape == fake.shape, f"real and fake batches must match, got {tuple(real.shape)}, {tuple(fake.shape)}"
    n = real.shape[0]
    # Under autocast the fakes come out of G in bf16; the batch takes the reals' dtype.
    x = augment(torch.cat([real, real, fake.detach().to(real.dtype)]))
    out = D.forward_heads(x, stop_grad_score=True)
    l_pos = con_pos(out.z_pos[:n], out.z_pos[n:2 * n], temperature)
    l_neg = con_neg(out.z_neg[:n], out.z_neg[n:2 * n], out.z_neg[2 * n:], temperature)
    d_real, d_fake = out.score[:n], out.score[2 * n:]
    l_dis = dis_loss(d_real, d_fake)
    loss = l_pos + lambda_a * l_neg + l_dis
    values = torch.stack([loss, l_pos, l_neg, l_dis, d_real.float().mean(), d_fake.float().mean()]).tolist()
    keys = ("d/loss", "d/con_pos", "d/con_neg", "d/dis", "d/logits_real", "d/logits_fake")
    return loss, dict(zip(keys, values))


def contrad_g_loss(D: nn.Module, fake: Tensor, augment: Augment) -> tuple[Tensor, Logs]:
    """softplus(-h_d(D(aug(G(z))))), back-propagating through the whole of D to G."""
    _check_contrad_d(D)
    loss = ns_g_loss(D(augment(fake)))
    return loss, {"g/loss": loss.item()}


def contrad(view_cfg: SimCLRViewConfig | None = None, temperature: float = 0.1, lambda_a: float = 1.0) -> GANMethod:
    """ContraD (Jeong & Shin 2021) as a `GANMethod`; D must be a `ContraDDiscriminator`.

    Args:
        view_cfg: D's augmentation, on real and fake images in both steps; None is
            `contrad_views()`, the official `simclr` recipe.
        temperature: tau of L_con+ and L_con- (official `--temp`, 0.1).
        lambda_a: weight of L_con- (official `--lbd_a`, 1).

    The trainer's R1 (if on) goes through `D.forward`, i.e. the score head on
    non-detached features; ContraD's SNDCGAN / SNResNet-18 runs use no R1
    (`GANConfig(r1_gamma=0)`), and an SNDCGAN generator needs `style_mixing_prob=0`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not lambda_a >= 0:
        raise ValueError(f"lambda_a must be >= 0, got {lambda_a}")
    view_cfg = contrad_views() if view_cfg is None else view_cfg
    return GANMethod(d_loss=functools.partial(contrad_d_loss, temperature=temperature, lambda_a=lambda_a),
                     g_loss=contrad_g_loss, name="contrad",
                     augment=functools.partial(contrad_augment, cfg=view_cfg))


def simclr_d_loss(D: nn.Module, real: Tensor, fake: Tensor, augment: Augment,
                  temperature: float = 0.1) -> tuple[Tensor, Logs]:
    """L_con+ alone on one pass over aug([real; real]); the fakes are unused (Table 3's SimCLR row)."""
    _check_contrad_d(D)
    n = real.shape[0]
    out = D.forward_heads(augment(torch.cat([real, real])), stop_grad_score=True)
    loss = con_pos(out.z_pos[:n], out.z_pos[n:], temperature)
    return loss, {"d/loss": loss.item(), "d/con_pos": loss.item()}


def simclr_only(view_cfg: SimCLRViewConfig | None = None, temperature: float = 0.1) -> GANMethod:
    """D trained by L_con+ alone ("SimCLR, lambda_con = lambda_dis = 0", Table 3), as a D-only method.

    The official `simclr_only` loss still updates G against the untrained score head,
    which cannot change D; here G is not updated at all (`g_loss=None`), which leaves
    D's training identical and saves the G step.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    view_cfg = contrad_views() if view_cfg is None else view_cfg
    return GANMethod(d_loss=functools.partial(simclr_d_loss, temperature=temperature), g_loss=None,
                     name="simclr", augment=functools.partial(contrad_augment, cfg=view_cfg))
