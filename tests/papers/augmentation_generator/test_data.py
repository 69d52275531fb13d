"""augmentation_generator data: area resize, ink polarity, the drawer split, the dots, Splits on disk, the stage."""
import io
import json
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from scipy import ndimage, stats

from papers.augmentation_generator import data as ag_data
from papers.augmentation_generator import prepare
from papers.augmentation_generator.config import DataConfig, DotsConfig
from shared import data


def _strokes(n, size=105, seed=0):
    """uint8 (n, 1, size, size): a bright random polyline (ink 255) on 0, like an Omniglot character."""
    g = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        pts = g.integers(size // 6, size - size // 6, (4, 2))
        for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
            t = np.linspace(0, 1, 4 * size)
            r, c = np.round(r0 + t * (r1 - r0)).astype(int), np.round(c0 + t * (c1 - c0)).astype(int)
            for dr in (-1, 0, 1):
                x[i, 0, np.clip(r + dr, 0, size - 1), c] = 255
    return torch.from_numpy(x)


def _write_prepared(folder, characters: dict[str, int], drawers=20, seed=0):
    """A prepared Omniglot folder as `shared.data.prepare` writes it: <split>.npz with x, y, classes."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(characters.items()):
        x = _strokes(n * drawers, seed=seed + k).numpy()
        y = np.repeat(np.arange(n), drawers).astype(np.int64)
        np.savez(folder / f"{split}.npz", x=x, y=y, classes=np.array([str(c) for c in range(n)]))
    return folder


# ---------------------------------------------------------------- counter-based uniforms

def test_counter_uniforms_are_uniform_and_depend_on_seed_and_key_only():
    u = ag_data.counter_uniforms(3, np.arange(2000), 10)
    assert u.shape == (2000, 10) and u.min() >= 0 and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    # neighbouring keys and counters are not correlated
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.1 and abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.1
    keys = np.array([1999, 5, 77])
    np.testing.assert_array_equal(ag_data.counter_uniforms(3, keys, 10), u[keys])
    assert not np.allclose(ag_data.counter_uniforms(4, keys, 10), u[keys])
    assert not np.allclose(ag_data.counter_uniforms(3, keys, 10, stream=1), u[keys])
    with pytest.raises(ValueError, match="non-negative"):
        ag_data.counter_uniforms(0, [-1], 2)


# ---------------------------------------------------------------- resize and polarity

def _area_reference(x: torch.Tensor, size: int) -> torch.Tensor:
    """The exact area average by another route: nearest-upsample to a common multiple, then block means."""
    n = x.shape[-1]
    lcm = np.lcm(n, size)
    up = x.double().repeat_interleave(lcm // n, -1).repeat_interleave(lcm // n, -2)
    return F.avg_pool2d(up, lcm // size)


def test_area_resize_is_the_exact_area_average():
    x = torch.randint(0, 256, (5, 1, 105, 105), dtype=torch.uint8)
    ref = _area_reference(x, 28)
    got = ag_data.area_resize(x, 28)
    assert got.shape == (5, 1, 28, 28) and got.dtype == torch.uint8
    assert (got.double() - ref).abs().max() <= 0.5 + 1e-4  # rounding only
    w = ag_data.area_weights(105, 28)
    torch.testing.assert_close(w.sum(1), torch.ones(28, dtype=torch.float64))
    torch.testing.assert_close(w.sum(0), torch.full((105,), 28 / 105, dtype=torch.float64))
    with pytest.raises(ValueError, match="only shrinks"):
        ag_data.area_resize(x[:, :, :20, :20], 28)


def test_area_resize_is_antialiased_on_a_checkerboard():
    r = torch.arange(105)
    board = (((r[:, None] + r[None, :]) % 2) * 255).to(torch.uint8)[None, None]
    got = ag_data.area_resize(board, 28).double()
    assert abs(got.mean() - board.double().mean()) < 0.5  # the mean is kept
    assert got.std() < 10  # a flat grey, no aliasing pattern
    # torch's antialiased bilinear agrees on the mean and is flat too; plain bilinear aliases badly
    smooth = F.interpolate(board.double(), size=28, mode="bilinear", antialias=True, align_corners=False)
    aliased = F.interpolate(board.double(), size=28, mode="bilinear", antialias=False, align_corners=False)
    assert abs(smooth.mean() - got.mean()) < 2 and (smooth - got).abs().max() < 20
    assert aliased.std() > 30  # a beat pattern between the board and the 3.75-pixel step


def test_polarity_accepts_bright_ink_and_rejects_inverted_images():
    x = ag_data.area_resize(_strokes(8), 28)
    stats_ = ag_data.check_polarity(x, "toy")
    assert stats_["background"] == 0 and 0 < stats_["ink_fraction"] < 0.3 and stats_["border_mean"] < 1
    ink = x[x >= 128]
    assert ink.numel() and ink.float().mean() > 128  # the strokes are the high values
    with pytest.raises(data.CorruptDataError, match="ink is not bright"):
        ag_data.check_polarity(255 - x, "inverted")


def _mnist_sample(root, n=50):
    """The first n MNIST PNGs of the offline tar, decoded with PIL (an independent reader of the source)."""
    images = []
    with tarfile.open(root / "mnist-png.tar.gz") as tf:
        for member in tf:
            if member.name.endswith(".png"):
                images.append(np.asarray(Image.open(io.BytesIO(tf.extractfile(member).read()))))
                if len(images) == n:
                    break
    return torch.from_numpy(np.stack(images)[:, None])


def test_real_omniglot_after_resize_has_mnists_polarity(data_root):
    mnist = _mnist_sample(data_root)
    x, _ = data.load_split("omniglot", "evaluation", progress=False)
    omniglot = ag_data.area_resize(torch.from_numpy(x[:400]), 28)
    m, o = ag_data.check_polarity(mnist, "MNIST"), ag_data.check_polarity(omniglot, "Omniglot")
    assert m["background"] == o["background"] == 0
    assert 0.02 < o["ink_fraction"] < 0.3 and 0.05 < m["ink_fraction"] < 0.3
    for images in (mnist, omniglot):  # ink pixels are bright and away from the border, in both
        assert images[images >= 128].float().mean() > 180


# ---------------------------------------------------------------- the drawer split

@pytest.mark.parametrize("rule", ["first", "seeded"])
def test_each_character_gives_fine_drawers_to_fine_tuning_and_the_rest_to_test(rule):
    index = np.arange(7 * 20)
    fine = ag_data.fine_mask(index, 15, rule, seed=2)
    per_char = np.bincount(index[fine] // 20, minlength=7)
    assert (per_char == 15).all() and (np.bincount(index[~fine] // 20, minlength=7) == 5).all()
    if rule == "first":
        assert (index[fine] % 20 < 15).all()
    else:
        drawers = (index[fine] % 20).reshape(7, 15)
        assert any(set(d) != set(range(15)) for d in drawers)  # not simply the first ones
        assert not np.array_equal(fine, ag_data.fine_mask(index, 15, rule, seed=3))
        np.testing.assert_array_equal(fine, ag_data.fine_mask(index, 15, rule, seed=2))
        # a character's split does not depend on which other characters are present
        some = index[(index // 20) % 3 == 1]
        np.testing.assert_array_equal(ag_data.fine_mask(some, 15, rule, seed=2), fine[some])
    with pytest.raises(ValueError, match="fine_drawers"):
        ag_data.fine_mask(index, 20, rule)


def test_real_omniglot_split_counts(data_root):
    """1,623 characters x 15 / x 5 drawers on the offline npz pair, from its labels (nothing is decoded)."""
    src = data.resolve("omniglot", data_root)
    labels = [np.load(src.path / f"images_{s}.npz")["labels"] for s in ag_data.OMNIGLOT_SPLITS]
    assert [len(l) for l in labels] == [ag_data.BACKGROUND_CHARACTERS, ag_data.EVALUATION_CHARACTERS]
    y = np.concatenate([labels[0].ravel(), labels[1].ravel() + len(labels[0])])
    index = np.arange(len(y))
    np.testing.assert_array_equal(y, index // 20)  # character-major: the layout fine_mask relies on
    assert len(np.unique(y)) == ag_data.CHARACTERS == 1623
    for rule in ("first", "seeded"):
        fine = ag_data.fine_mask(index, 15, rule)
        assert fine.sum() == 24_345 and (~fine).sum() == 8_115
        assert set(np.bincount(y[fine])) == {15} and set(np.bincount(y[~fine])) == {5}


def test_load_omniglot_offsets_evaluation_labels_and_keeps_index_order(tmp_path):
    prepared = _write_prepared(tmp_path / "omniglot", {"background": 3, "evaluation": 2})
    x, y, index, n_background = ag_data.load_omniglot(prepared, 28)
    assert n_background == 3 and x.shape == (100, 1, 28, 28) and x.dtype == torch.uint8
    torch.testing.assert_close(y, torch.arange(100) // 20)  # evaluation characters 0, 1 -> 3, 4
    torch.testing.assert_close(index, torch.arange(100))
    raw = np.load(prepared / "evaluation.npz")["x"]
    torch.testing.assert_close(x[60:80], ag_data.area_resize(torch.from_numpy(raw[:20]), 28))
    x4, y4, index4, _ = ag_data.load_omniglot(prepared, 28, limit_characters=4)
    assert len(x4) == 80 and y4.max() == 3 and torch.equal(x4, x[:80]) and torch.equal(index4, index[:80])


def test_load_omniglot_refuses_a_prepared_set_without_all_twenty_drawers(tmp_path):
    prepared = _write_prepared(tmp_path / "omniglot", {"background": 2, "evaluation": 1}, drawers=5)
    with pytest.raises(data.CorruptDataError, match="all 20 drawers"):
        ag_data.load_omniglot(prepared)
    with pytest.raises(data.DataNotFoundError, match="shared.prepare dataset"):
        ag_data.load_omniglot(tmp_path / "nowhere")


# ---------------------------------------------------------------- dots

def _naive_dots(images, indices, cfg):
    """A loop over images and dots painting the squares of dot_layout (the reference for the batched masks)."""
    out = images.clone()
    count, rows, cols = ag_data.dot_layout(np.asarray(indices), cfg, *images.shape[-2:])
    for i in range(len(images)):
        for k in range(count[i]):
            out[i, :, rows[i, k]:rows[i, k] + cfg.size, cols[i, k]:cols[i, k] + cfg.size] = cfg.ink
    return out


def test_dots_match_a_naive_loop_and_leave_the_input_untouched():
    x = ag_data.area_resize(_strokes(30), 28)
    before = x.clone()
    idx = torch.arange(100, 130)
    cfg = DotsConfig(count_min=3, count_max=9, size=2, ink=200, seed=1)
    dotted = ag_data.add_dots(x, idx, cfg)
    assert torch.equal(x, before)
    assert torch.equal(dotted, _naive_dots(x, idx, cfg))
    changed = dotted != x
    assert changed.any(dim=(1, 2, 3)).all() and (dotted[changed] == 200).all()


def test_dots_depend_on_the_index_only():
    cfg = DotsConfig(seed=5)
    x = ag_data.area_resize(_strokes(40), 28)
    idx = torch.arange(1000, 1040)
    full = ag_data.add_dots(x, idx, cfg)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ag_data.add_dots(x[perm], idx[perm], cfg), full[perm])  # order
    assert torch.equal(ag_data.add_dots(x[7:9], idx[7:9], cfg), full[7:9])  # batch composition
    assert not torch.equal(ag_data.add_dots(x, idx + 1, cfg), full)  # another index, other dots
    assert not torch.equal(ag_data.add_dots(x, idx, DotsConfig(seed=6)), full)


def test_dot_counts_are_uniform_in_range_and_visible_as_blobs():
    cfg = DotsConfig(count_min=10, count_max=40, size=1)
    count, rows, cols = ag_data.dot_layout(np.arange(3000), cfg, 28, 28)
    assert count.min() == 10 and count.max() == 40 and abs(count.mean() - 25) < 0.5
    assert stats.chisquare(np.bincount(count - 10, minlength=31)).pvalue > 1e-3
    assert rows.min() == 0 and rows.max() == 27 and cols.max() == 27
    # on a large blank canvas (dots rarely touch) the connected blobs number the dots drawn
    blank = torch.zeros(200, 1, 200, 200, dtype=torch.uint8)
    for size in (1, 2):
        c = DotsConfig(count_min=10, count_max=40, size=size, seed=9)
        dotted = ag_data.add_dots(blank, torch.arange(200), c).numpy()
        n, _, _ = ag_data.dot_layout(np.arange(200), c, 200, 200)
        blobs = np.array([ndimage.label(d[0] > 0)[1] for d in dotted])
        assert (blobs <= n).all() and (blobs >= 10 - 2).all() and (blobs == n).mean() > 0.8
        assert (blobs <= 40).all()
    with pytest.raises(ValueError, match="exceeds"):
        ag_data.dot_layout([0], DotsConfig(size=30), 28, 28)


# ---------------------------------------------------------------- splits

def _cfg(**kw):
    return DataConfig(dots=DotsConfig(count_min=5, count_max=10), **kw)


def _toy_splits(cfg=None, chars=4):
    x = ag_data.area_resize(_strokes(chars * 20), 28)
    xp, yp = ag_data.area_resize(_strokes(30, seed=7), 28), torch.arange(30) % 10
    return ag_data.build_splits(xp, yp, x, torch.arange(chars * 20) // 20, torch.arange(chars * 20),
                                cfg or _cfg()), x


def test_build_splits_dots_only_the_dotted_copies():
    splits, x = _toy_splits()
    assert len(splits.fine_y) == 60 and len(splits.test_y) == 20 and splits.n_classes == 4
    assert torch.equal(splits.fine_clean, x[splits.fine_index]) and torch.equal(splits.test_clean, x[splits.test_index])
    assert torch.equal(splits.fine_dotted, ag_data.add_dots(x[splits.fine_index], splits.fine_index, _cfg().dots))
    assert torch.equal(splits.test_dotted, ag_data.add_dots(x[splits.test_index], splits.test_index, _cfg().dots))
    assert (splits.fine_dotted != splits.fine_clean).any(dim=(1, 2, 3)).all()
    assert torch.equal(splits.fine_y, splits.fine_index // 20) and (splits.fine_index.diff() > 0).all()
    seeded, _ = _toy_splits(_cfg(drawer_split="seeded", split_seed=1))
    assert not torch.equal(seeded.fine_index, splits.fine_index)
    # an image's dots are the same whichever split it falls in
    test_index, fine_index = splits.test_index.numpy(), seeded.fine_index.numpy()
    both = np.intersect1d(test_index, fine_index)
    a = splits.test_dotted[np.searchsorted(test_index, both)]
    assert len(both) and torch.equal(a, seeded.fine_dotted[np.searchsorted(fine_index, both)])
    with pytest.raises(ValueError, match="data.size"):
        ag_data.build_splits(splits.xp, splits.yp, ag_data.area_resize(_strokes(20), 32),
                             torch.zeros(20, dtype=torch.int64), torch.arange(20), _cfg())


def test_splits_round_trip_and_load_errors(tmp_path):
    splits, _ = _toy_splits()
    with open(tmp_path / ag_data.SPLITS_FILE, "wb") as f:
        ag_data.save_splits(splits, f)
    back = ag_data.load_splits(tmp_path)
    for name, value in splits.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], value)
    assert back.n_classes == 4 and back.fine_dotted.dtype == torch.uint8

    with pytest.raises(data.DataNotFoundError, match=r"splits.npz does not exist.*dvc.yaml:prepare"):
        ag_data.load_splits(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ag_data.SPLITS_FILE).write_bytes(b"not a zip")
    with pytest.raises(data.CorruptDataError, match="unreadable"):
        ag_data.load_splits(tmp_path / "bad")
    arrays = splits.arrays()
    for change, match in ((lambda a: a.pop("test_y"), r"\['test_y'\] are missing"),
                          (lambda a: a.update(xp=a["xp"].astype(np.float32)), "'xp' is torch.float32"),
                          (lambda a: a.update(fine_y=a["fine_y"][:-1]), "'fine_y' is torch.int64"),
                          (lambda a: a.update(fine_y=a["fine_y"][::-1].copy()), "out of step"),
                          (lambda a: a.update(n_classes=np.array([4])), "'n_classes'")):
        changed = dict(arrays)
        change(changed)
        np.savez(tmp_path / "bad" / ag_data.SPLITS_FILE, **changed)
        with pytest.raises(data.CorruptDataError, match=match):
            ag_data.load_splits(tmp_path / "bad")


def test_load_pretrain_limits_per_class_and_refuses_emnist(tmp_path):
    x = np.zeros((40, 1, 28, 28), np.uint8)
    y = np.arange(40) % 10
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "train.npz", x=x, y=y.astype(np.int64), classes=np.arange(10).astype(str))
    xp, yp = ag_data.load_pretrain(tmp_path / "mnist", DataConfig(pretrain_limit_per_class=2))
    assert xp.shape == (20, 1, 28, 28) and (torch.bincount(yp) == 2).all()
    with pytest.raises(ValueError, match="EMNIST ByClass.*no offline copy"):
        ag_data.load_pretrain(tmp_path / "mnist", DataConfig(pretrain_set="emnist"))


# ---------------------------------------------------------------- the stage

def test_the_stage_writes_splits_meta_grid_and_record(tmp_path):
    omniglot = _write_prepared(tmp_path / "omniglot", {"background": 3, "evaluation": 2})
    (tmp_path / "mnist").mkdir()
    xp = ag_data.area_resize(_strokes(20, seed=4), 28).numpy()
    np.savez(tmp_path / "mnist" / "train.npz", x=xp, y=(np.arange(20) % 10).astype(np.int64),
             classes=np.arange(10).astype(str))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"scale": "smoke", "seed": 0, "device": "cpu", "threads": 1,
                                     "tracking": {"backend": "none", "uri": None}}))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"drawer_split": "seeded", "dots": {"count_min": 5}},
                                      "scales": {"smoke": {"data": {"omniglot_limit_characters": 4}}}}))
    out = tmp_path / "out"
    argv = ["--mnist", str(tmp_path / "mnist"), "--omniglot", str(omniglot), "--out", str(out),
            "--params", str(params), "--suite-params", str(suite), "--metrics", str(tmp_path / "m.json")]
    assert prepare.main(argv) == 0
    splits = ag_data.load_splits(out)
    assert len(splits.fine_y) == 60 and len(splits.test_y) == 20 and splits.n_classes == 4 and len(splits.yp) == 20
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["fine_per_character"] == [15] and meta["split"]["rule"] == "seeded"
    assert meta["dots"]["count_min"] == 5 and meta["polarity"]["xp"]["background"] == 0
    assert set(meta["sources"]["omniglot"]["sha256"]) == {"background.npz", "evaluation.npz"}
    record = json.loads((out / "metrics.json").read_text())
    assert record["stage"] == "prepare" and record["scale"] == "smoke" and "table" not in record
    assert record["metrics"]["fine_images"] == 60 and record["metrics"]["characters"] == 4
    assert json.loads((tmp_path / "m.json").read_text())["test_images"] == 20
    grid = Image.open(out / "dots_grid.png")
    assert grid.size == (8 * 28 * prepare.GRID_ZOOM, 6 * 28 * prepare.GRID_ZOOM)
    # a second run over the same inputs writes the same arrays
    assert prepare.main(argv) == 0
    for name, value in ag_data.load_splits(out).arrays().items():
        np.testing.assert_array_equal(value, splits.arrays()[name])
    # a missing input is one line naming the file and how to make it
    assert prepare.main(argv[:1] + [str(tmp_path / "nowhere")] + argv[2:]) == 2


def test_background_in_xp_moves_the_background_characters_into_x_p():
    """The specification's optional variant: X_p gains every background image (clean); X_f / X_t keep only the
    evaluation characters, split and dotted exactly as in the full split."""
    chars, n_background = 5, 3
    x = ag_data.area_resize(_strokes(chars * 20), 28)
    labels, index = torch.arange(chars * 20) // 20, torch.arange(chars * 20)
    xp, yp = ag_data.area_resize(_strokes(30, seed=7), 28), torch.arange(30) % 10
    full = ag_data.build_splits(xp, yp, x, labels, index, _cfg(), n_background)
    variant = ag_data.build_splits(xp, yp, x, labels, index, _cfg(background_in_xp=True), n_background)
    assert torch.equal(variant.xp, torch.cat([xp, x[:60]])) and torch.equal(variant.yp[30:], 10 + labels[:60])
    assert set(variant.fine_y.tolist()) == set(variant.test_y.tolist()) == {3, 4} and variant.n_classes == 5
    keep = full.fine_y >= n_background
    for name in ("fine_dotted", "fine_clean", "fine_y", "fine_index"):
        assert torch.equal(getattr(variant, name), getattr(full, name)[keep])
    keep = full.test_y >= n_background
    for name in ("test_dotted", "test_clean", "test_y", "test_index"):
        assert torch.equal(getattr(variant, name), getattr(full, name)[keep])
    assert not torch.isin(variant.fine_index, torch.arange(60)).any()  # no dotted background image anywhere
    with pytest.raises(ValueError, match="evaluation characters remain"):
        ag_data.build_splits(xp, yp, x[:60], labels[:60], index[:60], _cfg(background_in_xp=True), n_background)
    with pytest.raises(ValueError, match="number of background characters"):
        ag_data.build_splits(xp, yp, x, labels, index, _cfg(background_in_xp=True))


def test_monitor_keeps_the_first_characters_of_the_fine_tuning_set():
    """The kNN monitor's `classes` counts the split's own characters, also when they do not start at 0 (the
    evaluation alphabets of data.background_in_xp start at 964)."""
    from papers.augmentation_generator.config import MonitorConfig
    from papers.augmentation_generator.encoder import DownstreamMonitor
    fine_y, test_y = torch.arange(964, 969).repeat_interleave(3), torch.arange(964, 969)
    fine_x = torch.zeros(15, 1, 4, 4, dtype=torch.uint8)
    test_x = torch.zeros(5, 1, 4, 4, dtype=torch.uint8)
    monitor = DownstreamMonitor((fine_x, fine_y), test_x, test_x, test_y, MonitorConfig(classes=2),
                                torch.device("cpu"))
    assert monitor.fine_y.tolist() == [964] * 3 + [965] * 3 and monitor.test_y.tolist() == [964, 965]
    assert len(monitor.test["d_to_c"]) == len(monitor.test["d_to_d"]) == 2
    every = DownstreamMonitor((fine_x, fine_y), test_x, test_x, test_y, MonitorConfig(classes=None),
                              torch.device("cpu"))
    assert len(every.fine_y) == 15 and len(every.test_y) == 5
