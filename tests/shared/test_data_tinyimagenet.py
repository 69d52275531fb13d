"""Tiny-ImageNet-100 (GenCL's ImageNet stand-in): the real archive's splits, classes and pixels, the prepare path
(from the tar and from an ImageFolder tree, grayscale JPEGs converted to RGB) and the 1% / 10% label subsets."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared import config, data
from shared.prepare import PrepareConfig, make_subset

ARCHIVE = "tinyimagenet100-jpeg.tar.gz"
REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def listing(data_root):
    """(member names, wnids.txt lines) of the offline archive, read without decoding (about a second)."""
    with tarfile.open(data_root / ARCHIVE, "r:gz") as tf:
        names = tf.getnames()
        wnids = tf.extractfile("wnids.txt").read().decode().split()
    return names, wnids


def test_archive_listing_counts_and_class_order(listing):
    names, wnids = listing
    # class order: sorted wnids == the archive's wnids.txt == the spec's fixed list
    assert tuple(wnids) == data.TINYIMAGENET100_WNIDS == tuple(sorted(wnids))
    for split, per_class in (("train", 300), ("test", 50)):
        files = [n.split("/") for n in names if n.startswith(f"{split}/") and n.endswith(".JPEG")]
        counts = {}
        for parts in files:
            assert len(parts) == 3, parts
            counts[parts[1]] = counts.get(parts[1], 0) + 1
        assert sorted(counts) == list(wnids)
        assert set(counts.values()) == {per_class}
        assert len(files) == 100 * per_class  # 30,000 / 5,000
    assert all(n.split("/")[-1].startswith("val_") for n in names if n.startswith("test/") and n.endswith(".JPEG"))


LIMIT = 10  # images per class decoded by the tests: a full decode of the 35,000 takes 12-35 s on one busy core,
# so the full counts are checked from the archive's listing above and the pixels on the first 10 of every class


@pytest.fixture(scope="module")
def prepared(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("tin") / "tinyimagenet100"
    meta = data.prepare("tinyimagenet100", out, limit_per_class=LIMIT, progress=False)
    return out, meta


def test_prepare_from_the_archive_gives_rgb_uint8(prepared):
    out, meta = prepared
    assert meta["classes"] == list(data.TINYIMAGENET100_WNIDS)
    assert meta["source"]["archives"][0]["check"] == "known" and meta["limit_per_class"] == LIMIT
    grays = 0
    for split in ("train", "test"):
        x, y = data.load_prepared(out, split)
        assert x.dtype == np.uint8 and x.shape == (100 * LIMIT, 3, 64, 64)
        assert y.dtype == np.int64 and np.bincount(y, minlength=100).tolist() == [LIMIT] * 100
        assert meta["splits"][split]["per_class"] == [LIMIT] * 100
        grays += int(((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).all(axis=(1, 2)).sum())
        assert x.std() > 30  # real photographs, not a constant
    assert 0 < grays < 0.05 * 2000  # grayscale JPEGs (1.4% of the archive) became three equal channels


def test_rows_are_the_sorted_files_of_each_class(prepared, data_root):
    out, _ = prepared
    x, y = data.load_prepared(out, "train")
    with tarfile.open(data_root / ARCHIVE, "r:gz") as tf:  # class 1's first file in sorted name order
        want = np.asarray(Image.open(io.BytesIO(tf.extractfile("train/n01629819/n01629819_0.JPEG").read()))
                          .convert("RGB")).transpose(2, 0, 1)
    assert y[LIMIT] == 1 and np.array_equal(x[LIMIT], want)


def _jpeg(mode: str, value) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (64, 64), value).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def test_imagefolder_tree_is_read_and_grayscale_becomes_rgb(tmp_path, monkeypatch):
    # a user's tree (how an ImageNet-style folder comes in): only 2 of the 100 classes -> refused by name
    root = tmp_path / "tinyimagenet100"
    wnids = data.TINYIMAGENET100_WNIDS
    for split in ("train", "test"):
        for i, wnid in enumerate(wnids):
            d = root / split / wnid
            d.mkdir(parents=True)
            (d / "a.JPEG").write_bytes(_jpeg("L", 200) if i == 1 else _jpeg("RGB", (10, 120, 240)))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.resolve("tinyimagenet100", tmp_path).kind == "imagefolder"
    x, y = data.load_split("tinyimagenet100", "train", path=tmp_path, progress=False)
    assert x.shape == (100, 3, 64, 64) and y.tolist() == list(range(100))
    assert (x[1] == 200).all()  # grayscale 200 replicated into R, G, B
    assert abs(int(x[0, 0].mean()) - 10) <= 2 and abs(int(x[0, 2].mean()) - 240) <= 2
    # a tree missing classes is refused, naming them
    for wnid in wnids[2:]:
        for f in (root / "test" / wnid).iterdir():
            f.unlink()
        (root / "test" / wnid).rmdir()
    with pytest.raises(data.CorruptDataError, match="test classes"):
        data.load_split("tinyimagenet100", "test", path=tmp_path, progress=False)
    # an image of the wrong size is refused (an ImageNet tree would need a resize first)
    (root / "train" / wnids[0] / "a.JPEG").write_bytes(_big_jpeg())
    with pytest.raises(data.CorruptDataError, match="expected RGB 64x64"):
        data.load_split("tinyimagenet100", "train", path=tmp_path, progress=False)


def _big_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 64)).save(buf, format="JPEG")
    return buf.getvalue()


def test_no_torchvision_download_is_attempted(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.DataNotFoundError, match="torchvision has no download of tinyimagenet100"):
        data.resolve("tinyimagenet100", download_dir=tmp_path)


def test_label_subsets_1_and_10_percent(tmp_path):
    # the top-level subsets: 3 and 30 of the 300 train images per class, seeded, stratified
    cfg = config.load_section(PrepareConfig, REPO_PARAMS, "prepare", "mini")
    one, ten = cfg.subsets["tinyimagenet100_1pct"], cfg.subsets["tinyimagenet100_10pct"]
    assert (one.dataset, one.split, one.per_class) == ("tinyimagenet100", "train", 3)
    assert (ten.dataset, ten.split, ten.per_class) == ("tinyimagenet100", "train", 30)
    smoke = config.load_section(PrepareConfig, REPO_PARAMS, "prepare", "smoke")
    assert smoke.subsets["tinyimagenet100_10pct"].per_class <= smoke.limit_per_class  # fits the smoke prepare
    assert cfg.subsets["tinyimagenet100_ssl10k"].per_class == 100  # GenCL's mini SSL set: 10,000 images
    assert smoke.subsets["tinyimagenet100_ssl10k"].per_class <= smoke.limit_per_class
    # through the stage's own function, on a prepared set of 300 per class (labels only matter)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    y = np.repeat(np.arange(100), 300)
    np.savez(prepared / "train.npz", x=np.zeros((len(y), 3, 1, 1), np.uint8), y=y, classes=np.array(["c"]))
    params = tmp_path / "params.yaml"
    params.write_text(REPO_PARAMS.read_text().replace("backend: mlflow", "backend: none"))
    for name, per_class in (("tinyimagenet100_1pct", 3), ("tinyimagenet100_10pct", 30)):
        out = tmp_path / f"{name}.npy"
        make_subset(name, params, prepared, out)
        idx = data.load_indices(out)
        assert np.bincount(y[idx], minlength=100).tolist() == [per_class] * 100
        assert len(np.unique(idx)) == len(idx) == 100 * per_class
        assert json.loads(out.with_name(out.name + ".json").read_text())["per_class"] == per_class
        make_subset(name, params, prepared, tmp_path / "again.npy")  # seeded: the same draw again
        assert np.array_equal(data.load_indices(tmp_path / "again.npy"), idx)
