"""The G and D of a (architecture, method) run: SNDCGAN G, and D with ContraD's heads where the method needs them.

Used by the train stage to build the pair and by the evaluate stage to rebuild D from its checkpoint.
"""
from __future__ import annotations

from torch import nn

from papers.contrad.config import TrainStageConfig
from papers.contrad.method import ContraDDiscriminator
from shared.models.sngan import sngan

CONTRASTIVE = ("contrad", "simclr")  # methods whose D carries ContraD's three heads


def build_models(architecture: str, method: str, cfg: TrainStageConfig) -> tuple[nn.Module, nn.Module]:
    """G (SNDCGAN) and D (`architecture`); the contrastive methods wrap D with ContraD's heads."""
    arch = cfg.architectures[architecture]
    contrastive = method in CONTRASTIVE
    G, D = sngan(architecture, width=arch.width, z_dim=arch.z_dim, linear_head=not contrastive)
    if contrastive:  # the official SNDCGAN heads start at N(0, 0.02); SNResNet-18's keep PyTorch's init
        D = ContraDDiscriminator(D, score_hidden=arch.score_hidden,
                                 init_std=0.02 if architecture == "sndcgan" else None)
    return G, D
