"""VICReg (Bardes, Ponce, LeCun 2022): an expander h and the variance-invariance-covariance loss.

The expander is :func:`shared.models.vicreg_expander` (the official ``Projector``, its ``--mlp``
argument); the loss is :func:`shared.losses.vicreg` with the official coefficient names. Each
view goes through the network on its own, as in the official ``VICReg.forward``.

N views: the mean of the two-view loss (and of each logged part) over the N(N-1)/2 pairs of
views; with 2 views it is the official loss itself.

Under torchrun the expander outputs are gathered over the ranks (:func:`shared.distributed.gather`,
the official ``FullGatherLayer``: all_gather forward, all-reduce of the gradients backward) before
the loss, so the variance and covariance terms see the global batch. The official code takes the
invariance term on each rank's own rows before gathering; over the gathered rows it is the same
mean squared error (the ranks' shares are equal) and the same gradient.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn

from shared import distributed
from shared.losses import vicreg
from shared.methods.base import Logs, SSLMethod, check_views, feature_dim as _feature_dim
from shared.models.heads import vicreg_expander


class VICReg(SSLMethod):
    """Encoder f, expander h, loss l(h(f(v_1)), h(f(v_2))).

    Args:
        encoder: the backbone f, already built.
        mlp: expander widths, ``"8192-8192-8192"`` as in the paper (the official ``--mlp``).
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu of the loss (25, 25, 1).
        feature_dim: the encoder's output width; None reads ``encoder.feature_dim``.
    """

    def __init__(self, encoder: nn.Module, mlp: str | Sequence[int] = "8192-8192-8192", sim_coeff: float = 25.0,
                 std_coeff: float = 25.0, cov_coeff: float = 1.0, feature_dim: int | None = None):
        super().__init__(encoder)
        self.projector = vicreg_expander(feature_dim or _feature_dim(encoder), mlp)
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        check_views(views, "VICReg")
        z = [distributed.gather(self.projector(self.encoder(v)).float()) for v in views]  # the global batch
        losses, parts = [], []
        for a, b in itertools.combinations(z, 2):
            loss, part = vicreg(a, b, self.sim_coeff, self.std_coeff, self.cov_coeff, return_parts=True)
            losses.append(loss)
            parts.append(part)
        if len(losses) == 1:
            return losses[0], {k: v.detach() for k, v in parts[0].items()}
        logs = {k: torch.stack([p[k] for p in parts]).mean().detach() for k in parts[0]}
        return torch.stack(losses).mean(), logs
