"""SimCLR (Chen et al. 2020): a projector g and the NT-Xent loss over the views' projections.

The projector is :func:`shared.models.simclr_projector` (the unofficial PyTorch SimCLR's
``Linear - ReLU - Linear`` without biases, the head ``gan_simclr`` replicates). Each view
goes through the network on its own, as in that code, so batch-norm statistics are per view.

N views: the mean of the two-view NT-Xent over the N(N-1)/2 pairs of views; with 2 views it
is the official loss itself.

Under torchrun the projections are gathered over the ranks (:func:`shared.distributed.gather`,
gradient included) before the loss, so each anchor's negatives are the 2B - 2 other samples of
the global batch B, as in the official code (its ``tpu_cross_replica_concat``). Every rank computes
the loss over all 2B anchors, where the official code computes only its own anchors' rows against
the gathered keys: the same loss and gradient, for O(B^2) extra work that is small beside the network.
"""
from __future__ import annotations

import torch
from torch import nn

from shared import distributed
from shared.losses import nt_xent
from shared.methods.base import Logs, SSLMethod, check_views, feature_dim as _feature_dim, mean_over_pairs
from shared.models.heads import simclr_projector


class SimCLR(SSLMethod):
    """Encoder f, projector g, loss NT-Xent(g(f(v_1)), g(f(v_2))).

    Args:
        encoder: the backbone f, already built (it is not re-initialised here).
        projection_dim: output width of g (128 in the paper; 64 in the unofficial code and gan_simclr).
        hidden_dim: hidden width of g; None: the encoder's feature width (as both codes do).
        temperature: tau of NT-Xent (0.5 for CIFAR-10 in the paper and gan_simclr).
        feature_dim: the encoder's output width; None reads ``encoder.feature_dim``.
    """

    def __init__(self, encoder: nn.Module, projection_dim: int = 128, hidden_dim: int | None = None,
                 temperature: float = 0.5, feature_dim: int | None = None):
        super().__init__(encoder)
        d = feature_dim or _feature_dim(encoder)
        # Built here, after the caller built the encoder: the same RNG order as building both outside.
        self.projector = simclr_projector(d, hidden_dim or d, projection_dim)
        self.temperature = temperature

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        check_views(views, "SimCLR")
        z = [distributed.gather(self.projector(self.encoder(v)).float()) for v in views]  # the global batch
        return mean_over_pairs(z, lambda a, b: nt_xent(a, b, self.temperature)), {}
