"""The view-source protocol: what the SSL trainer calls, ``views(x, index) -> list[Tensor]``, and the
checks every source shares on its inputs."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ViewSource(Protocol):
    """What the SSL trainer calls on every batch: ``views(x, index) -> list[Tensor]``.

    Contract:
    - ``x``: uint8 images ``(N, C, H, W)`` in [0, 255] on the training device (float
      images in [0, 1] are accepted too, for sources composed on already-converted batches).
    - ``index``: int64 ``(N,)`` dataset row of each image, on the same device; sources that
      do not look anything up ignore it.
    - returns a list of views, each a floating ``(N, C', H', W')`` tensor in [0, 1] on
      ``x``'s device (float32 from uint8 input; a float input keeps its dtype), row i of
      every view made from row i of ``x``: the models' input convention of `shared.views`.
    - randomness: every draw comes from ``generator`` when one is given (on ``x``'s device),
      otherwise from torch's global RNG, so the caller seeds a run (``torch.manual_seed``)
      and a seeded generator makes the views reproducible.
    - differentiable in ``x`` wherever the underlying ops are (all of `shared.views`).
    """

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]: ...


@runtime_checkable
class GeneratedSource(Protocol):
    """A source of one generated image per input row: ``generated(x, index) -> (N, C, H, W)`` float in [0, 1].

    Same conventions as `ViewSource` (device, RNG); `GammaMix` calls it on the selected rows only.
    """

    def generated(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


def as_float_images(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images are returned unchanged. Asserts (N, C, H, W)."""
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    return x


def check_index(x: Tensor, index: Tensor) -> None:
    """Raise unless `index` is int64 ``(N,)`` on `x`'s device, one dataset row per image of `x`."""
    if index.dim() != 1 or index.shape[0] != x.shape[0] or index.dtype != torch.int64:
        raise ValueError(f"index must be int64 of shape ({x.shape[0]},) matching the batch, "
                         f"got {index.dtype} of shape {tuple(index.shape)}")
    if index.device != x.device:
        raise ValueError(f"index is on {index.device} but the images are on {x.device}")
