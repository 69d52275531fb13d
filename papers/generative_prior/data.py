"""The SSL training set and the test set of generative_prior, as the prepare stage writes them.

`<data_dir>/train.npz` holds the SSL training set (a stratified subset of CIFAR-10 train at mini; all of it at
paper scale): ``x`` uint8 (N, 3, 32, 32), ``y`` int64 (N,), ``source_index`` int64 (N,), the row of each image in
the prepared CIFAR-10 train split. Row i of this file is dataset index i everywhere downstream (the loader's
``index``, the precomputed Langevin views). `<data_dir>/test.npz` holds the test set the same way. Both the EBM
and the GAN are trained on the training set (unlabelled): the priors see no image the encoder does not.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from shared import data

SPLITS = ("train", "test")
STAGE = "papers/generative_prior/dvc.yaml:prepare"


def split_file(data_dir: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(data_dir) / f"{split}.npz"


def save(x: np.ndarray, y: np.ndarray, source_index: np.ndarray, f) -> None:
    """Write one split's arrays to the open file ``f`` (the caller makes it atomic)."""
    np.savez(f, x=x, y=y, source_index=source_index)


def load(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of ``split``: uint8 (N, 3, H, W) and int64 (N,) CPU tensors."""
    x, y, _ = load_arrays(data_dir, split)
    return torch.from_numpy(x), torch.from_numpy(y)


def load_arrays(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, source_index)`` of ``split`` as numpy arrays, checked."""
    path = split_file(data_dir, split)
    how = f"run `dvc repro {STAGE}` or `python -m papers.generative_prior.prepare --out {data_dir}`"
    if not path.is_file():
        raise data.DataNotFoundError(f"{path} does not exist: {how}")
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y, source_index = z["x"], z["y"], z["source_index"]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise data.CorruptDataError(f"{path}: unreadable ({type(e).__name__}: {e}); delete it and {how}") from e
    if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),) \
            or source_index.shape != (len(x),):
        raise data.CorruptDataError(f"{path}: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}, source_index "
                                    f"{source_index.shape}; expected uint8 NCHW, int64 (N,) and (N,); {how}")
    return x, y, source_index
