"""Real + fake (generated) images as one pre-training data source, batched on the device.

:class:`MixedLoader` has :class:`shared.data.DeviceLoader`'s interface (``set_epoch``, ``__len__``,
iteration) and yields ``(x_uint8, source, index)``: ``source`` int64, 0 = real and 1 = fake, where
DeviceLoader has the label, so the SSL trainer runs on it unchanged and a stage can count what it
saw; ``index`` int64, each image's row in the pool of real then fake images (``MixedLoader.x``:
rows below ``n_real`` are real), so a view source can look up per-image precomputed views.

Two samplers:

``"balanced"``, the paper's (Halpin-Gregorio, Sec. 4): each slot of the epoch takes a real or a
fake image with probability 1/2, without replacement within each source, until the smaller
source is used up; the rest of the epoch comes from the larger source alone, so with unequal
sizes the last batches are all real (or all fake). The smaller source runs out near slot
2 * min(Nr, Nf) (negative binomial: mean 2S, variance 2S for S = min(Nr, Nf)).

``"uniform"``: a permutation of real + fake, so every batch is a uniform draw without replacement
from the union and holds about Nf / (Nr + Nf) fakes from the first batch to the last.

Both show every image exactly once per epoch (less the tail that ``drop_last`` drops). Without
fakes both reduce to DeviceLoader's shuffle: the same batches for the same seed and epoch.

The order of epoch ``e`` comes from a CPU ``torch.Generator`` seeded with ``seed + e``, as in
DeviceLoader (so the order does not depend on the device, a resumed run sees the same batches,
and, as there, (seed, e) and (seed + 1, e - 1) share an order). It is built with whole-epoch
tensor ops, never a Python loop over images, and batches are gathered with ``index_select``.
"""
from __future__ import annotations

import math

import torch

SAMPLERS = ("balanced", "uniform")
REAL, FAKE = 0, 1


def balanced_sources(n_real: int, n_fake: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's slot sequence: int64 (n_real + n_fake,) of 0 (real) / 1 (fake).

    Fair coin flips until one source's running count reaches its size, then the other source
    for every remaining slot; each source therefore appears exactly as often as it has images.
    """
    n = n_real + n_fake
    flips = (torch.rand(n, generator=generator) < 0.5).long()
    n_fake_so_far = flips.cumsum(0)
    n_real_so_far = torch.arange(1, n + 1) - n_fake_so_far
    # n flips always use one source up: the two counts sum to n = n_real + n_fake
    used_up = (n_real_so_far >= n_real) | (n_fake_so_far >= n_fake)
    t = int(used_up.long().argmax())  # first slot at which a source is used up
    rest = FAKE if int(n_real_so_far[t]) >= n_real else REAL
    flips[t + 1:] = rest
    return flips


class MixedLoader:
    """Real and fake uint8 images on ``device``, served in batches of ``(x, source, index)``.

    ``index`` is the row of ``self.x``, the real images followed by the fake ones.

    Args:
        real: uint8 (Nr, C, H, W), Nr >= 1.
        fake: uint8 (Nf, C, H, W) with real's C, H, W; None or empty for the real-only baseline.
        batch_size: images per batch.
        sampler: "balanced" (the paper's, see the module docstring) or "uniform".
        seed: epoch e is ordered by a generator seeded with seed + e.
        drop_last: drop the last, smaller batch (as SimCLR pre-training does).
        device: where the images live and the batches are gathered.
    """

    def __init__(self, real: torch.Tensor, fake: torch.Tensor | None, batch_size: int,
                 sampler: str, seed: int = 0, drop_last: bool = True,
                 device: str | torch.device = "cpu"):
        real = torch.as_tensor(real)
        fake = real[:0] if fake is None else torch.as_tensor(fake)
        for name, t in (("real", real), ("fake", fake)):
            if t.dtype != torch.uint8 or t.ndim != 4:
                raise ValueError(f"{name} must be uint8 (N, C, H, W), got {t.dtype} {tuple(t.shape)}")
        if len(real) == 0:
            raise ValueError("real holds no images")
        if len(fake) and fake.shape[1:] != real.shape[1:]:
            raise ValueError(f"fake images are {tuple(fake.shape[1:])}, real ones {tuple(real.shape[1:])}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n_real, self.n_fake = len(real), len(fake)
        # one pool: rows [0, Nr) real, [Nr, Nr + Nf) fake; a batch is one gather from it
        self.x = torch.cat([real, fake]).to(device)
        self.batch_size, self.sampler, self.seed, self.drop_last = batch_size, sampler, seed, drop_last
        self.device, self.epoch = self.x.device, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.n_real + self.n_fake
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current epoch's full sequence on the CPU: (row of ``self.x``, source), both int64.

        Rows below ``n_real`` are real images, the others fake; nothing is dropped here.
        """
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        nr, nf = self.n_real, self.n_fake
        if nf == 0 or self.sampler == "uniform":
            # with no fakes, the same call as DeviceLoader: the baseline sees DeviceLoader's batches
            rows = torch.randperm(nr + nf, generator=g)
            return rows, (rows >= nr).long()
        source = balanced_sources(nr, nf, g)
        perm_real = torch.randperm(nr, generator=g)
        perm_fake = torch.randperm(nf, generator=g) + nr
        # the k-th real slot takes perm_real[k], the k-th fake slot perm_fake[k]; clamp because
        # torch.where evaluates both branches, where the other source's rank may be -1
        fakes_so_far = source.cumsum(0)
        rank_fake = fakes_so_far - 1
        rank_real = torch.arange(nr + nf) - fakes_so_far  # reals so far, minus one
        rows = torch.where(source == FAKE, perm_fake[rank_fake.clamp(0, nf - 1)],
                           perm_real[rank_real.clamp(0, nr - 1)])
        return rows, source

    def __iter__(self):
        rows, source = self.epoch_order()
        rows, source = rows.to(self.device), source.to(self.device)
        b = self.batch_size
        for i in range(len(self)):
            index = rows[i * b:(i + 1) * b]
            yield self.x.index_select(0, index), source[i * b:(i + 1) * b], index
