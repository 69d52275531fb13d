"""Conditional GAN networks: G(z, c) with conditional batch norm, and the projection discriminator D(x, c).

The condition c is either a class label, (B,) int64, or an instance feature vector,
(B, d) float (IC-GAN's h_i, L2-normalised by the condition provider). Both networks
first embed c: a class through an embedding table, a feature through a linear map.

Generator (`ConditionalGenerator`): the SNDCGAN generator of `shared.models.sngan`
(Linear z -> 8*ngf x r/8 x r/8, three ConvTranspose(4, stride 2) stages to r x r with
4, 2, 1 x ngf channels, ConvTranspose(3) to RGB, tanh) in which every BatchNorm is a
`ConditionalBatchNorm2d`: BatchNorm without its own affine, then a per-sample gain
1 + W_g e and bias W_b e, with e = [z, embed(c)] as in BigGAN's `ccbn` with a shared
class embedding and IC-GAN's `shared_dim_feat` linear map of h (here the whole z is
concatenated, not one chunk of z per block: BigGAN's `hier`). The width multiplier
and the resolution (a multiple of 8: 32 and 64 are the suite's) work as in SNDCGAN.

Discriminator (`ProjectionDiscriminator`, Miyato & Koyama 2018):

    D(x, c) = psi(phi(x)) + <embed(c), phi(x)>

with phi any backbone that has `features(x)` and `feature_dim` (the SNDCGAN D's
flattened last map or SNResNet-18's pooled features from `shared.models.sngan`, built
with `linear_head=False`), psi a Linear(feature_dim, 1) and embed an Embedding(n_classes,
feature_dim) or a bias-free Linear(instance_dim, feature_dim); psi and embed are
spectrally normalised like the backbone (as BigGAN's SNEmbedding and SNLinear).

Official code read for semantics, not copied: facebookresearch/ic_gan
(BigGAN_PyTorch/BigGAN.py, layers.py), pfnet-research/sngan_projection.

Deviations, on purpose: the SNDCGAN layout and N(0, 0.02) initialisation instead of
BigGAN's residual blocks and orthogonal init (a small model for 32x32 and 64x64 on a
CPU); G is not spectrally normalised unless `spectral_norm=True` (BigGAN / IC-GAN
normalise G, SNDCGAN does not); the feature embedding of G is spectrally normalised
(IC-GAN's SN-Linear), the class embedding is not (BigGAN's `shared` is a plain embedding).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from shared.models.sngan import (SNDCGANDiscriminator, SNResNetDiscriminator, _channels, _check_resolution,
                                 _check_width, _normal_init)

__all__ = ["ConditionEmbedding", "ConditionalBatchNorm2d", "ConditionalGenerator", "ProjectionDiscriminator",
           "projection_discriminator", "conditional_gan"]


def _check_condition_kind(n_classes: int | None, instance_dim: int | None) -> None:
    if (n_classes is None) == (instance_dim is None):
        raise ValueError(f"give exactly one of n_classes (class labels) and instance_dim (feature vectors), "
                         f"got n_classes={n_classes}, instance_dim={instance_dim}")
    if (n_classes or instance_dim) < 1:
        raise ValueError(f"n_classes / instance_dim must be >= 1, got {n_classes or instance_dim}")


class ConditionEmbedding(nn.Module):
    """c -> (B, dim): an Embedding for class labels (B,) int64, a Linear for features (B, instance_dim)."""

    def __init__(self, dim: int, n_classes: int | None = None, instance_dim: int | None = None, bias: bool = True):
        super().__init__()
        _check_condition_kind(n_classes, instance_dim)
        self.n_classes, self.instance_dim, self.dim = n_classes, instance_dim, dim
        self.embed = nn.Embedding(n_classes, dim) if n_classes is not None else nn.Linear(instance_dim, dim, bias=bias)

    def forward(self, c: Tensor) -> Tensor:
        if self.n_classes is not None:
            assert c.ndim == 1 and c.dtype == torch.long, \
                f"expected class labels (B,) int64, got {c.dtype} {tuple(c.shape)}"
        else:
            assert c.ndim == 2 and c.shape[1] == self.instance_dim, \
                f"expected features (B, {self.instance_dim}), got {tuple(c.shape)}"
        return self.embed(c)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without affine, then out = BN(x) * (1 + gain(e)) + bias(e) per sample (BigGAN's ccbn).

    `e` (B, cond_dim) is the conditioning vector; gain and bias are bias-free linear maps,
    so e = 0 gives plain normalisation.
    """

    def __init__(self, num_features: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Linear(cond_dim, num_features, bias=False)
        self.bias = nn.Linear(cond_dim, num_features, bias=False)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        assert e.ndim == 2 and e.shape[0] == x.shape[0], f"need one (cond_dim,) vector per sample, got {tuple(e.shape)}"
        gain = 1 + self.gain(e)[:, :, None, None]
        return self.bn(x) * gain + self.bias(e)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """G(z, c): z (B, z_dim) and a condition -> images (B, C, resolution, resolution) in [-1, 1].

    Args:
        z_dim: latent size.
        n_classes / instance_dim: exactly one: class-conditional or feature-conditional.
        embed_dim: size of the condition's embedding (IC-GAN `shared_dim_feat`; the spec's mini: 128).
        width: channel multiplier (ngf = 64 * width).
        img_channels, resolution: output images (resolution a multiple of 8).
        spectral_norm: spectrally normalise every Conv and Linear of G (BigGAN / IC-GAN).
    """

    def __init__(self, z_dim: int = 128, n_classes: int | None = None, instance_dim: int | None = None,
                 embed_dim: int = 128, width: float = 1.0, img_channels: int = 3, resolution: int = 32,
                 spectral_norm: bool = False):
        super().__init__()
        _check_width(width)
        _check_resolution(resolution)
        _check_condition_kind(n_classes, instance_dim)
        ngf = _channels(64, width)
        self.z_dim, self.img_channels, self.resolution = z_dim, img_channels, resolution
        self.bottom, self.base_channels = resolution // 8, 8 * ngf
        self.embed = ConditionEmbedding(embed_dim, n_classes, instance_dim)
        cond_dim = z_dim + embed_dim
        self.linear = nn.Linear(z_dim, self.base_channels * self.bottom ** 2)
        self.bn0 = ConditionalBatchNorm2d(self.base_channels, cond_dim)
        self.ups = nn.ModuleList()
        self.bns = nn.ModuleList()
        for c_in, c_out in ((8 * ngf, 4 * ngf), (4 * ngf, 2 * ngf), (2 * ngf, ngf)):
            self.ups.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            self.bns.append(ConditionalBatchNorm2d(c_out, cond_dim))
        self.to_rgb = nn.ConvTranspose2d(ngf, img_channels, 3, 1, 1)
        _normal_init(self)  # conv, linear and the CBN maps: N(0, 0.02); the class table too, below
        if n_classes is not None:
            nn.init.normal_(self.embed.embed.weight, 0.0, 0.02)
        else:
            _sn(self.embed.embed)  # IC-GAN's SN-Linear on h
        if spectral_norm:
            for m in [self.linear, self.to_rgb, *self.ups] + [lin for bn in [self.bn0, *self.bns]
                                                              for lin in (bn.gain, bn.bias)]:
                _sn(m)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected z (B, {self.z_dim}), got {tuple(z.shape)}"
        assert c.shape[0] == z.shape[0], f"need one condition per latent, got {c.shape[0]} for {z.shape[0]}"
        e = torch.cat([z, self.embed(c).to(z.dtype)], dim=1)
        x = self.linear(z).view(-1, self.base_channels, self.bottom, self.bottom)
        x = F.relu(self.bn0(x, e))
        for up, bn in zip(self.ups, self.bns, strict=True):
            x = F.relu(bn(up(x), e))
        return torch.tanh(self.to_rgb(x))


class ProjectionDiscriminator(nn.Module):
    """D(x, c) = psi(phi(x)) + <embed(c), phi(x)> on a backbone phi with `features(x)` and `feature_dim`.

    `forward(x, c)` -> logits (B,); `features(x)` -> phi(x) (B, feature_dim).
    """

    def __init__(self, backbone: nn.Module, n_classes: int | None = None, instance_dim: int | None = None):
        super().__init__()
        has_features = callable(getattr(backbone, "features", None))
        if not (has_features and isinstance(getattr(backbone, "feature_dim", None), int)):
            raise TypeError(f"the backbone must have features(x) and an int feature_dim, got {type(backbone).__name__}")
        if getattr(backbone, "linear", None) is not None:
            raise ValueError("build the backbone with linear_head=False: psi is the projection D's own")
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.psi = nn.Linear(self.feature_dim, 1)
        # bias-free: a bias b in embed would only add <b, phi(x)>, which psi already has
        self.embed = ConditionEmbedding(self.feature_dim, n_classes, instance_dim, bias=False)
        _normal_init(self.psi)
        nn.init.normal_(self.embed.embed.weight, 0.0, 0.02)
        _sn(self.psi)
        _sn(self.embed.embed)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone.features(x)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        phi = self.features(x)
        assert c.shape[0] == phi.shape[0], f"need one condition per image, got {c.shape[0]} for {phi.shape[0]}"
        return self.psi(phi).squeeze(1) + (self.embed(c).to(phi.dtype) * phi).sum(dim=1)


def projection_discriminator(arch: Literal["sndcgan", "snresnet18"] = "sndcgan", width: float = 1.0,
                             n_classes: int | None = None, instance_dim: int | None = None, img_channels: int = 3,
                             resolution: int = 32) -> ProjectionDiscriminator:
    """A projection D on the SNDCGAN D (flattened 8*ndf x r/8 x r/8 map) or SNResNet-18 (pooled 512 * width)."""
    if arch == "sndcgan":
        backbone = SNDCGANDiscriminator(width=width, img_channels=img_channels, resolution=resolution,
                                        linear_head=False)
    elif arch == "snresnet18":
        backbone = SNResNetDiscriminator(width=width, img_channels=img_channels, linear_head=False)
    else:
        raise ValueError(f"arch must be 'sndcgan' or 'snresnet18', got {arch!r}")
    return ProjectionDiscriminator(backbone, n_classes=n_classes, instance_dim=instance_dim)


def conditional_gan(arch: Literal["sndcgan", "snresnet18"] = "sndcgan", width: float = 1.0, z_dim: int = 128,
                    n_classes: int | None = None, instance_dim: int | None = None, embed_dim: int = 128,
                    img_channels: int = 3, resolution: int = 32
                    ) -> tuple[ConditionalGenerator, ProjectionDiscriminator]:
    """A matched conditional pair: `ConditionalGenerator` and a projection D, both at `width`."""
    G = ConditionalGenerator(z_dim=z_dim, n_classes=n_classes, instance_dim=instance_dim, embed_dim=embed_dim,
                             width=width, img_channels=img_channels, resolution=resolution)
    D = projection_discriminator(arch, width, n_classes, instance_dim, img_channels, resolution)
    return G, D
