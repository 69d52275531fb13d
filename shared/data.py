"""Datasets as uint8 arrays: resolution, preparation, seeded subsets and device-resident loaders.

Every loader returns images as uint8 ``(N, C, H, W)`` and labels as int64 ``(N,)``:
CIFAR-10 ``(N, 3, 32, 32)``, MNIST ``(N, 1, 28, 28)``, Omniglot ``(N, 1, 105, 105)``,
Tiny-ImageNet-100 ``(N, 3, 64, 64)`` (grayscale JPEGs converted to RGB; no torchvision download).

Where a dataset comes from, in order (the first that holds it wins):
  1. an explicit ``path`` (``data.paths.<name>`` in params.yaml): the dataset's files, a folder
     or tar holding them, or a data root that contains them;
  2. the data root named by the environment variable ``REPRO_DATA_DIR`` (e.g. ../shared/data);
  3. torchvision's download into ``download_dir`` (default ~/.cache/repro_suite/torchvision).
An explicit path that holds nothing is an error, not a fall-through: a typo in params.yaml
should not quietly turn into a download of something else.

Layouts accepted inside a path or root: torchvision's own files (``cifar-10-batches-py/``,
``MNIST/raw/*-ubyte[.gz]``, ``omniglot-py/images_background/<alphabet>/<character>/*.png``),
an ImageFolder tree ``<split>/<class>/<image>`` (given directly or in a child folder whose name
starts with the dataset's name), a tar / tar.gz of such a tree (read as a stream, never
extracted), and for Omniglot the pair ``images_background.npz`` / ``images_evaluation.npz``.

Labels index the sorted class-folder names. For CIFAR-10 that order (airplane ... truck) is
also torchvision's, so every source gives the same labels. Omniglot labels are the character
index within a split: the npz's ``labels`` array, or the sorted (alphabet, character) order of
a folder tree (torchvision itself uses unsorted ``os.listdir`` order, which we do not follow).
Omniglot polarity: the source stores white background / black ink; we store INK = 255 and
background = 0, so strokes are the bright, non-zero pixels models see.

Integrity: a flipped byte inside a JPEG decodes without error, so every archive (a tar, Omniglot's
npz pair) is hashed (SHA-256, streamed) before it is read. The offline copies must match
``KNOWN_SHA256``; any other archive's hash is recorded in the prepared output's ``meta.json``, and
preparing that output again from a changed file at the same path is refused (from a file at another
path, a warning). Folder trees and torchvision's files are not hashed (torchvision checks its own
downloads).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from shared.io import atomic_write, replace_temp, write_temp

ENV_VAR = "REPRO_DATA_DIR"
DEFAULT_DOWNLOAD_DIR = Path("~/.cache/repro_suite/torchvision")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Sorted folder names must equal torchvision's label order, or labels would differ by source.
assert tuple(sorted(CIFAR10_CLASSES)) == CIFAR10_CLASSES
# Tiny-ImageNet-100 (the offline stand-in for ImageNet, GenCL): the first 100 WordNet ids of Tiny-ImageNet-200 in
# sorted order, which is also the order of the archive's wnids.txt (checked when this table was written), so label
# i = TINYIMAGENET100_WNIDS[i] whichever way the classes are listed.
TINYIMAGENET100_WNIDS = (
    "n01443537", "n01629819", "n01641577", "n01644900", "n01698640", "n01742172", "n01768244", "n01770393",
    "n01774384", "n01774750", "n01784675", "n01855672", "n01882714", "n01910747", "n01917289", "n01944390",
    "n01945685", "n01950731", "n01983481", "n01984695", "n02002724", "n02056570", "n02058221", "n02074367",
    "n02085620", "n02094433", "n02099601", "n02099712", "n02106662", "n02113799", "n02123045", "n02123394",
    "n02124075", "n02125311", "n02129165", "n02132136", "n02165456", "n02190166", "n02206856", "n02226429",
    "n02231487", "n02233338", "n02236044", "n02268443", "n02279972", "n02281406", "n02321529", "n02364673",
    "n02395406", "n02403003", "n02410509", "n02415577", "n02423022", "n02437312", "n02480495", "n02480855",
    "n02481823", "n02486410", "n02504458", "n02509815", "n02666196", "n02669723", "n02699494", "n02730930",
    "n02769748", "n02788148", "n02791270", "n02793495", "n02795169", "n02802426", "n02808440", "n02814533",
    "n02814860", "n02815834", "n02823428", "n02837789", "n02841315", "n02843684", "n02883205", "n02892201",
    "n02906734", "n02909870", "n02917067", "n02927161", "n02948072", "n02950826", "n02963159", "n02977058",
    "n02988304", "n02999410", "n03014705", "n03026506", "n03042490", "n03085013", "n03089624", "n03100240",
    "n03126707", "n03160309", "n03179701", "n03201208",
)
assert len(TINYIMAGENET100_WNIDS) == 100 and tuple(sorted(TINYIMAGENET100_WNIDS)) == TINYIMAGENET100_WNIDS
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

# SHA-256 of the offline archives, transcribed from ../shared/data/README.md (its "SHA-256:" list; the
# Omniglot pair's from the .sha256 files beside them there). tests/shared/test_data_integrity.py checks
# this table against that README. Keys are the file's trailing path parts: a file so named is refused
# unless its bytes hash to the value here.
KNOWN_SHA256 = {
    "cifar10-jpeg.tar.gz": "0bfcb68717a0ecb0d51ed61034906a773d48d424d94b766a46d7d1c55702a4d9",
    "mnist-png.tar.gz": "10d0a1308dfe1b23076ac5011f02acd6bb4288192e4c7587819bbc01d6099f82",
    "tinyimagenet100-jpeg.tar.gz": "ceea8d1cba1e4224be9e2bebcc51a918c823627f6fc02d6d9dbf1bc8ceb4eef7",
    "omniglot/images_background.npz": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "omniglot/images_evaluation.npz": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
}
# Read size for hashing. About 1 GB/s on the 2-core build machine (SHA-NI): 19 ms for cifar10-jpeg.tar.gz
# (19 MB), 47 ms for tinyimagenet100-jpeg.tar.gz (48 MB), against seconds to decode the images.
HASH_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A dataset, split or prepared file is not where any of the configured ways point."""


class CorruptDataError(ValueError):
    """A file was found but cannot be read as the dataset it should hold."""


class ArchiveHashError(CorruptDataError):
    """An archive's bytes do not hash to the SHA-256 known or recorded for it."""

    def __init__(self, path: Path, expected: str, actual: str, message: str):
        super().__init__(message)
        self.path, self.expected, self.actual = path, expected, actual


@dataclass(frozen=True)
class _Spec:
    split_dirs: dict[str, str]  # split -> its folder name in a tree
    shape: tuple[int, int, int]  # C, H, W
    class_depth: int  # folder levels naming a class (Omniglot: alphabet/character)
    classes: tuple[str, ...] | None  # the fixed class list, where there is one
    torchvision: str  # torchvision.datasets class used for the download
    tv_kwargs: tuple[dict, ...]  # one constructor call per split
    invert: bool = False
    to_rgb: bool = False  # convert every decoded image to RGB (Tiny-ImageNet / ImageNet hold some grayscale JPEGs)


_SPECS = {
    "cifar10": _Spec({"train": "train", "test": "test"}, (3, 32, 32), 1, CIFAR10_CLASSES,
                     "CIFAR10", ({"train": True}, {"train": False})),
    "mnist": _Spec({"train": "train", "test": "test"}, (1, 28, 28), 1, tuple(str(d) for d in range(10)),
                   "MNIST", ({"train": True}, {"train": False})),
    "omniglot": _Spec({"background": "images_background", "evaluation": "images_evaluation"},
                      (1, 105, 105), 2, None, "Omniglot", ({"background": True}, {"background": False}),
                      invert=True),
    # Tiny-ImageNet-100: `test` is Tiny-ImageNet's labelled validation split (test/<wnid>/val_<n>.JPEG). No
    # torchvision download exists: the offline tar, or an ImageFolder tree train/<wnid>, test/<wnid> of 64x64 images.
    "tinyimagenet100": _Spec({"train": "train", "test": "test"}, (3, 64, 64), 1, TINYIMAGENET100_WNIDS,
                             "", (), to_rgb=True),
}


@dataclass(frozen=True)
class Source:
    """Where a dataset was found: ``kind`` is torchvision, imagefolder, tar or npz."""
    kind: str
    path: Path


# ---------------------------------------------------------------- finding a dataset

def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(_SPECS)}")
    return _SPECS[name]


def _named_like(name: str, filename: str) -> bool:
    """'cifar10-jpeg.tar.gz' and 'CIFAR-10' are cifar10's; 'cifar100' is not."""
    norm = re.sub(r"[^a-z0-9]", "", filename.lower())
    return norm.startswith(name) and not norm[len(name):len(name) + 1].isdigit()


def _is_tar_name(filename: str) -> bool:
    return filename.lower().endswith(TAR_SUFFIXES)


def _mnist_raw(d: Path, prefix: str) -> tuple[Path, Path] | None:
    for raw in (d, d / "raw", d / "MNIST" / "raw"):
        found = []
        for kind in ("images-idx3", "labels-idx1"):
            stem = raw / f"{prefix}-{kind}-ubyte"
            found += [p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def _find_source(name: str, p: Path) -> Source | None:
    """The first layout of ``name`` found at ``p``, or None."""
    spec = _spec(name)
    if p.is_file():
        if _is_tar_name(p.name) or tarfile.is_tarfile(p):
            return Source("tar", p)
        return Source("npz", p.parent) if name == "omniglot" and p.suffix == ".npz" else None
    if not p.is_dir():
        return None
    if name == "cifar10":
        for d in (p, p / "cifar-10-batches-py"):
            if (d / "batches.meta").is_file():
                return Source("torchvision", d)
    if name == "mnist" and (_mnist_raw(p, "train") or _mnist_raw(p, "t10k")):
        return Source("torchvision", p)
    dirs = [p] + sorted(c for c in p.iterdir() if c.is_dir() and _named_like(name, c.name))
    for d in dirs:
        if any((d / s).is_dir() for s in spec.split_dirs.values()):
            return Source("imagefolder", d)
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and _is_tar_name(f.name) and _named_like(name, f.name):
                return Source("tar", f)
    if name == "omniglot":
        for d in dirs:
            if any((d / f"{s}.npz").is_file() for s in spec.split_dirs.values()):
                return Source("npz", d)
    return None


def _download(name: str, download_dir: Path) -> None:
    import torchvision.datasets  # imported here: slow, and only this fallback needs it

    spec = _spec(name)
    if not spec.torchvision:
        raise DataNotFoundError(f"torchvision has no download of {name}: give its tar or ImageFolder tree")
    for kwargs in spec.tv_kwargs:
        getattr(torchvision.datasets, spec.torchvision)(root=str(download_dir), download=True, **kwargs)


def resolve(name: str, path: str | os.PathLike | None = None,
            download_dir: str | os.PathLike | None = None) -> Source:
    """Find ``name`` by explicit path, then ``$REPRO_DATA_DIR``, then torchvision's download.

    Raises one DataNotFoundError naming all three ways when none of them yields the dataset.
    """
    _spec(name)
    dl = Path(download_dir or DEFAULT_DOWNLOAD_DIR).expanduser()
    env = os.environ.get(ENV_VAR)
    if path is not None:
        if src := _find_source(name, Path(path).expanduser()):
            return src
        notes = (f"{path} holds no {name}", "not consulted (an explicit path was given)",
                 "not tried (an explicit path was given)")
    else:
        if env and (src := _find_source(name, Path(env).expanduser())):
            return src
        if src := _find_source(name, dl):  # an earlier download
            return src
        try:
            _download(name, dl)
            src = _find_source(name, dl)
            error = f"finished, but no {name} files appeared in {dl}"
        except Exception as e:  # any failure (no network, bad checksum) means "not available"
            src, error = None, f"failed: {type(e).__name__}: {e}"
        if src:
            return src
        notes = ("not set", f"{env} holds no {name}" if env else "not set", error)
    raise DataNotFoundError(
        f"dataset {name!r} not found. Provide it one of three ways:\n"
        f"  1. data.paths.{name} in params.yaml (path= / --path): a folder, tar or data root: {notes[0]}\n"
        f"  2. environment variable {ENV_VAR} naming a data root (e.g. ../shared/data): {notes[1]}\n"
        f"  3. torchvision download into {dl} (needs internet): {notes[2]}\n"
        f"Layouts: torchvision's files, an ImageFolder tree <split>/<class>/<image> or a tar of one"
        + (", or images_background.npz / images_evaluation.npz" if name == "omniglot" else ""))


# ---------------------------------------------------------------- archive integrity

def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> str:
    """The hex SHA-256 of a file, read ``chunk`` bytes at a time (archives reach hundreds of MB)."""
    digest, buf = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def known_sha256(path: Path) -> str | None:
    """The offline copy's hash if ``path`` (as given, or resolved) is named like one (:data:`KNOWN_SHA256`)."""
    for parts in (Path(path).parts, Path(path).resolve().parts):
        for key, digest in KNOWN_SHA256.items():
            want = tuple(key.split("/"))
            if parts[-len(want):] == want:
                return digest
    return None


def archive_files(name: str, src: Source, splits: list[str]) -> list[Path]:
    """The single files ``splits`` of ``name`` are read from: the tar, or Omniglot's npz files.

    Folder trees and torchvision's files give none (they are not hashed).
    """
    if src.kind == "tar":
        return [src.path]
    if src.kind == "npz":
        files = [src.path / f"{_spec(name).split_dirs[s]}.npz" for s in splits]
        return [f for f in files if f.is_file()]  # a missing one is reported by the reader
    return []


def verify_archives(files: list[Path], recorded: dict[str, str] | None = None,
                    recorded_in: Path | None = None) -> list[dict]:
    """Hash ``files``; refuse one that differs from its known or recorded SHA-256 (ArchiveHashError).

    A file named like an offline copy must match :data:`KNOWN_SHA256` (``check: known``); any other
    must match ``recorded`` (resolved path -> hash, read from ``recorded_in``) when it is there
    (``check: recorded``). Returns ``[{"path", "sha256", "check"}]`` for ``meta.json``.
    """
    recorded, checked = recorded or {}, []
    for f in files:
        path = str(Path(f).resolve())
        actual = sha256_file(f)
        if (expected := known_sha256(Path(f))) is not None:
            if actual != expected:
                raise ArchiveHashError(Path(f), expected, actual, (
                    f"{f}: SHA-256 mismatch, expected {expected} (the offline copy's, shared.data.KNOWN_SHA256), "
                    f"got {actual}: the file is damaged or not the offline copy. Replace it with a fresh copy "
                    f"of {Path(f).name} from the offline data (../shared/data, see its README.md); if it is "
                    f"your own file, give it another name"))
            check = "known"
        else:
            expected = recorded.get(path)
            if expected is not None and actual != expected:
                out = recorded_in.parent if recorded_in is not None else "the output"
                raise ArchiveHashError(Path(f), expected, actual, (
                    f"{f}: SHA-256 is {actual}, but {expected} was recorded in {recorded_in} when {out} was "
                    f"prepared from it: the file has changed since. Restore the original file; if you "
                    f"replaced it on purpose, delete {out} and prepare again"))
            check = "recorded"
        checked.append({"path": path, "sha256": actual, "check": check})
    return checked


def _recorded_archives(name: str, meta_path: Path) -> list[dict]:
    """The archives an earlier :func:`prepare` of ``name`` recorded in ``meta_path`` (none if unreadable)."""
    try:
        meta = json.loads(meta_path.read_text())
        archives = meta["source"]["archives"] if meta.get("dataset") == name else []
        return [{"path": str(a["path"]), "sha256": str(a["sha256"]), "check": str(a["check"])} for a in archives]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # no earlier output, or one written before hashes were recorded: nothing to compare


# ---------------------------------------------------------------- reading one split

def _decode(data: bytes, where: str, spec: _Spec) -> np.ndarray:
    """One encoded image -> uint8 (C, H, W); raises naming ``where`` on any mismatch."""
    c, h, w = spec.shape
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if spec.to_rgb and mode != "RGB":  # grayscale (L) or CMYK JPEGs: replicate / convert to RGB
                im, mode = im.convert("RGB"), "RGB"
            arr = np.asarray(im.convert("L") if mode == "1" else im)  # bilevel PNGs -> 0/255
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptDataError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e
    want = "RGB" if c == 3 else "L"
    if mode not in ((want, "1") if c == 1 else (want,)) or arr.shape[:2] != (h, w):
        raise CorruptDataError(f"{where}: image is {mode} {arr.shape[1]}x{arr.shape[0]}, "
                               f"expected {want} {w}x{h}")
    arr = arr.transpose(2, 0, 1) if c == 3 else arr[None]
    return 255 - arr if spec.invert else arr


def _list_tree(spec: _Spec, root: Path, split: str) -> list[tuple[tuple[str, ...], str, Path]]:
    top = root / spec.split_dirs[split]
    if not top.is_dir():
        raise DataNotFoundError(f"{top} does not exist: the {split} split is missing from {root}")
    files = top.glob("/".join(["*"] * (spec.class_depth + 1)))
    return [(f.relative_to(top).parts, str(f), f) for f in files
            if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".") and f.is_file()]


def _list_tar(spec: _Spec, tar_path: Path, splits: list[str]) -> dict[str, list]:
    """One streaming pass for all ``splits``, keeping encoded bytes so only selected images get decoded."""
    depth, entries = spec.class_depth, {s: [] for s in splits}
    split_of = {spec.split_dirs[s]: s for s in splits}
    try:
        with tarfile.open(tar_path, "r|*") as tf:
            for m in tf:
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                split = split_of.get(parts[-depth - 2]) if len(parts) >= depth + 2 else None
                if (split is None or not m.isfile() or parts[-1].startswith(".")
                        or os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTS):
                    continue
                where = f"member {m.name!r} of {tar_path}"
                entries[split].append((tuple(parts[-depth - 1:]), where, tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise CorruptDataError(f"{tar_path}: unreadable tar archive ({type(e).__name__}: {e})") from e
    for s, found in entries.items():
        if not found:
            raise DataNotFoundError(f"{tar_path} holds no images under '{spec.split_dirs[s]}/'")
    return entries


def _decode_entries(name: str, split: str, spec: _Spec, origin: Path, entries: list,
                    limit: int | None, progress: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    entries = sorted(entries, key=lambda e: e[0])  # sorted file order, whatever the tar's order
    keys = sorted({e[0][:-1] for e in entries})
    classes = ["/".join(k) for k in keys]
    if spec.classes is not None and tuple(classes) != spec.classes:
        raise CorruptDataError(f"{origin}: {split} classes {classes} are not {name}'s {list(spec.classes)}")
    # select before decoding, so skipped images are never decoded (entries are sorted by class)
    entries = [e for _, group in itertools.groupby(entries, key=lambda e: e[0][:-1])
               for e in itertools.islice(group, limit)]
    index = {k: i for i, k in enumerate(keys)}
    x = np.empty((len(entries), *spec.shape), np.uint8)
    y = np.empty(len(entries), np.int64)
    for i, (parts, where, payload) in enumerate(tqdm(entries, desc=f"{name} {split}", unit="img",
                                                     disable=not progress)):
        x[i] = _decode(payload if isinstance(payload, bytes) else payload.read_bytes(), where, spec)
        y[i] = index[parts[:-1]]
    return x, y, classes


def _first_k(y: np.ndarray, k: int | None) -> np.ndarray:
    """Mask keeping the first ``k`` items of each label in stored order (all when k is None)."""
    keep = np.zeros(len(y), bool)
    for c in np.unique(y):
        keep[np.flatnonzero(y == c)[:k]] = True  # [:None] keeps all
    return keep


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # torchvision's choice: py2 str keys -> str
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise CorruptDataError(f"{path}: unreadable CIFAR-10 pickle ({type(e).__name__}: {e})") from e


def _read_cifar_pickles(d: Path, split: str, limit: int | None):
    names = list(_unpickle(d / "batches.meta")["label_names"])
    if tuple(names) != CIFAR10_CLASSES:
        raise CorruptDataError(f"{d / 'batches.meta'}: label_names {names} are not CIFAR-10's")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for f in files:
        batch = _unpickle(d / f)
        try:
            xs.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], np.int64))
        except (KeyError, ValueError) as e:
            raise CorruptDataError(f"{d / f}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from e
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = _first_k(y, limit)
    return x[keep], y[keep], names


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file of uint8 (magic 0x0000 08 ndim, then big-endian int32 sizes)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise CorruptDataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise CorruptDataError(f"{path}: not a uint8 idx file (magic {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise CorruptDataError(f"{path}: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)


def _read_mnist_idx(d: Path, split: str, limit: int | None):
    files = _mnist_raw(d, "train" if split == "train" else "t10k")
    if files is None:
        raise DataNotFoundError(f"no MNIST {split} idx files under {d} (or its raw/, MNIST/raw/)")
    x, y = _read_idx(files[0])[:, None], _read_idx(files[1]).astype(np.int64)
    if len(x) != len(y) or x.shape[1:] != (1, 28, 28) or y.max(initial=0) > 9:
        raise CorruptDataError(f"{files[0]} / {files[1]}: images {x.shape} and labels {y.shape} do not match")
    keep = _first_k(y, limit)
    return x[keep], y[keep], list(_SPECS["mnist"].classes)


def _read_omniglot_npz(d: Path, split: str, limit: int | None):
    path = d / f"images_{split}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist (the Omniglot {split} split)")
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise CorruptDataError(f"{path}: unreadable Omniglot npz ({type(e).__name__}: {e})") from e
    if images.dtype != bool or images.ndim != 4 or images.shape[2:] != (105, 105) or labels.shape != images.shape[:2]:
        raise CorruptDataError(f"{path}: images {images.dtype} {images.shape} / labels {labels.shape}, "
                               "expected bool (chars, drawers, 105, 105) / (chars, drawers)")
    images, y = images.reshape(-1, 1, 105, 105), labels.reshape(-1).astype(np.int64)
    keep = _first_k(y, limit)
    x = (~images[keep]).astype(np.uint8) * 255  # npz True = white background -> 0; ink -> 255
    return x, y[keep], [str(c) for c in np.unique(y)]


def _read(name: str, splits: list[str], src: Source, limit: int | None, progress: bool) -> dict:
    """{split: (x, y, classes)} for ``splits`` of ``name`` read from ``src``."""
    spec = _spec(name)
    for split in splits:
        if split not in spec.split_dirs:
            raise ValueError(f"{name} has splits {list(spec.split_dirs)}, not {split!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit_per_class must be a positive int or None, got {limit!r}")
    if src.kind == "torchvision":
        reader = _read_cifar_pickles if name == "cifar10" else _read_mnist_idx
        return {s: reader(src.path, s, limit) for s in splits}
    if src.kind == "npz":
        return {s: _read_omniglot_npz(src.path, s, limit) for s in splits}
    if src.kind == "tar":  # a tar is read once for every split: its stream costs seconds
        entries = _list_tar(spec, src.path, splits)
    else:
        entries = {s: _list_tree(spec, src.path, s) for s in splits}
    return {s: _decode_entries(name, s, spec, src.path, entries[s], limit, progress) for s in splits}


def load_split(name: str, split: str, path=None, download_dir=None, limit_per_class: int | None = None,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as uint8 ``(N, C, H, W)`` images and int64 ``(N,)`` labels.

    ``split`` is train/test (cifar10, mnist) or background/evaluation (omniglot).
    ``limit_per_class`` keeps the first k images of each class in sorted file order (stored
    order for torchvision's files and the npz) without decoding the rest.
    """
    src = resolve(name, path, download_dir)
    verify_archives(archive_files(name, src, [split]))
    x, y, _ = _read(name, [split], src, limit_per_class, progress)[split]
    return x, y


# ---------------------------------------------------------------- prepared arrays on disk

def _json_bytes(obj) -> Callable[[BinaryIO], None]:
    return lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode())


def prepare(name: str, out_dir, path=None, download_dir=None, limit_per_class: int | None = None,
            progress: bool = True) -> dict:
    """Write ``<out_dir>/<split>.npz`` (x, y, classes) for every split and ``meta.json``; return meta.

    The source's archives are checked first (:func:`verify_archives`): an offline copy against its
    known hash, any other archive against the hash an earlier prepare of ``out_dir`` recorded in its
    ``meta.json`` (a different archive than that one is a warning). ``meta["source"]["archives"]``
    records path, SHA-256 and check of each.

    Every split is read into memory before the first write, and files are staged as temp files
    then renamed, so a failure while writing leaves ``out_dir`` as it was (if a rename itself fails,
    the files of this call are removed rather than left mixed with older ones).
    """
    src = resolve(name, path, download_dir)
    out = Path(out_dir)
    spec = _spec(name)
    splits = list(spec.split_dirs)
    previous = _recorded_archives(name, out / "meta.json")
    archives = verify_archives(archive_files(name, src, splits), {a["path"]: a["sha256"] for a in previous},
                               out / "meta.json")
    before = {(a["path"], a["sha256"]) for a in previous}
    now = {(a["path"], a["sha256"]) for a in archives}
    if before and not before <= now:
        print(f"warning: {out} was prepared from {', '.join(f'{p} (sha256 {h})' for p, h in sorted(before))}; "
              f"preparing it now from {', '.join(f'{p} (sha256 {h})' for p, h in sorted(now)) or src.path}",
              file=sys.stderr)
    arrays = _read(name, splits, src, limit_per_class, progress)
    meta = {"dataset": name, "source": {"kind": src.kind, "path": str(src.path.resolve()), "archives": archives},
            "limit_per_class": limit_per_class, "classes": None if spec.classes is None else list(spec.classes),
            "splits": {s: {"count": len(y), "x_shape": list(x.shape), "y_shape": list(y.shape),
                           "n_classes": len(c), "per_class": np.bincount(y).tolist()}
                       for s, (x, y, c) in arrays.items()}}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    replaced = False
    try:
        for s, (x, y, classes) in arrays.items():
            write = lambda f, x=x, y=y, c=classes: np.savez(f, x=x, y=y, classes=np.array(c, dtype=str))
            staged.append((write_temp(out / f"{s}.npz", write), out / f"{s}.npz"))
        staged.append((write_temp(out / "meta.json", _json_bytes(meta)), out / "meta.json"))
        for tmp, final in staged:
            replace_temp(tmp, final)
            replaced = True
    except BaseException:
        for tmp, final in staged:
            tmp.unlink(missing_ok=True)
            if replaced:  # new files beside old ones would be a dataset that never existed
                final.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return meta


def load_prepared(out_dir, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<out_dir>/<split>.npz`` written by :func:`prepare` as (x uint8, y int64)."""
    p = Path(out_dir) / f"{split}.npz"
    how = (f"make it with `python -m shared.prepare dataset <dataset> --out {out_dir}` "
           "or `dvc repro prepare@<dataset>`")
    if not p.is_file():
        raise DataNotFoundError(f"{p} does not exist: {how}")
    try:
        with np.load(p, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise CorruptDataError(f"{p}: unreadable prepared file ({type(e).__name__}: {e}); delete it and {how}") from e
    if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),):
        raise CorruptDataError(f"{p}: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}; expected uint8 NCHW and int64 (N,)")
    return x, y


# ---------------------------------------------------------------- subsets

def evenly_spaced(n_total: int, n: int | None = None) -> torch.Tensor:
    """``min(n, n_total)`` row positions spread evenly over ``0 .. n_total - 1`` (all of them for None): a look at a
    class-ordered split that is not a few classes only (sample grids, held-out slices)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.linspace(0, n_total - 1, n).round().long().unique()


def stratified_subset(labels, per_class: int, seed: int) -> np.ndarray:
    """Sorted int64 indices holding exactly ``per_class`` items of every class, drawn without
    replacement by ``np.random.default_rng(seed)`` class by class in sorted label order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} items, fewer than per_class={per_class}")
        chosen.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, np.int64)


def save_indices(path, indices, meta: dict | None = None) -> None:
    """Atomically write indices to ``.npy`` (meta beside it in ``<path>.json``) or ``.json``."""
    path, indices = Path(path), np.asarray(indices, np.int64)
    if path.suffix == ".json":
        atomic_write(path, _json_bytes({"indices": indices.tolist(), "meta": meta or {}}))
    elif path.suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, indices))
        if meta is not None:
            atomic_write(path.with_name(path.name + ".json"), _json_bytes(meta))
    else:
        raise ValueError(f"{path}: indices are saved as .npy or .json")


def load_indices(path) -> np.ndarray:
    """The int64 indices written by :func:`save_indices`."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist: make it with `python -m shared.prepare subset <name> "
                                f"--prepared <prepared dataset> --out {path}` or `dvc repro subset@<name>`")
    try:
        indices = (np.asarray(json.loads(path.read_text())["indices"], np.int64) if path.suffix == ".json"
                   else np.load(path, allow_pickle=False))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptDataError(f"{path}: unreadable index file ({type(e).__name__}: {e})") from e
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or (indices < 0).any():
        raise CorruptDataError(f"{path}: expected 1-D non-negative integers, got {indices.dtype} {indices.shape}")
    return indices.astype(np.int64)


# ---------------------------------------------------------------- device-resident loader

class DeviceLoader:
    """The whole dataset as a uint8 tensor on ``device``, served in index-gathered batches.

    A batch is ``(x, y, index)``: uint8 images, int64 labels and the int64 rows of ``x`` they
    came from (on ``device``), so a view source can look up per-sample precomputed views.

    Epoch ``e`` is shuffled by a CPU ``torch.Generator`` seeded with ``seed + e`` (CPU so the
    order does not depend on the device), so a run resumed at epoch e sees exactly the
    batches it would have seen. Call ``set_epoch`` before each epoch; iteration does not
    advance it. ``indices`` restricts the loader to a subset of the rows.
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, indices=None, device: str | torch.device = "cpu"):
        self.x = torch.as_tensor(x).to(device)
        self.y = torch.as_tensor(y, dtype=torch.int64).to(device)
        if self.x.dtype != torch.uint8 or self.x.ndim != 4 or self.y.shape != (len(self.x),):
            raise ValueError(f"need uint8 (N, C, H, W) images and (N,) labels, got x {self.x.dtype} "
                             f"{tuple(self.x.shape)}, y {tuple(self.y.shape)}")
        # indices stay on the CPU beside the CPU permutation; batches are gathered on the device
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.int64).cpu()
        if self.indices is not None and len(self.indices) and not (
                0 <= int(self.indices.min()) and int(self.indices.max()) < len(self.x)):
            raise ValueError(f"indices must lie in [0, {len(self.x)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.device, self.epoch = self.x.device, 0

    @classmethod
    def from_prepared(cls, out_dir, split: str, device, indices=None, **kw) -> "DeviceLoader":
        """Loader over a prepared split; ``indices`` may be an array or an index file's path."""
        if isinstance(indices, (str, os.PathLike)):
            indices = load_indices(indices)
        x, y = load_prepared(out_dir, split)
        return cls(x, y, device=device, indices=indices, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _n(self) -> int:
        return len(self.x) if self.indices is None else len(self.indices)

    def __len__(self) -> int:
        return self._n() // self.batch_size if self.drop_last else math.ceil(self._n() / self.batch_size)

    def __iter__(self):
        n = self._n()
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        if self.indices is not None:
            order = self.indices[order]
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx), idx
