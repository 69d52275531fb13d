"""The G and D of an (architecture, method) run, and D with ContraD's heads where the method needs them.

SNDCGAN / SNResNet-18 D: SNDCGAN's G (Table 1's first two blocks). StyleGAN2 D: StyleGAN2's G (its third block),
the shared `shared.models.stylegan2` at the architecture's `preset`. Used by the train stage to build the pair and
by the evaluate stage to rebuild D from its checkpoint.
"""
from __future__ import annotations

from torch import nn

from papers.contrad.config import TrainStageConfig
from papers.contrad.method import ContraDDiscriminator
from shared.models.sngan import sngan
from shared.models.stylegan2 import stylegan2_cifar

CONTRASTIVE = ("contrad", "simclr")  # methods whose D carries ContraD's three heads


def build_models(architecture: str, method: str, cfg: TrainStageConfig) -> tuple[nn.Module, nn.Module]:
    """G and D for `architecture`; the contrastive methods wrap D's trunk with ContraD's heads.

    StyleGAN2 as the official `stylegan2` architecture: with ContraD's heads D is the trunk up to the last conv
    (the heads read its flattened 4x4 output), the heads have no spectral norm and PyTorch's init; the other
    methods keep StyleGAN2's own FC and output layers.
    """
    arch = cfg.architectures[architecture]
    contrastive = method in CONTRASTIVE
    if architecture == "stylegan2":
        if arch.preset is None:
            raise ValueError("train.architectures.stylegan2.preset must name a shared StyleGAN2 preset")
        G, D = stylegan2_cifar(arch.preset, d_head=not contrastive, z_dim=arch.z_dim)
        if contrastive:
            D = ContraDDiscriminator(D, score_hidden=arch.score_hidden, spectral_norm=False)
        return G, D
    G, D = sngan(architecture, width=arch.width, z_dim=arch.z_dim, linear_head=not contrastive)
    if contrastive:  # the official SNDCGAN heads start at N(0, 0.02); SNResNet-18's keep PyTorch's init
        D = ContraDDiscriminator(D, score_hidden=arch.score_hidden,
                                 init_std=0.02 if architecture == "sndcgan" else None)
    return G, D
