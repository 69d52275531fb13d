"""shared.data: every source layout gives the same arrays, resolution order, loud failures,
atomic preparation, seeded subsets, the device loader, and the real offline data."""
import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from shared import prepare as prepare_cli
from shared.data import (CIFAR10_CLASSES, CorruptDataError, DataNotFoundError, DeviceLoader, load_indices,
                         load_prepared, load_split, prepare, save_indices, stratified_subset)

from shared.config import REPO_ROOT

REPO = REPO_ROOT
DIGITS = [str(d) for d in range(10)]


# ---------------------------------------------------------------- synthetic data builders

def _images(classes, per_class, shape, seed):
    """{split: {class: [uint8 HxW(xC) arrays]}}; pixel values differ between every image."""
    rng = np.random.default_rng(seed)
    return {split: {c: [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(per_class)] for c in classes}
            for split in ("train", "test")}


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write_tree(root: Path, imgs, ext=".png", split_names=None) -> Path:
    for split, by_class in imgs.items():
        for c, arrs in by_class.items():
            d = root / (split_names or {}).get(split, split) / c
            d.mkdir(parents=True)
            for i, a in enumerate(arrs):
                Image.fromarray(a).save(d / f"{i:03d}{ext}")
    return root


def _tar(tree: Path, out: Path, mode: str, prefix: str = "") -> Path:
    with tarfile.open(out, mode) as tf:
        for f in sorted(tree.rglob("*"), reverse=True):  # reversed: the reader must sort, not trust order
            if f.is_file():
                tf.add(f, arcname=prefix + f.relative_to(tree).as_posix())
    return out


def _add_member(tar_path: Path, name: str, payload: bytes) -> None:
    with tarfile.open(tar_path, "a") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))


def _expected(imgs, split, classes):
    x = np.stack([a for c in classes for a in imgs[split][c]])
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    y = np.repeat(np.arange(len(classes)), len(imgs[split][classes[0]]))
    return x, y


@pytest.fixture
def cifar_imgs():
    return _images(CIFAR10_CLASSES, 2, (32, 32, 3), seed=0)


@pytest.fixture
def mnist_imgs():
    return _images(DIGITS, 2, (28, 28), seed=1)


# ---------------------------------------------------------------- every layout, the same arrays

def test_cifar_tree_tar_targz_and_torchvision_pickles_agree(tmp_path, cifar_imgs):
    tree = _write_tree(tmp_path / "tree" / "cifar10", cifar_imgs)
    sources = [tree, tmp_path / "tree",  # the tree itself, and a root holding a cifar10* folder
               _tar(tree, tmp_path / "cifar10.tar", "w"),
               _tar(tree, tmp_path / "cifar10-png.tar.gz", "w:gz", prefix="cifar10-png/")]
    tv = tmp_path / "tv" / "cifar-10-batches-py"  # torchvision's pickles: py2-style str keys
    tv.mkdir(parents=True)
    pickle.dump({"label_names": list(CIFAR10_CLASSES)}, open(tv / "batches.meta", "wb"))
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        x, y = _expected(cifar_imgs, split, CIFAR10_CLASSES)
        for f, rows in zip(files, np.array_split(np.arange(len(x)), len(files))):
            pickle.dump({"data": x[rows].reshape(len(rows), -1), "labels": y[rows].tolist()}, open(tv / f, "wb"))
    sources.append(tmp_path / "tv")
    for split in ("train", "test"):
        want_x, want_y = _expected(cifar_imgs, split, CIFAR10_CLASSES)
        for src in sources:
            x, y = load_split("cifar10", split, path=src, progress=False)
            assert x.dtype == np.uint8 and y.dtype == np.int64, src
            np.testing.assert_array_equal(x, want_x, err_msg=str(src))
            np.testing.assert_array_equal(y, want_y, err_msg=str(src))


def _write_idx(path: Path, arr: np.ndarray) -> None:
    payload = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(payload)


def test_mnist_tree_targz_and_idx_files_plain_and_gz_agree(tmp_path, mnist_imgs):
    tree = _write_tree(tmp_path / "mnist-png", mnist_imgs)
    sources = [tree, _tar(tree, tmp_path / "mnist-toy.tar.gz", "w:gz")]  # not the offline copy's name
    for suffix in ("", ".gz"):
        raw = tmp_path / f"tv{suffix}" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, prefix in (("train", "train"), ("test", "t10k")):
            x, y = _expected(mnist_imgs, split, DIGITS)
            _write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", x[:, 0])
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", y.astype(np.uint8))
        sources.append(tmp_path / f"tv{suffix}")
    for split in ("train", "test"):
        want_x, want_y = _expected(mnist_imgs, split, DIGITS)
        for src in sources:
            x, y = load_split("mnist", split, path=src, progress=False)
            np.testing.assert_array_equal(x, want_x, err_msg=str(src))
            np.testing.assert_array_equal(y, want_y, err_msg=str(src))


def test_omniglot_npz_and_torchvision_tree_agree_with_ink_255(tmp_path):
    rng = np.random.default_rng(2)
    chars = [("Alpha", "character01"), ("Alpha", "character02"), ("Beta", "character01")]
    white = rng.random((len(chars), 3, 105, 105)) < 0.9  # True = white background, as in the PNGs
    for split in ("background", "evaluation"):
        for i, (alphabet, char) in enumerate(chars):
            d = tmp_path / "omniglot-py" / f"images_{split}" / alphabet / char
            d.mkdir(parents=True)
            for j in range(3):
                Image.fromarray(white[i, j]).save(d / f"{i:04d}_{j:02d}.png")  # mode "1", like Omniglot
        labels = np.repeat(np.arange(len(chars)), 3).reshape(len(chars), 3)
        np.savez(tmp_path / f"images_{split}.npz", images=white, labels=labels)
    want_x = np.where(white.reshape(-1, 1, 105, 105), 0, 255).astype(np.uint8)
    for src in (tmp_path / "omniglot-py", tmp_path, tmp_path / "images_background.npz"):
        x, y = load_split("omniglot", "background", path=src, progress=False)
        np.testing.assert_array_equal(x, want_x, err_msg=str(src))
        np.testing.assert_array_equal(y, np.repeat(np.arange(3), 3))
    x, _ = load_split("omniglot", "evaluation", path=tmp_path / "images_evaluation.npz", limit_per_class=2)
    assert x.shape == (6, 1, 105, 105)


# ---------------------------------------------------------------- resolution order

def test_explicit_path_beats_env_var_and_env_var_is_used_without_path(tmp_path, monkeypatch, mnist_imgs):
    _write_tree(tmp_path / "explicit" / "mnist", mnist_imgs)
    other = {s: {c: [255 - a for a in arrs] for c, arrs in by.items()} for s, by in mnist_imgs.items()}
    _write_tree(tmp_path / "root" / "MNIST-png", other)
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "root"))
    x, _ = load_split("mnist", "test", path=tmp_path / "explicit", progress=False)
    np.testing.assert_array_equal(x, _expected(mnist_imgs, "test", DIGITS)[0])
    x, _ = load_split("mnist", "test", download_dir=tmp_path / "dl", progress=False)
    np.testing.assert_array_equal(x, _expected(other, "test", DIGITS)[0])


def test_download_is_the_fallback(tmp_path, monkeypatch, mnist_imgs):
    def fake_mnist(root, download, train):  # what torchvision leaves behind: MNIST/raw idx files
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        split, prefix = ("train", "train") if train else ("test", "t10k")
        x, y = _expected(mnist_imgs, split, DIGITS)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", x[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))

    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    monkeypatch.setattr("torchvision.datasets.MNIST", fake_mnist)
    x, y = load_split("mnist", "train", download_dir=tmp_path / "dl")
    np.testing.assert_array_equal(x, _expected(mnist_imgs, "train", DIGITS)[0])


def test_nothing_available_raises_one_error_naming_all_three_ways(tmp_path, monkeypatch):
    def offline(**kw):
        raise RuntimeError("no internet in this test")

    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "empty_root"))
    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    with pytest.raises(DataNotFoundError) as err:
        load_split("cifar10", "train", download_dir=tmp_path / "dl")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in ("cifar10", "data.paths.cifar10", "params.yaml", "REPRO_DATA_DIR", "download", "no internet in this test"):
        assert part in msg, part
    # a wrong explicit path is an error too, and never silently replaced by a download
    monkeypatch.setattr("torchvision.datasets.CIFAR10", lambda **kw: pytest.fail("download attempted"))
    with pytest.raises(DataNotFoundError, match="nowhere"):
        load_split("cifar10", "train", path=tmp_path / "nowhere", download_dir=tmp_path / "dl")


# ---------------------------------------------------------------- loud failures, atomic writes

def test_corrupt_members_in_tars_name_member_and_tar(tmp_path, mnist_imgs, cifar_imgs):
    mnist = _tar(_write_tree(tmp_path / "m", mnist_imgs), tmp_path / "mnist.tar", "w")
    _add_member(mnist, "train/3/999.png", b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(CorruptDataError, match=r"train/3/999\.png.*mnist\.tar"):
        load_split("mnist", "train", path=mnist, progress=False)
    cifar = _tar(_write_tree(tmp_path / "c", cifar_imgs, ext=".jpg"), tmp_path / "cifar10.tar", "w")
    jpeg = (tmp_path / "c" / "test" / "cat" / "000.jpg").read_bytes()
    _add_member(cifar, "test/cat/zzz.jpg", jpeg[: len(jpeg) // 2])  # truncated JPEG
    with pytest.raises(CorruptDataError, match=r"test/cat/zzz\.jpg.*cifar10\.tar"):
        load_split("cifar10", "test", path=cifar, progress=False)
    x, _ = load_split("cifar10", "train", path=cifar, progress=False)  # the other split is fine
    assert x.shape == (20, 3, 32, 32)


def test_wrong_size_channels_or_classes_in_a_tree_name_the_file(tmp_path, mnist_imgs, cifar_imgs):
    mnist = _write_tree(tmp_path / "m", mnist_imgs)
    Image.fromarray(np.zeros((27, 28), np.uint8)).save(mnist / "train" / "5" / "001.png")
    with pytest.raises(CorruptDataError, match=r"train/5/001\.png.*28x27"):
        load_split("mnist", "train", path=mnist, progress=False)
    cifar = _write_tree(tmp_path / "c", cifar_imgs)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(cifar / "test" / "dog" / "000.png")
    with pytest.raises(CorruptDataError, match=r"test/dog/000\.png.*expected RGB"):
        load_split("cifar10", "test", path=cifar, progress=False)
    (cifar / "train" / "frog").rename(cifar / "train" / "toad")
    with pytest.raises(CorruptDataError, match="toad"):
        load_split("cifar10", "train", path=cifar, progress=False)


def test_prepare_round_trip_and_atomic_on_failure(tmp_path, monkeypatch, mnist_imgs):
    tree = _write_tree(tmp_path / "mnist", mnist_imgs)
    out = tmp_path / "prepared"
    meta = prepare("mnist", out, path=tree, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "train.npz"]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["source"]["kind"] == "imagefolder" and meta["splits"]["train"]["x_shape"] == [20, 1, 28, 28]
    x, y = load_prepared(out, "test")
    np.testing.assert_array_equal(x, _expected(mnist_imgs, "test", DIGITS)[0])
    assert list(np.load(out / "test.npz")["classes"]) == DIGITS
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # a failure while writing the second file leaves the earlier output untouched, no temp files
    real_savez, calls = np.savez, []
    def flaky_savez(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (test)")
        real_savez(*a, **kw)
    monkeypatch.setattr(np, "savez", flaky_savez)
    with pytest.raises(OSError, match="disk full"):
        prepare("mnist", out, path=tree, limit_per_class=1, progress=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # a corrupt image in the test split: the train split is never written
    (tree / "test" / "7" / "000.png").write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match="000.png"):
        prepare("mnist", tmp_path / "fresh", path=tree, progress=False)
    assert not (tmp_path / "fresh").exists()


def test_load_prepared_errors_name_the_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"train\.npz.*python -m shared.prepare dataset"):
        load_prepared(tmp_path, "train")
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CorruptDataError, match=r"train\.npz"):
        load_prepared(tmp_path, "train")


def test_limit_per_class_keeps_first_files_and_never_decodes_the_rest(tmp_path, mnist_imgs):
    imgs = {s: {c: a + [a[0]] for c, a in by.items()} for s, by in mnist_imgs.items()}  # 3 per class
    tar = _tar(_write_tree(tmp_path / "m", imgs), tmp_path / "mnist.tar", "w")
    _add_member(tar, "train/4/zzz.png", b"corrupt, but sorted last in its class")
    x, y = load_split("mnist", "train", path=tar, limit_per_class=2, progress=False)
    np.testing.assert_array_equal(x, _expected(mnist_imgs, "train", DIGITS)[0])
    np.testing.assert_array_equal(np.bincount(y), [2] * 10)


# ---------------------------------------------------------------- subsets

def test_stratified_subset_counts_seeds_and_errors(tmp_path):
    labels = np.repeat([0, 1, 2], [10, 7, 12])
    idx = stratified_subset(labels, 5, seed=0)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [5, 5, 5])
    np.testing.assert_array_equal(idx, stratified_subset(labels, 5, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels, 5, seed=1))
    with pytest.raises(ValueError, match="class 1 has 7"):
        stratified_subset(labels, 8, seed=0)
    for name in ("sub.npy", "sub.json"):
        save_indices(tmp_path / name, idx, {"seed": 0, "per_class": 5})
        back = load_indices(tmp_path / name)
        assert back.dtype == np.int64
        np.testing.assert_array_equal(back, idx)
    assert json.loads((tmp_path / "sub.npy.json").read_text())["seed"] == 0
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- device loader

def _epoch(loader):
    return [(xb[:, 0, 0, 0].tolist(), yb.tolist()) for xb, yb, _ in loader]


def test_device_loader_covers_each_index_once_and_is_seeded_per_epoch():
    n = 23
    x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 1, 2, 2)).copy()
    y = np.arange(n) * 10
    loader = DeviceLoader(x, y, batch_size=5, seed=3)
    assert len(loader) == 5
    epochs = []
    for e in range(3):
        loader.set_epoch(e)
        batches = list(loader)
        assert all(xb.dtype == torch.uint8 and yb.dtype == torch.int64 for xb, yb, _ in batches)
        seen = [i for xb, yb, _ in batches for i in xb[:, 0, 0, 0].tolist()]
        assert all(torch.equal(ib.to(torch.uint8), xb[:, 0, 0, 0]) for xb, _, ib in batches)  # rows by index
        assert sorted(seen) == list(range(n))
        assert [yy for _, yb, _ in batches for yy in yb.tolist()] == [i * 10 for i in seen]
        epochs.append(_epoch(loader))
    assert epochs[0] != epochs[1] != epochs[2]
    resumed = DeviceLoader(x, y, batch_size=5, seed=3)
    resumed.set_epoch(2)
    assert _epoch(resumed) == epochs[2]

    sub = DeviceLoader(x, y, batch_size=4, drop_last=True, indices=[1, 4, 9, 16, 22])
    assert len(sub) == 1 and all(len(xb) == 4 for xb, _, _ in sub)
    plain = DeviceLoader(x, y, batch_size=10, shuffle=False, indices=[1, 4, 9, 16, 22])
    assert _epoch(plain) == [([1, 4, 9, 16, 22], [10, 40, 90, 160, 220])]


def test_device_loader_reads_what_the_prepare_cli_writes(tmp_path, mnist_imgs, capsys):
    tree = _write_tree(tmp_path / "mnist", mnist_imgs)
    out = tmp_path / "prepared"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "scale": "smoke", "tracking": {"backend": "none"}, "data": {"paths": {"mnist": str(tree)}},
        "prepare": {"subsets": {"one": {"dataset": "mnist", "per_class": 1}, "three": {"per_class": 3}}}}))
    assert prepare_cli.main(["dataset", "mnist", "--params", str(params), "--out", str(out)]) == 0
    assert prepare_cli.main(["subset", "one", "--params", str(params), "--prepared", str(out),
                             "--out", str(tmp_path / "sub.npy")]) == 0
    loader = DeviceLoader.from_prepared(out, "train", "cpu", indices=tmp_path / "sub.npy", batch_size=4)
    ys = sorted(y for _, yb, _ in loader for y in yb.tolist())
    assert ys == list(range(10)) and len(loader) == 3
    assert prepare_cli.main(["subset", "three", "--params", str(params), "--prepared", str(out),
                             "--out", str(tmp_path / "x.npy")]) == 2
    assert "fewer than per_class=3" in capsys.readouterr().err
    # the real entry point: clean one-line error, non-zero exit, no traceback
    params.write_text(yaml.safe_dump({"scale": "smoke", "tracking": {"backend": "none"},
                                      "data": {"paths": {"cifar10": str(tmp_path / "nowhere")}}}))
    run = subprocess.run([sys.executable, "-m", "shared.prepare", "dataset", "cifar10", "--params", str(params),
                          "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "data.paths.cifar10" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------- the real offline data

def test_real_omniglot_npz_shapes_counts_and_ink_polarity(data_root):
    for split, chars in (("background", 964), ("evaluation", 659)):
        x, y = load_split("omniglot", split, path=data_root, progress=False)
        assert x.shape == (chars * 20, 1, 105, 105) and x.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(y), [20] * chars)
        assert set(np.unique(x[:50]).tolist()) == {0, 255}
        assert (x == 0).mean() > 0.8  # strokes are thin: background (0) dominates


@pytest.mark.parametrize("name, shape", [("cifar10", (3, 32, 32)), ("mnist", (1, 28, 28))])
def test_real_tars_load_with_limit_per_class(data_root, tmp_path, name, shape):
    meta = prepare(name, tmp_path, path=data_root, limit_per_class=2, progress=False)
    assert meta["source"]["kind"] == "tar"
    assert meta["classes"] == (list(CIFAR10_CLASSES) if name == "cifar10" else DIGITS)
    for split in ("train", "test"):
        x, y = load_prepared(tmp_path, split)
        assert x.shape == (20, *shape)
        np.testing.assert_array_equal(y, np.repeat(np.arange(10), 2))
        assert x.std() > 10 and len({a.tobytes() for a in x}) == 20


def test_evenly_spaced_spreads_positions_over_the_whole_range():
    from shared.data import evenly_spaced

    assert evenly_spaced(10, None).tolist() == list(range(10))
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9]  # 4.5 rounds half to even
    assert evenly_spaced(5, 50).tolist() == list(range(5))
    assert evenly_spaced(1000, 8).tolist() == np.unique(np.round(np.linspace(0, 999, 8))).astype(int).tolist()
