"""Where a conditional GAN's conditions come from: the `ConditionProvider` protocol the GAN trainer
(`shared.trainers.gan`) calls, and two providers, class labels (`ClassConditions`) and IC-GAN's
instance features with their k-nearest-neighbour neighbourhoods (`InstanceConditions`,
`knn_neighbourhoods`)."""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class ConditionedBatch(NamedTuple):
    real: Tensor  # uint8 (B, C, H, W): the images D sees as real
    c_real: Tensor  # (B,) or (B, d): their conditions
    c_fake: Tensor  # (B,) or (B, d): the conditions of the B fakes G makes for this batch


class ConditionProvider(Protocol):
    """Where a conditional GAN's conditions come from.

    sample(batch, device): from one loader batch ((x, y) or (x, y, index), uint8 x), the
        reals D sees, their conditions and the fakes' conditions. Random choices use the
        global RNGs (the trainer checkpoints them), so a resumed run draws the same.
    fixed(n, seed, device): `n` conditions for sample grids and evaluation, a function of
        `seed` alone; must not touch the global RNGs.
    """
    def sample(self, batch: Sequence[Tensor], device: torch.device) -> ConditionedBatch: ...
    def fixed(self, n: int, seed: int, device: torch.device) -> Tensor: ...


def _batch_part(batch: Sequence[Tensor], i: int, what: str) -> Tensor:
    if len(batch) <= i:
        raise ValueError(f"the condition needs the batch's {what} (element {i}); the loader yields "
                         f"{len(batch)}-tuples, need (x, y, index)")
    return batch[i]


class ClassConditions:
    """Class-conditional GAN: c = the real batch's labels `batch[1]`, for D's reals and G's fakes.

    `fixed(n, seed)` cycles through the classes, 0, 1, ..., n_classes - 1, 0, ... (balanced
    grids and evaluation sets; the seed is not needed).
    """

    def __init__(self, n_classes: int):
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes

    def sample(self, batch: Sequence[Tensor], device: torch.device) -> ConditionedBatch:
        y = _batch_part(batch, 1, "labels").to(device)
        if y.ndim != 1 or y.dtype != torch.long:
            raise ValueError(f"labels must be int64 (B,), got {y.dtype} {tuple(y.shape)}")
        return ConditionedBatch(batch[0], y, y)

    def fixed(self, n: int, seed: int, device: torch.device) -> Tensor:
        return torch.arange(n, device=device) % self.n_classes


@torch.no_grad()
def knn_neighbourhoods(features: Tensor, k: int, chunk_size: int = 1024, include_self: bool = False) -> Tensor:
    """The `k` nearest neighbours of every row of `features` (N, d) by cosine similarity: (N, k) int64.

    Row i lists its neighbours from the most to the least similar. Similarities are
    computed `chunk_size` rows at a time against all N rows (memory chunk_size x N).
    Without `include_self` row i itself is left out (IC-GAN searches k + 1 and drops the
    sample: data_utils/datasets_common.py `_obtain_nns`); a duplicate of i still counts.
    Ties are broken as `torch.topk` breaks them.
    """
    n = features.shape[0]
    if features.ndim != 2 or not 1 <= k <= n - (0 if include_self else 1):
        raise ValueError(f"need (N, d) features and 1 <= k <= N{'' if include_self else ' - 1'}, "
                         f"got {tuple(features.shape)} and k={k}")
    unit = F.normalize(features.float(), dim=1)
    out = []
    for start in range(0, n, chunk_size):
        sim = unit[start:start + chunk_size] @ unit.T  # (chunk, N) cosine similarities
        if not include_self:
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + start] = -math.inf
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


class InstanceConditions:
    """IC-GAN's instance conditioning (Casanova et al. 2021).

    For each instance i of the batch (the loader's `batch[2]`, row indices into `images`
    and `features`): c = h_i, the L2-normalised feature of i; D's real is image j with j
    drawn uniformly from i's k nearest neighbours by cosine similarity; G's fake is
    G(z, h_i). The instance's own image (`batch[0]`) is not shown to D (IC-GAN excludes
    it from the neighbourhood, as `knn_neighbourhoods` does by default).

    Args:
        images: uint8 (N, C, H, W), the dataset the loader indexes (its rows, not a subset's).
        features: (N, d) features of the same rows from a frozen encoder, computed once.
        k: neighbourhood size (IC-GAN: 50).
        chunk_size: rows per similarity chunk when computing the neighbourhoods.
        neighbours: precomputed (N, k) neighbourhoods (e.g. stored by a DVC stage); None
            computes them with `knn_neighbourhoods`.
        device: where the images, features and neighbourhoods are kept (the loader's device).
    """

    def __init__(self, images: Tensor, features: Tensor, k: int = 50, chunk_size: int = 1024,
                 neighbours: Tensor | None = None, device: str | torch.device = "cpu"):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise ValueError(f"need one feature row per image, got {tuple(features.shape)} "
                             f"for {images.shape[0]} images")
        self.images = images.to(device)
        self.features = F.normalize(features.float(), dim=1).to(device)
        if neighbours is None:
            neighbours = knn_neighbourhoods(self.features, k, chunk_size)
        if neighbours.shape != (images.shape[0], k):
            raise ValueError(f"neighbours must be (N, k) = {(images.shape[0], k)}, got {tuple(neighbours.shape)}")
        self.neighbours = neighbours.to(device=device, dtype=torch.long)
        self.k = k

    def sample(self, batch: Sequence[Tensor], device: torch.device) -> ConditionedBatch:
        index = _batch_part(batch, 2, "instance indices").to(self.neighbours.device)
        pick = torch.randint(self.k, (index.shape[0],), device=self.neighbours.device)
        real = self.images[self.neighbours[index, pick]]
        h = self.features[index]
        return ConditionedBatch(real.to(device), h.to(device), h.to(device))

    def fixed(self, n: int, seed: int, device: torch.device) -> Tensor:
        """n instances' features drawn with a CPU generator seeded by `seed` (without replacement while n <= N)."""
        g = torch.Generator().manual_seed(seed)
        N = self.features.shape[0]
        idx = torch.randperm(N, generator=g)[:n] if n <= N else torch.randint(N, (n,), generator=g)
        return self.features[idx.to(self.features.device)].to(device)
