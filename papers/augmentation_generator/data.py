"""The EMNIST-Omniglot data of Table 1: X_p, the Omniglot drawer split and the dotted copies X^D.

- X_p (pre-training): MNIST train, standing in for EMNIST ByClass (no offline copy), uint8 (N, 1, 28, 28),
  ink bright (255) on 0.
- Omniglot: both npz splits (background 964 + evaluation 659 characters) as one set of 1,623 characters,
  the evaluation split's labels offset by the background's character count. Images are 105 x 105 with
  ink 255 on 0 (``shared.data``'s polarity, which is MNIST's), shrunk to ``size`` x ``size`` by an exact
  area (box) average. The prepared arrays are character-major, so image ``i`` of the combined set is
  drawer ``i % 20`` of character ``i // 20``: that ``i`` is the image's *index*, which seeds its dots.
- The drawer split (unstated in the paper; spec 2.C): per character, ``fine_drawers`` (15) drawers for
  fine-tuning (X_f) and the other 5 for testing (X_t): 24,345 / 8,115 images on the full data.
- X^D: every image with n ~ U{count_min, ..., count_max} filled square dots drawn in ink (the paper's
  Fig. 4 is missing; count, size and ink are ours, fixed and never tuned). Only the dotted fine-tuning
  images X~_f = X_f^D train anything; X_f^C is kept for checks of the eliminator G_E, X_t^C / X_t^D for
  the D -> C / D -> D columns.

The dots of image ``i`` are a pure function of ``(dots.seed, i)`` (a counter-based hash, not a stateful
generator), so they do not depend on the batch an image is drawn in, its order, the split rule or how
many characters a scale keeps.
"""
from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from papers.augmentation_generator.config import DataConfig, DotsConfig
from shared import data

DRAWERS = 20  # Omniglot: every character drawn once by each of 20 people
OMNIGLOT_SPLITS = ("background", "evaluation")
OMNIGLOT_SIZE = 105
BACKGROUND_CHARACTERS, EVALUATION_CHARACTERS = 964, 659  # the offline npz pair's (and torchvision's)
CHARACTERS = BACKGROUND_CHARACTERS + EVALUATION_CHARACTERS  # 1,623 classes
SPLITS_FILE = "splits.npz"
STAGE = "papers/augmentation_generator/dvc.yaml:prepare"  # the stage that writes SPLITS_FILE
_RESIZE_CHUNK = 2048  # images per area-resize matmul (2048 x 105 x 105 float32: 90 MB)
_DOTS_CHUNK = 4096


# ---------------------------------------------------------------- counter-based uniforms

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (2^64 / golden ratio)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 that scrambles every input bit into every output bit."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2^64 on purpose
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def counter_uniforms(seed: int, keys, n: int, stream: int = 0) -> np.ndarray:
    """float64 ``(len(keys), n)`` uniforms in [0, 1); row k depends only on ``(seed, stream, keys[k])``.

    Value j of key k is the SplitMix64 hash of (seed, stream, key, j): a counter-based generator, so a
    key's draws are the same whatever other keys are asked for with it and in whatever order.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if keys.ndim != 1 or (keys < 0).any():
        raise ValueError(f"keys must be 1-D non-negative integers, got shape {keys.shape}")
    with np.errstate(over="ignore"):
        root = _mix64(np.asarray([seed % 2**64], np.uint64) * _GOLDEN + np.uint64(stream % 2**64))
        per_key = _mix64(root ^ _mix64((keys.astype(np.uint64) + np.uint64(1)) * _GOLDEN))
        counters = _mix64((np.arange(n, dtype=np.uint64) + np.uint64(1)) * _GOLDEN + np.uint64(0x632BE59BD9B4E019))
        h = _mix64(per_key[:, None] ^ counters[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # the top 53 bits: exact doubles in [0, 1)


# ---------------------------------------------------------------- resize and polarity

def area_weights(n_in: int, n_out: int) -> Tensor:
    """float64 ``(n_out, n_in)``: output pixel i averages the input over [i, i + 1) * n_in / n_out,
    each input pixel weighted by the length of its overlap with that window (rows sum to 1)."""
    scale = n_in / n_out
    start = torch.arange(n_out, dtype=torch.float64)[:, None] * scale
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(j + 1, start + scale) - torch.maximum(j, start)).clamp(min=0)
    return overlap / scale


def area_resize(images: Tensor, size: int) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> uint8 ``(N, C, size, size)`` by the exact area average (a box filter with
    fractional pixel overlaps, OpenCV's INTER_AREA when shrinking), rounded to nearest.

    Antialiased by construction: every input pixel contributes to the outputs in proportion to the area
    it covers, so the image mean is kept (up to rounding). A separable matmul per chunk of images.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"area_resize needs uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"area_resize only shrinks: {h} x {w} -> {size} x {size}")
    wh, ww = area_weights(h, size).float(), area_weights(w, size).float()
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    chunks = range(0, len(images), _RESIZE_CHUNK)
    for s in tqdm(chunks, desc=f"resize {h}->{size}", disable=len(chunks) < 4, leave=False):
        x = images[s:s + _RESIZE_CHUNK].float()
        out[s:s + _RESIZE_CHUNK] = (wh @ x @ ww.T).round_().clamp_(0, 255).to(torch.uint8)
    return out


def polarity(images: Tensor) -> dict[str, float]:
    """How ink sits in uint8 images: the fraction of pixels >= 128 (``ink_fraction``), the mean of the
    border pixels and the most common value (``background``). Bright ink on 0 gives a small ink
    fraction, a dark border and background 0."""
    x = images.reshape(-1, *images.shape[-2:])
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    return {"ink_fraction": float((x >= 128).float().mean()),
            "mean": float(x.float().mean()),
            "border_mean": float(border.float().mean()),
            "background": int(torch.bincount(x.reshape(-1), minlength=256).argmax())}


def check_polarity(images: Tensor, name: str) -> dict[str, float]:
    """:func:`polarity` of ``images``; raises unless the strokes are the bright values on a 0 background."""
    stats = polarity(images)
    if stats["background"] != 0 or stats["ink_fraction"] >= 0.5 or stats["border_mean"] >= 64:
        raise data.CorruptDataError(
            f"{name}: the ink is not bright on a dark background ({stats}); MNIST's polarity (ink 255 on 0) "
            "is what every image of this package must have")
    return stats


# ---------------------------------------------------------------- Omniglot

def _omniglot_split(prepared: Path, split: str) -> tuple[Tensor, np.ndarray]:
    x, y = data.load_prepared(prepared, split)
    chars = len(y) // DRAWERS
    if x.shape[1:] != (1, OMNIGLOT_SIZE, OMNIGLOT_SIZE) or len(y) % DRAWERS or not np.array_equal(
            y, np.repeat(np.arange(chars), DRAWERS)):
        raise data.CorruptDataError(
            f"{prepared / f'{split}.npz'}: expected Omniglot images (N, 1, 105, 105), character-major with all "
            f"{DRAWERS} drawers of each character (labels 0, 0, ..., 1, ...), got x {x.shape}, labels "
            f"{y[:3].tolist()}...: prepare it with no limit_per_class below {DRAWERS} "
            f"(`python -m shared.prepare dataset omniglot --out {prepared}`)")
    return torch.from_numpy(x), y


def load_omniglot(prepared, size: int = 28, limit_characters: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor, int]:
    """Both prepared Omniglot splits as one character-major set: ``(x, y, index, background_characters)``.

    ``x`` uint8 ``(N, 1, size, size)`` (area-resized), ``y`` int64 the character (evaluation labels offset
    by the background's character count), ``index`` int64 the position in the full combined set
    (``drawer = index % 20``, ``y = index // 20``). ``limit_characters`` keeps the first characters.
    """
    prepared = Path(prepared)
    (xb, yb), (xe, ye) = (_omniglot_split(prepared, s) for s in OMNIGLOT_SPLITS)
    n_background = len(yb) // DRAWERS
    y = torch.from_numpy(np.concatenate([yb, ye + n_background]))
    keep = len(y) if limit_characters is None else min(len(y), limit_characters * DRAWERS)
    x = torch.cat([xb, xe[:max(0, keep - len(xb))]])[:keep]
    return area_resize(x, size), y[:keep], torch.arange(keep, dtype=torch.int64), n_background


def fine_mask(index, fine_drawers: int, rule: str, seed: int = 0) -> np.ndarray:
    """bool mask over ``index`` (combined-set positions): True for the fine-tuning drawers.

    ``first``: drawers 0 .. fine_drawers - 1 of every character. ``seeded``: for each character, the
    ``fine_drawers`` drawers with the smallest of 20 counter-based uniforms keyed by (seed, character),
    so a character's split depends on nothing but the seed and the character.
    """
    index = np.asarray(index, np.int64)
    drawer, character = index % DRAWERS, index // DRAWERS
    if not 1 <= fine_drawers < DRAWERS:
        raise ValueError(f"fine_drawers must be in [1, {DRAWERS - 1}], got {fine_drawers}")
    if rule == "first":
        return drawer < fine_drawers
    if rule == "seeded":
        chars = np.unique(character)
        rank = np.argsort(np.argsort(counter_uniforms(seed, chars, DRAWERS, stream=1), axis=1), axis=1)
        return rank[np.searchsorted(chars, character), drawer] < fine_drawers
    raise ValueError(f"unknown drawer_split {rule!r} (first, seeded)")


# ---------------------------------------------------------------- dots

def dot_layout(indices, cfg: DotsConfig, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(count (N,), rows (N, K), cols (N, K))`` of the dots of images ``indices``, K = count_max; slot
    k < count[i] of image i is a dot with top-left corner (rows, cols), wholly inside the image."""
    if cfg.size > min(height, width):
        raise ValueError(f"dots.size {cfg.size} exceeds the {height} x {width} images")
    k = cfg.count_max
    u = counter_uniforms(cfg.seed, indices, 1 + 2 * k)
    count = cfg.count_min + np.floor(u[:, 0] * (cfg.count_max - cfg.count_min + 1)).astype(np.int64)
    rows = np.floor(u[:, 1:1 + k] * (height - cfg.size + 1)).astype(np.int64)
    cols = np.floor(u[:, 1 + k:] * (width - cfg.size + 1)).astype(np.int64)
    return count, rows, cols


def dot_masks(indices, cfg: DotsConfig, height: int, width: int) -> Tensor:
    """bool ``(N, height, width)``: the pixels the dots of images ``indices`` cover."""
    count, rows, cols = (torch.from_numpy(a) for a in dot_layout(indices, cfg, height, width))
    active = (torch.arange(cfg.count_max)[None, :] < count[:, None]).float()  # (N, K)
    span = torch.arange(cfg.size)
    on_rows = torch.zeros(len(count), cfg.count_max, height)  # (N, K, H): dot k spans these rows
    on_rows.scatter_(2, rows[:, :, None] + span, 1.0)
    on_cols = torch.zeros(len(count), cfg.count_max, width)
    on_cols.scatter_(2, cols[:, :, None] + span, 1.0)
    # pixel (h, w) is covered if some active dot spans both its row and its column
    return torch.bmm((on_rows * active[:, :, None]).transpose(1, 2), on_cols) > 0


def add_dots(images: Tensor, indices, cfg: DotsConfig) -> Tensor:
    """A dotted copy of uint8 ``(N, C, H, W)`` ``images`` (``images`` is not changed).

    Image i gets n ~ U{count_min, ..., count_max} squares of side ``cfg.size`` at uniform positions,
    every channel set to ``cfg.ink``; what is drawn depends only on ``(cfg.seed, indices[i])``.
    """
    indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
    if images.dtype != torch.uint8 or images.ndim != 4 or indices.shape != (len(images),):
        raise ValueError(f"add_dots needs uint8 (N, C, H, W) images and (N,) indices, got {images.dtype} "
                         f"{tuple(images.shape)} and {tuple(indices.shape)}")
    out = images.clone()
    h, w = images.shape[-2:]
    for s in range(0, len(images), _DOTS_CHUNK):
        mask = dot_masks(indices[s:s + _DOTS_CHUNK].numpy(), cfg, h, w).to(images.device)
        out[s:s + _DOTS_CHUNK].masked_fill_(mask[:, None], cfg.ink)
    return out


# ---------------------------------------------------------------- X_p

def load_pretrain(prepared_mnist, cfg: DataConfig) -> tuple[Tensor, Tensor]:
    """X_p: the prepared MNIST train split (EMNIST ByClass stand-in), optionally ``pretrain_limit_per_class``
    images per class (a stratified draw, seed 0)."""
    if cfg.pretrain_set == "emnist":
        raise ValueError(
            "data.pretrain_set: emnist (EMNIST ByClass, the paper's X_p) has no offline copy and shared.data "
            "cannot read it; supply it yourself (e.g. torchvision.datasets.EMNIST(split='byclass') on a "
            "machine with internet, added as a dataset to shared.data) or use pretrain_set: mnist")
    x, y = data.load_prepared(prepared_mnist, "train")
    if x.shape[1:] != (1, 28, 28):
        raise data.CorruptDataError(f"{Path(prepared_mnist) / 'train.npz'}: x {x.shape} is not MNIST's (N, 1, 28, 28)")
    if cfg.pretrain_limit_per_class is not None:
        keep = data.stratified_subset(y, cfg.pretrain_limit_per_class, seed=0)
        x, y = x[keep], y[keep]
    return torch.from_numpy(x), torch.from_numpy(y)


# ---------------------------------------------------------------- the splits

@dataclasses.dataclass
class Splits:
    """Every image set of the package, in index order, as CPU tensors.

    ``fine_dotted[i]`` is ``fine_clean[i]`` with its dots, both of class ``fine_y[i]`` and combined-set
    position ``fine_index[i]`` (drawer ``fine_index % 20``); the same for the test set. Images are uint8
    ``(N, 1, size, size)``, labels and indices int64 ``(N,)``.

    - ``xp``, ``yp``: X_p (MNIST train; labels 0-9, never used to train F).
    - ``fine_dotted``: X~_f = X_f^D, the only fine-tuning images anything is trained on.
    - ``fine_clean``: X_f^C, for evaluating the eliminator G_E only (the paper cannot observe it).
    - ``test_clean`` / ``test_dotted``: X_t^C / X_t^D, the D -> C and D -> D test sets.
    - ``n_classes``: the number of Omniglot characters (1,623 on the full data); labels lie in [0, n_classes).
    """
    xp: Tensor
    yp: Tensor
    fine_dotted: Tensor
    fine_clean: Tensor
    fine_y: Tensor
    fine_index: Tensor
    test_clean: Tensor
    test_dotted: Tensor
    test_y: Tensor
    test_index: Tensor
    n_classes: int

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`shared.data.CorruptDataError` naming the first field of the wrong dtype or shape."""
        def fail(name, want):
            value = getattr(self, name)
            raise data.CorruptDataError(f"'{name}' is {getattr(value, 'dtype', type(value).__name__)} "
                                        f"{tuple(getattr(value, 'shape', ()))}, expected {want}")

        ref = self.fine_dotted
        size = tuple(ref.shape[2:]) if isinstance(ref, Tensor) and ref.ndim == 4 else None
        groups = (("fine_dotted", "fine_y", "fine_index"), ("fine_clean", "fine_y", None), ("xp", "yp", None),
                  ("test_clean", "test_y", "test_index"), ("test_dotted", "test_y", None))
        for images, labels, index in groups:
            x = getattr(self, images)
            if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 1 \
                    or tuple(x.shape[2:]) != size:
                fail(images, "uint8 (N, 1, H, W)" + (f" with H, W = {size} as 'fine_dotted'" if size else ""))
            for name in (labels, index):
                v = getattr(self, name) if name else None
                if name and (not isinstance(v, Tensor) or v.dtype != torch.int64 or tuple(v.shape) != (len(x),)):
                    fail(name, f"int64 ({len(x)},), one per image of '{images}'")
        for split in ("fine", "test"):
            y = getattr(self, f"{split}_y")
            if len(y) and not 0 <= int(y.min()) <= int(y.max()) < self.n_classes:
                raise data.CorruptDataError(f"'{split}_y' holds labels outside [0, {self.n_classes})")
            if not torch.equal(y, getattr(self, f"{split}_index") // DRAWERS):
                raise data.CorruptDataError(f"'{split}_y' is not '{split}_index' // {DRAWERS} "
                                            "(labels and images out of step)")

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}


def build_splits(xp: Tensor, yp: Tensor, omniglot: Tensor, labels: Tensor, index: Tensor,
                 cfg: DataConfig, n_background: int | None = None) -> Splits:
    """X_p as given; the Omniglot images split by drawer (``cfg.drawer_split``) and dotted (``cfg.dots``).

    With ``cfg.background_in_xp`` the images of the first ``n_background`` characters (the background
    alphabets, all 20 drawers, clean) join X_p, labelled ``10 + character`` (X_p's labels train nothing),
    and only the other characters (the evaluation alphabets) are split into X_f / X_t; their labels stay
    the combined-set characters, so ``n_classes`` is still the combined set's.
    """
    if tuple(xp.shape[2:]) != tuple(omniglot.shape[2:]):
        raise ValueError(f"data.size {omniglot.shape[-1]}: X_p is {tuple(xp.shape[2:])}, Omniglot would be "
                         f"{tuple(omniglot.shape[2:])}; the encoder sees both, so they must match")
    n_classes = int(labels.max()) + 1
    if cfg.background_in_xp:
        if n_background is None:
            raise ValueError("data.background_in_xp needs the number of background characters")
        background = labels < n_background
        if background.all():
            raise ValueError(f"data.background_in_xp: the {int(labels.max()) + 1} Omniglot characters kept are all "
                             f"background ones (the first {n_background}): raise or remove "
                             "data.omniglot_limit_characters so that evaluation characters remain")
        xp = torch.cat([xp, omniglot[background]])
        yp = torch.cat([yp, 10 + labels[background]])
        omniglot, labels, index = omniglot[~background], labels[~background], index[~background]
    fine = torch.from_numpy(fine_mask(index.numpy(), cfg.fine_drawers, cfg.drawer_split, cfg.split_seed))
    dotted = add_dots(omniglot, index, cfg.dots)
    return Splits(xp=xp, yp=yp, fine_dotted=dotted[fine], fine_clean=omniglot[fine], fine_y=labels[fine],
                  fine_index=index[fine], test_clean=omniglot[~fine], test_dotted=dotted[~fine],
                  test_y=labels[~fine], test_index=index[~fine], n_classes=n_classes)


def save_splits(splits: Splits, f) -> None:
    """Write ``splits`` as one compressed npz (arrays named as the fields) to the open binary file ``f``."""
    np.savez_compressed(f, **splits.arrays())


def load_splits(data_dir) -> Splits:
    """The :class:`Splits` the prepare stage wrote in ``data_dir`` (``<data_dir>/splits.npz``)."""
    path = Path(data_dir) / SPLITS_FILE
    how = (f"run `dvc repro {STAGE}` or `python -m papers.augmentation_generator.prepare --mnist data/prepared/mnist "
           f"--omniglot data/prepared/omniglot --out {data_dir}`")
    if not path.is_file():
        raise data.DataNotFoundError(f"{path} does not exist: {how}")
    fields = [f.name for f in dataclasses.fields(Splits)]
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in fields if k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise data.CorruptDataError(f"{path}: unreadable ({type(e).__name__}: {e}); delete it and {how}") from e
    if missing := [k for k in fields if k not in arrays]:
        raise data.CorruptDataError(f"{path}: arrays {missing} are missing; delete it and {how}")
    n_classes = arrays.pop("n_classes")
    if n_classes.shape != () or n_classes.dtype.kind not in "iu":
        raise data.CorruptDataError(f"{path}: 'n_classes' is {n_classes.dtype} {n_classes.shape}, expected an "
                                    f"integer scalar; delete it and {how}")
    try:
        return Splits(**{k: torch.from_numpy(v) for k, v in arrays.items()}, n_classes=int(n_classes))
    except (data.CorruptDataError, TypeError) as e:  # TypeError: an array torch cannot hold (e.g. strings)
        raise data.CorruptDataError(f"{path}: {e}; delete it and {how}") from e
