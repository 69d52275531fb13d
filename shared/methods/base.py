"""What every SSL method is: an ``nn.Module`` owning its encoder, heads and any momentum state.

The trainer (:func:`shared.trainers.ssl.train_ssl`) needs four things of a method:

- ``method.encoder``: the backbone, handed to the evaluation (linear probe, kNN);
- ``method(views) -> (loss, logs)``: the loss over N >= 2 views of one batch, each (B, C, H, W)
  and row b of every view the same image; ``logs`` maps names to detached scalars (0-d tensors,
  not floats, so that no step waits for the device; the trainer reads them when it logs);
- ``method.trainable_parameters()``: what the optimiser updates, in a fixed order (momentum
  targets and key encoders excluded; their ``requires_grad`` is False);
- ``method.after_step(step, total_steps)``: run after each optimiser step with the 0-based index
  of that step (the EMA / momentum update); a no-op for methods without such state.

Every piece of state (target network, queue, queue pointer) is a submodule or a buffer, so
``method.state_dict()`` is all a checkpoint needs to resume the method exactly.
"""
from __future__ import annotations

import copy
import itertools
from typing import Callable

import torch
from torch import nn

Logs = dict[str, torch.Tensor]


class SSLMethod(nn.Module):
    """Base class: holds ``encoder``; subclasses add heads and define ``forward``."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        # Registered first, so parameters() lists the encoder before the heads (optimiser order).
        self.encoder = encoder

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates, encoder first, in registration order."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_step(self, step: int, total_steps: int) -> None:
        """Update the state that follows the optimiser step (nothing for this method)."""


def feature_dim(encoder: nn.Module) -> int:
    """The encoder's output width, read from its ``feature_dim`` attribute (as the suite's ResNets set it)."""
    dim = getattr(encoder, "feature_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"the encoder ({type(encoder).__name__}) has no positive int attribute "
                         f"'feature_dim'; pass feature_dim= to the method")
    return dim


def check_views(views: list[torch.Tensor], name: str) -> None:
    assert isinstance(views, (list, tuple)) and len(views) >= 2, \
        f"{name}: needs a list of at least 2 views, got {type(views).__name__} of length {len(views)}"
    shapes = {tuple(v.shape) for v in views}
    assert len(shapes) == 1, f"{name}: views must share one shape, got {sorted(shapes)}"


def mean_over_pairs(views: list, loss: Callable[[object, object], torch.Tensor]) -> torch.Tensor:
    """The mean of ``loss(a, b)`` over the N(N-1)/2 unordered pairs of views, a before b.

    The suite's N-view generalisation of the two-view losses: with 2 views it is the one
    term ``loss(views[0], views[1])``, the official form.
    """
    terms = [loss(a, b) for a, b in itertools.combinations(views, 2)]
    return terms[0] if len(terms) == 1 else torch.stack(terms).mean()


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to be moved by :func:`momentum_update` (a target / key encoder)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, parameters only.

    Buffers (batch-norm running statistics) are not averaged: as in the MoCo and BYOL code,
    the target keeps the statistics of its own forward passes (in training mode the forward
    normalises with batch statistics, so they only matter for a target put in eval mode).
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(m).add_(o.detach(), alpha=1 - m)
