"""What every trainer shares: the loader protocol and the error a diverged run stops with."""
from __future__ import annotations

from typing import Iterable, Protocol

import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops rather than train on garbage."""


class EpochLoader(Protocol):
    """What the trainer needs of a loader: a deterministic order per epoch, and batches.

    A batch is ``(x, y, index)``: images, labels (or any per-sample tag) and each sample's
    row in the dataset, which a view source may use to look up precomputed views. Under
    torchrun every rank holds the same loader and the trainers keep each rank's share of
    every batch (:class:`shared.distributed.ShardedLoader`): the order must depend only on
    the loader's seed and the epoch.
    """
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
