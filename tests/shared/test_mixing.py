"""shared.mixing.MixedLoader: batch composition over an epoch, checked on the batches it yields.

Every image carries its own id in its pixels (two uint8 channels, id = 256 * c0 + c1; reals are
0 .. Nr-1, fakes Nr .. Nr+Nf-1), so the tests read what a trainer would receive. Statistical
bounds are 5 standard deviations wide: a correct loader fails one about once in 10^6 seeds.
"""
import math

import pytest
import torch

from shared.data import DeviceLoader
from shared.mixing import MixedLoader

Z = 5.0  # bound width in standard deviations


def _images(start: int, n: int) -> torch.Tensor:
    ids = torch.arange(start, start + n)
    return torch.stack([ids // 256, ids % 256], 1).to(torch.uint8).view(n, 2, 1, 1)


def _data(nr: int, nf: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _images(0, nr), _images(nr, nf)


def _epoch(loader: MixedLoader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The ids and the sources of each batch of the loader's current epoch."""
    ids, sources = [], []
    for x, s, _ in loader:
        ids.append(x[:, 0, 0, 0].long() * 256 + x[:, 1, 0, 0].long())
        sources.append(s)
    return ids, sources


def _flat(batches: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(batches)


@pytest.mark.parametrize("sampler", ["balanced", "uniform"])
@pytest.mark.parametrize("nr, nf", [(130, 45), (40, 90), (64, 64)])
def test_each_image_once_per_epoch_and_sources_match(sampler, nr, nf):
    real, fake = _data(nr, nf)
    loader = MixedLoader(real, fake, batch_size=16, sampler=sampler, seed=1, drop_last=False)
    for epoch in range(3):
        loader.set_epoch(epoch)
        ids, sources = _epoch(loader)
        ids, sources = _flat(ids), _flat(sources)
        assert sorted(ids.tolist()) == list(range(nr + nf))
        assert torch.equal(sources, (ids >= nr).long())  # source 1 exactly on the fake images
    # drop_last drops only the short tail, the rest is still each image at most once
    dropped = MixedLoader(real, fake, batch_size=16, sampler=sampler, seed=1, drop_last=True)
    ids = _flat(_epoch(dropped)[0])
    assert len(ids) == (nr + nf) // 16 * 16 and len(set(ids.tolist())) == len(ids)


@pytest.mark.parametrize("nr, nf", [(1000, 300), (300, 1000)])
def test_balanced_half_fake_until_the_smaller_set_runs_out_then_pure(nr, nf):
    bs, small = 20, min(nr, nf)
    larger = 0 if nr > nf else 1
    loader = MixedLoader(*_data(nr, nf), batch_size=bs, sampler="balanced", seed=7, drop_last=False)
    mixed_counts, runout = [], []
    for epoch in range(10):
        loader.set_epoch(epoch)
        _, sources = _epoch(loader)
        flat = _flat(sources)
        # the smaller set runs out at the slot after its last image
        t = int(torch.nonzero(flat != larger).max()) + 1
        runout.append(t)
        for b, s in enumerate(sources):
            if (b + 1) * bs <= t:
                mixed_counts.append(int(s.sum()))  # fakes in a batch drawn wholly before t
            elif b * bs >= t:
                assert (s == larger).all(), f"batch {b} after slot {t} is not pure"
    counts = torch.tensor(mixed_counts, dtype=torch.float64)
    slots = bs * len(counts)
    # every slot before t is a fair coin: fake fraction 0.5 +- Z * sqrt(0.25 / slots) ...
    assert abs(counts.sum().item() / slots - 0.5) < Z * math.sqrt(0.25 / slots)
    # ... and each batch's count is Binomial(20, 1/2) (variance 5), not a fixed half-and-half
    sd_of_var = 5 * math.sqrt(2 / (len(counts) - 1))
    assert abs(counts.var().item() - 5) < Z * sd_of_var
    # negative binomial: the run-out slot has mean 2S and standard deviation sqrt(2S)
    for t in runout:
        assert abs(t - 2 * small) < Z * math.sqrt(2 * small)
    mean_t = sum(runout) / len(runout)
    assert abs(mean_t - 2 * small) < Z * math.sqrt(2 * small / len(runout))


def test_uniform_keeps_the_fake_fraction_throughout_unlike_balanced():
    nr, nf, bs = 1000, 300, 25
    p = nf / (nr + nf)
    halves = {}
    for sampler in ("uniform", "balanced"):
        loader = MixedLoader(*_data(nr, nf), batch_size=bs, sampler=sampler, seed=3, drop_last=True)
        first, second, per_batch = [], [], []
        for epoch in range(8):
            loader.set_epoch(epoch)
            flat = _flat(_epoch(loader)[1]).double()
            half = len(flat) // 2
            first.append(flat[:half].mean().item())
            second.append(flat[half:].mean().item())
            per_batch += flat.view(-1, bs).mean(1).tolist()
        halves[sampler] = (sum(first) / 8, sum(second) / 8, per_batch)
    first, second, per_batch = halves["uniform"]
    n_half = 8 * (1300 // bs * bs // 2)
    tol = Z * math.sqrt(p * (1 - p) / n_half)  # hypergeometric sd is below the binomial one
    assert abs(first - p) < tol and abs(second - p) < tol
    # every batch: a hypergeometric draw of 25 from the union (sd 0.083), none far from p
    assert max(abs(f - p) for f in per_batch) < Z * math.sqrt(p * (1 - p) / bs)
    b_first, b_second, _ = halves["balanced"]
    # balanced spends the 300 fakes in about the first 600 slots: the halves differ sharply
    assert b_first > 0.4 and b_second < 0.05


@pytest.mark.parametrize("sampler", ["balanced", "uniform"])
def test_order_is_a_function_of_seed_and_epoch(sampler):
    real, fake = _data(50, 30)

    def order(seed, epoch):
        loader = MixedLoader(real, fake, batch_size=8, sampler=sampler, seed=seed)
        loader.set_epoch(epoch)
        return _flat(_epoch(loader)[0]).tolist()

    loader = MixedLoader(real, fake, batch_size=8, sampler=sampler, seed=0)
    loader.set_epoch(2)
    first = _flat(_epoch(loader)[0]).tolist()
    assert _flat(_epoch(loader)[0]).tolist() == first  # iterating again does not advance the epoch
    assert order(0, 2) == first  # a resumed run at epoch 2 sees the same batches
    assert order(0, 3) != first and order(5, 2) != first


@pytest.mark.parametrize("sampler", ["balanced", "uniform"])
@pytest.mark.parametrize("fake", ["none", "empty"])
def test_without_fakes_the_baseline_is_device_loader(sampler, fake):
    real = _images(0, 70)
    fakes = None if fake == "none" else real[:0]
    loader = MixedLoader(real, fakes, batch_size=16, sampler=sampler, seed=4, drop_last=True)
    reference = DeviceLoader(real, torch.zeros(70, dtype=torch.int64), batch_size=16, seed=4,
                             drop_last=True)
    for epoch in (0, 5):
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        ours = list(loader)
        theirs = list(reference)
        assert len(ours) == len(theirs) == 4
        for (x, s, _), (x_ref, _, _) in zip(ours, theirs):
            assert torch.equal(x, x_ref) and torch.equal(s, torch.zeros(16, dtype=torch.int64))


def test_len_dtype_device_and_shapes():
    real, fake = _data(1000, 300)
    assert len(MixedLoader(real, fake, 128, "balanced", drop_last=True)) == 10
    assert len(MixedLoader(real, fake, 128, "uniform", drop_last=False)) == 11
    assert len(MixedLoader(real, None, 128, "balanced", drop_last=False)) == 8
    loader = MixedLoader(real, fake, 128, "balanced", drop_last=False)
    batches = list(loader)
    assert len(batches) == len(loader) and len(batches[-1][0]) == 1300 - 10 * 128
    for x, s, _ in batches:
        assert x.dtype == torch.uint8 and s.dtype == torch.int64
        assert x.shape[1:] == (2, 1, 1) and s.shape == (len(x),)
        assert x.device == s.device == torch.device("cpu")


def test_rejects_bad_inputs():
    real, fake = _data(10, 5)
    with pytest.raises(ValueError, match="sampler"):
        MixedLoader(real, fake, 4, "interleaved")
    with pytest.raises(ValueError, match="fake images are"):
        MixedLoader(real, torch.zeros(5, 3, 1, 1, dtype=torch.uint8), 4, "balanced")
    with pytest.raises(ValueError, match="fake must be uint8"):
        MixedLoader(real, fake.float(), 4, "balanced")
    with pytest.raises(ValueError, match="real holds no images"):
        MixedLoader(real[:0], fake, 4, "uniform")
    with pytest.raises(ValueError, match="batch_size"):
        MixedLoader(real, fake, 0, "uniform")
