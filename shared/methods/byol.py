"""BYOL (Grill et al. 2020): online projector + predictor, an EMA target, and no negatives.

Online network: encoder f_theta, projector g_theta, predictor q_theta; target network:
f_xi, g_xi, a copy of the online encoder and projector made at construction and then moved by
an exponential moving average after every optimiser step (:meth:`BYOL.after_step`):

    xi <- tau_k xi + (1 - tau_k) theta,   tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2

for step k = 0 .. K-1 of K (tau_base = 0.996), the official ``target_ema`` schedule. The
target runs under ``torch.no_grad`` (the stop-gradient) in training mode, so it normalises
with batch statistics as in the official code; only its parameters are averaged.

Loss (two views): byol_loss(q(g(f(v_1))), g_xi(f_xi(v_2))) + byol_loss(q(g(f(v_2))), g_xi(f_xi(v_1))),
each 2 - 2 cos averaged over the batch, summed over the two directions as the official code does.
N views: the mean of that symmetric two-view loss over the N(N-1)/2 pairs of views.

Heads: both MLPs are ``Linear(4096) - BN - ReLU - Linear(256)`` (Sec. 3.3), built with
:func:`shared.models.mlp_head`.

Under torchrun nothing is gathered: the loss is a mean of per-sample terms, so the ranks' means,
averaged by DistributedDataParallel, give the global batch's gradient. What the official code makes
global is batch norm (cross-replica statistics): ``sync_batchnorm: true`` in the trainer's config. The
target network is updated alike on every rank from the same online weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from shared.losses import byol_loss
from shared.methods.base import (Logs, SSLMethod, check_views, feature_dim as _feature_dim, mean_over_pairs,
                                 momentum_copy, momentum_update)
from shared.models.heads import mlp_head


def target_ema(step: int, total_steps: int, base_target_ema: float = 0.996) -> float:
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2: tau_base at k = 0, rising to 1 at k = K."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"need 0 <= step <= total_steps and total_steps >= 1, got {step}, {total_steps}")
    return 1 - (1 - base_target_ema) * (math.cos(math.pi * step / total_steps) + 1) / 2


class BYOL(SSLMethod):
    """Online f, g, q trained to predict the EMA target's projection of the other view.

    Args:
        encoder: the online backbone f_theta, already built; the target copies it.
        projector_hidden_size, projector_output_size: g's widths (4096, 256).
        predictor_hidden_size: q's hidden width (4096); its output is the projection width.
        base_target_ema: tau_base (0.996).
        feature_dim: the encoder's output width; None reads ``encoder.feature_dim``.
    """

    def __init__(self, encoder: nn.Module, projector_hidden_size: int = 4096, projector_output_size: int = 256,
                 predictor_hidden_size: int = 4096, base_target_ema: float = 0.996,
                 feature_dim: int | None = None):
        super().__init__(encoder)
        if not 0 <= base_target_ema <= 1:
            raise ValueError(f"base_target_ema must lie in [0, 1], got {base_target_ema}")
        d = feature_dim or _feature_dim(encoder)
        self.projector = mlp_head(d, [projector_hidden_size], projector_output_size, batch_norm=True)
        self.predictor = mlp_head(projector_output_size, [predictor_hidden_size], projector_output_size,
                                  batch_norm=True)
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        self.base_target_ema = base_target_ema

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        check_views(views, "BYOL")
        online = [self.predictor(self.projector(self.encoder(v))).float() for v in views]
        with torch.no_grad():
            target = [self.target_projector(self.target_encoder(v)).float() for v in views]
        pairs = list(zip(online, target))
        loss = mean_over_pairs(pairs, lambda a, b: byol_loss(a[0], b[1]) + byol_loss(b[0], a[1]))
        return loss, {}

    def after_step(self, step: int, total_steps: int) -> None:
        """EMA of the target with tau at the 0-based index ``step`` of the step just taken."""
        tau = target_ema(step, total_steps, self.base_target_ema)
        momentum_update(self.target_encoder, self.encoder, tau)
        momentum_update(self.target_projector, self.projector, tau)
