"""Precomputed views: generated images written once by a DVC stage (`write_precomputed`), memory-mapped
and looked up by dataset row (`PrecomputedViews`), each row tied to its source image by a fingerprint
(`row_fingerprints`) checked on every lookup."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from shared.io import atomic_write_many
from shared.view_sources.protocol import check_index


# ---------------------------------------------------------------- fingerprints

# Fixed forever: changing either breaks every stored fingerprint (they record both and are checked).
FINGERPRINT_SEED = 0x5EED
FINGERPRINT_BITS = 16
FINGERPRINT_COLUMNS = 2
_weights_cache: dict[tuple[int, torch.device], Tensor] = {}


def row_fingerprints(x: Tensor) -> Tensor:
    """A per-row fingerprint of uint8 images: int64 ``(N, 2)``, identical on every device.

    Two fixed seeded projections of the pixels with integer weights in [0, 2^16),
    computed in float64: every product and partial sum is an integer below 2^53, so
    the result is exact whatever the summation order (CPU, CUDA) and two different
    images collide with probability about 2^-32. Float images in [0, 1] are rounded
    back to their uint8 values first.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if x.is_floating_point():
        flat = (flat.detach() * 255).round()
    elif x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    d = flat.shape[1]
    if 255 * (2 ** FINGERPRINT_BITS) * d >= 2 ** 53:
        raise ValueError(f"images of {d} values per row are too large to fingerprint exactly")
    key = (d, x.device)
    if key not in _weights_cache:
        g = torch.Generator().manual_seed(FINGERPRINT_SEED)
        w = torch.randint(0, 2 ** FINGERPRINT_BITS, (d, FINGERPRINT_COLUMNS), generator=g)
        _weights_cache[key] = w.to(device=x.device, dtype=torch.float64)
    with torch.autocast(x.device.type, enabled=False):
        return (flat.to(torch.float64) @ _weights_cache[key]).long()


def _fingerprint_spec() -> dict:
    return {"kind": "float64 integer projection", "seed": FINGERPRINT_SEED, "bits": FINGERPRINT_BITS,
            "columns": FINGERPRINT_COLUMNS}


# ---------------------------------------------------------------- precomputed views

FORMAT = "precomputed-views/1"
PROBE_ROWS = 3  # rows hashed into the meta file to tie it to its image array


def precomputed_files(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(images, fingerprints, meta) files of a precomputed set: ``x.npy``, ``x.fingerprint.npy``, ``x.meta.json``.

    List all three as the stage's ``outs`` in ``dvc.yaml``.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"precomputed images must be a .npy file, got {path}")
    stem = path.with_suffix("")
    return path, stem.with_name(stem.name + ".fingerprint.npy"), stem.with_name(stem.name + ".meta.json")


def _probe_hash(images: np.ndarray) -> str:
    n = images.shape[0]
    rows = sorted({0, n // 2, n - 1}) if n else []
    h = hashlib.sha256()
    for i in rows:
        h.update(np.ascontiguousarray(images[i]).tobytes())
    return h.hexdigest()


def _as_uint8_array(name: str, a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"{name} must be uint8 (N, C, H, W) (lossless), got {a.dtype} of shape {a.shape}")
    return a


def _fingerprints_of(images: np.ndarray, chunk: int = 1024) -> np.ndarray:
    out = [row_fingerprints(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk]))).numpy()
           for i in range(0, images.shape[0], chunk)]
    return np.concatenate(out) if out else np.zeros((0, FINGERPRINT_COLUMNS), np.int64)


def write_precomputed(path: str | os.PathLike, generated: Tensor | np.ndarray, source_images: Tensor | np.ndarray,
                      meta: Mapping[str, Any] | None = None) -> None:
    """Store one generated image per source row, with the sources' row fingerprints, atomically.

    `generated`: uint8 (N, C, H, W); `source_images`: the uint8 (N, C', H', W') rows they
    were made from, in the training dataset's row order (row i of `generated` belongs to
    dataset row i). Writes `precomputed_files(path)`; `meta` (JSON-able: generator,
    seed, settings) is stored under ``"meta"``. All three files are written to temp
    files first and renamed only when all are complete, the image array last; on any
    error no new file is left behind.
    """
    generated = _as_uint8_array("generated", generated)
    source_images = _as_uint8_array("source_images", source_images)
    if generated.shape[0] != source_images.shape[0]:
        raise ValueError(f"generated has {generated.shape[0]} rows but source_images has {source_images.shape[0]}: "
                         f"one generated image per source row")
    images_path, fp_path, meta_path = precomputed_files(path)
    fingerprints = _fingerprints_of(source_images)
    record = {"format": FORMAT, "rows": int(generated.shape[0]), "shape": list(generated.shape[1:]),
              "dtype": "uint8", "source_shape": list(source_images.shape[1:]), "fingerprint": _fingerprint_spec(),
              "fingerprint_sha256": hashlib.sha256(fingerprints.tobytes()).hexdigest(),
              "probe_sha256": _probe_hash(generated), "meta": dict(meta or {})}
    meta_bytes = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()  # fails before any file is made

    # the images last: a reader that finds them finds the matching sidecars
    atomic_write_many({fp_path: lambda f: np.save(f, fingerprints), meta_path: lambda f: f.write(meta_bytes),
                       images_path: lambda f: np.save(f, generated)})


class PrecomputedViews:
    """Generated images precomputed by a DVC stage, looked up by dataset row ``index``.

    ``generated(x, index)`` returns the stored rows ``index`` as float in [0, 1] on
    ``x``'s device; ``views(x, index)`` returns them as a single view (pair them with
    originals through `GammaMix`). The image array is memory-mapped; the fingerprints
    (16 bytes a row) are held on the device. With ``verify`` (default) every lookup
    recomputes the fingerprints of the batch's source images ``x`` and compares them
    with those stored for ``index``, so a misaligned or shuffled index, or a dataset
    whose order changed since the stage ran, raises instead of silently pairing images
    with other images' augmentations. Measured on one CPU thread for a 128 x 3 x 64 x 64
    batch: 2-3 ms, against 0.26 s for its two SimCLR views and 5 s for a ResNet-18
    (width 0.25) step on them. `stage` names the DVC stage that writes the file, for
    the error on a missing file.
    """

    def __init__(self, path: str | os.PathLike, stage: str | None = None, verify: bool = True):
        self.path, fp_path, meta_path = precomputed_files(path)
        self.stage = stage
        self.verify = verify
        how = (f"it is made by the DVC stage {stage!r} (run `dvc repro {stage}`)" if stage
               else "it is made by the DVC stage that lists it in outs (see the paper's dvc.yaml)")
        for p in (self.path, fp_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"precomputed views file {p} not found: {how}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}; {how}")
        self.images = np.load(self.path, mmap_mode="r")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.path}: expected uint8 (N, C, H, W), got {self.images.dtype} "
                             f"of shape {self.images.shape}")
        expected = (self.meta["rows"], *self.meta["shape"])
        if self.images.shape != expected or _probe_hash(self.images) != self.meta["probe_sha256"]:
            raise ValueError(f"{self.path} does not match {meta_path} (shape {self.images.shape} vs {expected}, "
                             f"or different content): written by two different runs; {how}")
        fingerprints = np.load(fp_path)
        if (fingerprints.shape != (self.images.shape[0], FINGERPRINT_COLUMNS)
                or hashlib.sha256(fingerprints.tobytes()).hexdigest() != self.meta["fingerprint_sha256"]):
            raise ValueError(f"{fp_path} does not match {meta_path}; {how}")
        if self.meta["fingerprint"] != _fingerprint_spec():
            raise ValueError(f"{fp_path} was written with fingerprint {self.meta['fingerprint']}, "
                             f"this code computes {_fingerprint_spec()}; {how}")
        self.source_shape = tuple(self.meta["source_shape"])
        self._fingerprints = torch.from_numpy(fingerprints)
        self._how = how

    def __len__(self) -> int:
        return self.images.shape[0]

    def _stored_fingerprints(self, device: torch.device) -> Tensor:
        if self._fingerprints.device != device:
            self._fingerprints = self._fingerprints.to(device)
        return self._fingerprints

    def check_alignment(self, x: Tensor, index: Tensor) -> None:
        """Raise if ``x`` are not the source images the stage stored for rows ``index``."""
        if tuple(x.shape[1:]) != self.source_shape:
            raise ValueError(f"{self.path} was written from source images of shape {self.source_shape}, "
                             f"the batch's are {tuple(x.shape[1:])}: a different dataset or preparation")
        wrong = (row_fingerprints(x) != self._stored_fingerprints(x.device)[index]).any(dim=1)
        if bool(wrong.any()):
            pos = torch.nonzero(wrong).squeeze(1)
            raise ValueError(
                f"{self.path}: {pos.numel()} of {x.shape[0]} batch images are not the source images stored for "
                f"their index (batch positions {pos[:5].tolist()}, dataset rows {index[pos[:5]].tolist()}): the "
                f"index is misaligned or shuffled, or the dataset's row order changed since the file was written; "
                f"{self._how}")

    def generated(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        check_index(x, index)
        rows = index.cpu().numpy()
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path} holds rows 0..{len(self) - 1}, asked for {rows.min()}..{rows.max()}")
        if self.verify:
            self.check_alignment(x, index)
        out = torch.from_numpy(self.images[rows]).to(x.device, non_blocking=True)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return out.to(dtype) / 255

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        return [self.generated(x, index, generator)]
