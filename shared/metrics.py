"""Sample-quality metrics: Frechet distance (FID), Inception Score, and the detectors they run on.

Two detectors, and every number says which one made it:

* **Inception** (``kind = "inception"``): the TorchScript translation of TensorFlow's
  ``inception-2015-12-05`` graph that StyleGAN2-ADA uses, read from a USER-SUPPLIED file
  (``metrics.inception_weights`` in params.yaml; no pretrained weights exist offline).
  Its numbers are keyed ``fid_inception`` / ``is_inception`` and are comparable with
  published FIDs made with the same number of images and reference set (the offline
  CIFAR-10 copy is JPEG re-encoded: report that beside any number made from it).
* **In-domain** (``kind = "indomain"``): a CIFAR ResNet-18 classifier the suite trains
  itself on the prepared train split (``python -m shared.metrics train-extractor``).
  Its numbers are keyed ``fid_indomain`` / ``is_indomain`` and labelled
  :data:`INDOMAIN_LABEL`. They rank models trained here against each other; they are
  NOT comparable with any published FID or IS.

Public pieces: :func:`feature_stats`, :func:`frechet_distance`, :func:`inception_score`,
:func:`load_inception`, :class:`ExtractorConfig`, :func:`train_extractor`,
:class:`FeatureExtractor`, :class:`FIDScorer`, :func:`make_scorer`, and the stage

    python -m shared.metrics train-extractor --params params.yaml \\
        --prepared data/prepared/cifar10 --out data/extractor/cifar10.pt

which reads the ``extractor`` section of params.yaml (with ``scales.<scale>.extractor``
overrides) and writes the weights, ``metrics.json`` and ``config.yaml`` beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
import scipy.linalg
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from shared import config, data, tracking
from shared.cli import run_stage
from shared.device import autocast, pick_device, prepare_batch, to_device
from shared.io import atomic_write, atomic_write_text
from shared.models.resnet import resnet18
from shared.trainers.ssl import NonFiniteLossError
from shared.views import rand_translation

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "INCEPTION_LABEL", "INDOMAIN_LABEL",
    "WeightsNotFoundError", "CorruptWeightsError",
    "feature_stats", "frechet_distance", "inception_score",
    "InceptionDetector", "load_inception",
    "ExtractorConfig", "FeatureExtractor", "train_extractor", "extractor_accuracy",
    "FIDScorer", "make_scorer", "MetricsConfig", "train_extractor_stage", "main",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
# Where StyleGAN2-ADA's metrics fetch the detector; named as text only: nothing here downloads it.
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 "inception-2015-12-05.pt")
INCEPTION_LABEL = "FID (Inception-v3 pool3 features, inception-2015-12-05)"
INDOMAIN_LABEL = "FID (in-domain ResNet-18 features, not Inception)"
_EXTRACTOR_FORMAT = "shared.metrics.FeatureExtractor/1"


class WeightsNotFoundError(FileNotFoundError):
    """A weights file a metric needs (Inception detector or in-domain extractor) is absent."""


class CorruptWeightsError(RuntimeError):
    """A weights file exists but cannot be read as what it should be."""


# ---------------------------------------------------------------- Frechet distance

def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64.

    The covariance is the unbiased one (``np.cov``, ddof = 1), as pytorch-fid and the
    original TTUR code; StyleGAN2-ADA divides by N instead, a relative difference of 1/N
    in sigma (1e-4 at 10k images), far below the FID's own sampling noise.
    """
    x = _as_float64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"features hold {np.count_nonzero(~np.isfinite(x))} non-finite values")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _psd_eigh(matrix: np.ndarray, name: str, vectors: bool = False):
    """Eigenvalues (and vectors) of a symmetric PSD matrix, round-off negatives clipped to 0."""
    w, v = scipy.linalg.eigh(matrix) if vectors else (scipy.linalg.eigvalsh(matrix), None)
    # float64 round-off leaves eigenvalues of a PSD matrix at about -1e-13 of the largest;
    # anything far below that means the input was not a covariance.
    if w.size and w.min() < -1e-6 * max(abs(w).max(), 1e-300):
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g}, "
                         f"largest {abs(w).max():.3g})")
    w = np.clip(w, 0.0, None)
    return (w, v) if vectors else w


def frechet_distance(mu1, sigma1, mu2, sigma2, method: Literal["eigh", "sqrtm"] = "eigh",
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    ``method="eigh"`` (default) computes tr (sigma1 sigma2)^(1/2) as the sum of square roots
    of the eigenvalues of the symmetric PSD matrix sigma1^(1/2) sigma2 sigma1^(1/2), which
    has the same eigenvalues as sigma1 sigma2. It is exact for singular covariances (N < D)
    and never produces an imaginary part, so pytorch-fid's two repairs are not needed.
    ``method="sqrtm"`` is pytorch-fid's procedure: ``scipy.linalg.sqrtm`` of the product,
    retried with ``eps`` added to both diagonals when the root is not finite (singular
    product), and the imaginary round-off dropped (raising when its diagonal exceeds 1e-3).
    Both agree to round-off on well-conditioned inputs; the tests check that.

    Round-off can leave d^2 a hair below 0 for identical inputs; values down to -1e-8 of
    the traces are returned as 0, anything lower raises.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"need mu (D,) and sigma (D, D) for both: got mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds non-finite values")
    # Covariances accumulated in floating point are symmetric only to round-off.
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2

    if method == "eigh":
        w1, v1 = _psd_eigh(sigma1, "sigma1", vectors=True)
        _psd_eigh(sigma2, "sigma2")
        root1 = (v1 * np.sqrt(w1)) @ v1.T
        inner = root1 @ sigma2 @ root1
        tr_covmean = float(np.sqrt(_psd_eigh((inner + inner.T) / 2, "sigma1^1/2 sigma2 sigma1^1/2")).sum())
    elif method == "sqrtm":
        with warnings.catch_warnings():
            # pytorch-fid passes disp=False (deprecated in scipy 1.16) to silence the singular-matrix
            # warning; the finiteness check and the offset below are what handle that case.
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
            if not np.isfinite(covmean).all():
                offset = np.eye(d) * eps
                covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary part up to {np.abs(covmean.imag).max():.3g}")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")

    diff = mu1 - mu2
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    fd = float(diff @ diff) + traces - 2.0 * tr_covmean
    if fd < 0:
        if fd < -1e-8 * max(traces, 1e-300):
            raise ValueError(f"Frechet distance came out negative ({fd:.3g}); the inputs are inconsistent")
        fd = 0.0
    return fd


# ---------------------------------------------------------------- Inception Score

def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

    ``probs`` (N, K) are class probabilities (rows sum to 1). The N rows are cut into
    ``splits`` consecutive parts of N // splits or so (rows [i N // s, (i + 1) N // s)),
    p(y) is the mean of each part, and 0 log 0 counts as 0. The std is the population
    std (ddof = 0) of the per-split scores, as the original code and StyleGAN2-ADA.
    """
    p = _as_float64(probs)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must be (N, K), got shape {p.shape}")
    n = p.shape[0]
    if not (isinstance(splits, int) and 1 <= splits <= n):
        raise ValueError(f"splits must be an int in [1, N={n}], got {splits!r}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    row_sums = p.sum(axis=1)
    if not np.allclose(row_sums, 1.0, atol=1e-4):
        worst = int(np.abs(row_sums - 1).argmax())
        raise ValueError(f"probs rows must sum to 1 (row {worst} sums to {row_sums[worst]:.6g}): "
                         "pass softmax outputs, not logits")
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.rel_entr(part, marginal).sum(axis=1).mean()  # rel_entr(0, .) = 0
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- detectors

class Detector(Protocol):
    """What :class:`FIDScorer` needs: a kind for the metric keys, a label, and batched outputs."""
    kind: str
    label: str

    def features_and_probs(self, images, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]: ...


def _check_uint8_images(images, channels: Sequence[int] | None = None) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"expected {' or '.join(map(str, channels))} channels, got images of shape {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("no images")
    return x


def _inception_missing_message(path) -> str:
    where = "no path was given" if path is None else f"{path} does not exist"
    return (f"Inception weights not found: {where}. FID/IS comparable with published numbers need the "
            f"TorchScript detector {INCEPTION_FILE} (the file StyleGAN2-ADA's metrics download from "
            f"{INCEPTION_URL}); fetch it on a machine with internet and set its path as "
            f"`metrics.inception_weights` in params.yaml. Without it the suite reports the in-domain FID "
            f"instead (metric keys fid_indomain / is_indomain: \"{INDOMAIN_LABEL}\"), which is not "
            f"comparable with published FIDs.")


class InceptionDetector(nn.Module):
    """StyleGAN2-ADA's TorchScript Inception-v3, called exactly as its metrics call it.

    The module takes uint8 images (N, 3, H, W) in [0, 255] and does its own resizing to
    299 x 299 and scaling to [-1, 1]. ``net(x, return_features=True)`` gives the 2048-d
    pool3 features (FID); ``net(x, no_output_bias=True)`` gives softmax probabilities over
    1008 classes computed from logits without the output bias, which is what the
    original IS code uses (StyleGAN2-ADA ``metrics/inception_score.py``). Grayscale
    images are repeated to 3 channels first, as StyleGAN2-ADA does. This convention was
    read from StyleGAN2-ADA's ``metrics/frechet_inception_distance.py``,
    ``inception_score.py`` and ``metric_utils.py``, and from the module's own TorchScript
    ``forward`` (float32 cast, bilinear resize to 299, (x - 128) / 128, 2048-d reshape,
    ``F.linear`` without bias when ``no_output_bias``, then softmax).
    """

    kind = "inception"
    label = INCEPTION_LABEL

    def __init__(self, net: torch.jit.ScriptModule, path: str | Path):
        super().__init__()
        self.net = net
        self.path = str(path)

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.parameters()), torch.empty(0)).device

    @torch.no_grad()
    def features_and_probs(self, images, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D), probs (N, K)), float32 on the CPU, of uint8 images (N, 1 or 3, H, W)."""
        x = _check_uint8_images(images, channels=(1, 3))
        self.net.eval()
        feats, probs = [], []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(self.device)
            if batch.shape[1] == 1:
                batch = batch.repeat(1, 3, 1, 1)
            f = self.net(batch, return_features=True)
            p = self.net(batch, no_output_bias=True)
            if f.ndim != 2 or p.ndim != 2 or len(f) != len(batch) or len(p) != len(batch):
                raise RuntimeError(f"{self.path}: detector returned features {tuple(f.shape)} and probs "
                                   f"{tuple(p.shape)} for {len(batch)} images; is it {INCEPTION_FILE}?")
            feats.append(f.float().cpu())
            probs.append(p.float().cpu())
        return torch.cat(feats), torch.cat(probs)

    def features(self, images, batch_size: int = 250) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[0]

    def probs(self, images, batch_size: int = 250) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[1]


def load_inception(path: str | Path | None, device: str | torch.device = "cpu") -> InceptionDetector:
    """Load the user-supplied TorchScript ``inception-2015-12-05.pt`` and check its call convention.

    Raises :class:`WeightsNotFoundError` when ``path`` is None or not a file (the message says
    where the file comes from and which params key sets it), and :class:`CorruptWeightsError`
    when it does not load or does not answer the two calls the metrics make.
    """
    if path is None or not Path(path).is_file():
        raise WeightsNotFoundError(_inception_missing_message(path))
    try:
        with warnings.catch_warnings():
            # this torch warns that TorchScript is deprecated, but the standard detector file is one.
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as err:  # noqa: BLE001 - any load failure means the same thing here
        raise CorruptWeightsError(f"{path}: not a loadable TorchScript module ({type(err).__name__}: {err}); "
                                  f"expected {INCEPTION_FILE} from {INCEPTION_URL}") from err
    detector = InceptionDetector(net.eval(), path)
    probe = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    try:
        _, probs = detector.features_and_probs(probe)
    except Exception as err:  # noqa: BLE001
        raise CorruptWeightsError(f"{path}: does not accept the StyleGAN2-ADA call convention "
                                  f"(uint8 NCHW, return_features=True / no_output_bias=True): "
                                  f"{type(err).__name__}: {err}") from err
    if not torch.allclose(probs.sum(1), torch.ones(2), atol=1e-3):
        raise CorruptWeightsError(f"{path}: no_output_bias=True output is not a softmax (rows sum to "
                                  f"{probs.sum(1).tolist()}); expected {INCEPTION_FILE}")
    return detector


# ---------------------------------------------------------------- in-domain extractor

@dataclasses.dataclass
class ExtractorConfig:
    """The in-domain classifier's training. Defaults: the ``paper`` scale (a GPU, full width).

    SGD with Nesterov momentum 0.9, lr warmed up linearly over ``warmup_epochs`` then
    decayed linearly to 0 (a one-cycle schedule, which reaches good accuracy in few
    epochs); light augmentation: a random translation of up to ``crop_padding`` pixels
    with zero fill (= RandomCrop(padding) of torchvision) and, if ``flip``, a horizontal flip.
    """
    width: float = 1.0
    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.4  # peak; 0.1 per 128 images, scaled linearly with batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    crop_padding: int = 4  # pixels
    flip: bool = True  # off for digits and characters, where a mirror image is another symbol
    seed: int = 0
    limit: int | None = None  # train on this many images (a seeded class-balanced subset); None = all
    eval_batch_size: int = 500

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got "
                             f"{self.lr}, {self.weight_decay}, {self.momentum}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")


class FeatureExtractor(nn.Module):
    """CIFAR ResNet-18 classifier trained by the suite; the in-domain stand-in for Inception.

    ``features`` are the trunk's globally pooled (penultimate) features, ``probs`` the
    softmax of the linear head. Inputs are uint8 images of the shape it was trained on;
    it scales them to [0, 1] and standardises each channel with the training set's
    mean and std (buffers, saved with the weights).
    """

    kind = "indomain"
    label = INDOMAIN_LABEL

    def __init__(self, cfg: ExtractorConfig, in_channels: int, num_classes: int, image_size: tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, tuple(image_size)
        self.trunk = resnet18(cfg.width, in_channels)
        self.head = nn.Linear(self.trunk.feature_dim, num_classes)
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        self.test_acc: float | None = None  # %, on the test split, set by whoever evaluated it
        self.train_acc: float | None = None  # %, running accuracy on augmented batches of the last epoch
        self.n_train: int | None = None  # images it was trained on

    @property
    def feature_dim(self) -> int:
        return self.trunk.feature_dim

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of float images in [0, 1]."""
        feats = self.trunk((x - self.mean) / self.std)
        return feats, self.head(feats)

    @torch.no_grad()
    def features_and_probs(self, images, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D), probs (N, K)), float32 on the CPU, of uint8 images (N, C, H, W), eval mode."""
        x = _check_uint8_images(images, channels=(self.in_channels,))
        if tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"the extractor was trained on {self.image_size} images, got {tuple(x.shape[2:])}")
        batch_size = batch_size or self.cfg.eval_batch_size
        was_training = self.training
        self.eval()
        feats, probs = [], []
        try:
            for start in range(0, len(x), batch_size):
                batch = prepare_batch(x[start:start + batch_size].to(self.device).float().div_(255), self.device)
                f, logits = self(batch)  # no autocast: FID features stay float32 on CUDA too
                feats.append(f.float().cpu())
                probs.append(logits.float().softmax(dim=1).cpu())
        finally:
            self.train(was_training)
        return torch.cat(feats), torch.cat(probs)

    def features(self, images, batch_size: int | None = None) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[0]

    def probs(self, images, batch_size: int | None = None) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[1]

    def save(self, path: str | Path) -> None:
        """Write weights, config, shapes and accuracies to ``path`` atomically (torch.save of plain types)."""
        state = {"format": _EXTRACTOR_FORMAT, "label": INDOMAIN_LABEL, "config": dataclasses.asdict(self.cfg),
                 "in_channels": self.in_channels, "num_classes": self.num_classes,
                 "image_size": list(self.image_size), "test_acc": self.test_acc, "train_acc": self.train_acc,
                 "n_train": self.n_train, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FeatureExtractor":
        """Read what :meth:`save` wrote; a missing or unreadable file raises naming ``path``."""
        path = Path(path)
        how = (f"make it with `python -m shared.metrics train-extractor --params params.yaml "
               f"--prepared data/prepared/cifar10 --out {path}` (the `extractor` stage of dvc.yaml)")
        if not path.is_file():
            raise WeightsNotFoundError(f"in-domain feature extractor {path} does not exist: {how}")
        try:
            # weights_only: the file holds tensors and plain types only, so nothing is unpickled blindly
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
            raise CorruptWeightsError(f"{path}: unreadable extractor file ({type(err).__name__}: {err}); "
                                      f"delete it and {how}") from err
        if not isinstance(state, dict) or state.get("format") != _EXTRACTOR_FORMAT:
            raise CorruptWeightsError(f"{path}: not an in-domain extractor file (format "
                                      f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                                      f"expected {_EXTRACTOR_FORMAT!r}); delete it and {how}")
        try:
            cfg = config.build(ExtractorConfig, state["config"], source=str(path), prefix="config.")
            model = cls(cfg, int(state["in_channels"]), int(state["num_classes"]), tuple(state["image_size"]))
            model.load_state_dict(state["state_dict"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CorruptWeightsError(f"{path}: inconsistent extractor file ({type(err).__name__}: {err}); "
                                      f"delete it and {how}") from err
        model.test_acc, model.train_acc, model.n_train = state.get("test_acc"), state.get("train_acc"), state.get("n_train")
        return to_device(model, torch.device(device)).eval()


def _augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (as a translation by up to ``padding`` px) and horizontal flip."""
    if padding:
        # rand_translation shifts by up to round(ratio * side) = padding pixels with zero fill:
        # the same distribution as cropping side x side out of the zero-padded image.
        x = rand_translation(x, ratio=padding / x.shape[-2], generator=generator)
    if flip:
        hit = torch.rand(len(x), device=x.device, generator=generator) < 0.5
        x = torch.where(hit.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1], accumulated in float64 chunk by chunk
    (50k CIFAR images as one float64 tensor would take 1.2 GB)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].double().div_(255)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    return mean.float(), ((squares / count - mean.square()).clamp_min(0) * count / max(count - 1, 1)).sqrt().float()


def extractor_accuracy(extractor: FeatureExtractor, images, labels) -> float:
    """Top-1 accuracy (%) of the extractor's head on uint8 images."""
    probs = extractor.probs(images)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if y.shape != (len(probs),):
        raise ValueError(f"labels {tuple(y.shape)} do not match {len(probs)} images")
    return (probs.argmax(1) == y).double().mean().item() * 100


def train_extractor(x_uint8, y, cfg: ExtractorConfig, device: str | torch.device = "cpu", progress: bool = True,
                    test: tuple | None = None, logger: tracking.Logger | None = None) -> FeatureExtractor:
    """Train the in-domain classifier on uint8 images (N, C, H, W) and int labels; return it in eval mode.

    One loop: seeded batches from a device-resident loader -> crop/flip on the device ->
    ResNet-18 + linear head -> cross-entropy -> SGD step -> per-step schedule. Same
    seed, data and device give the same weights. ``test`` = (images, labels) sets
    ``test_acc``; ``logger`` receives per-epoch loss, accuracy and lr.
    """
    device = torch.device(device)
    x = torch.as_tensor(x_uint8)
    y = torch.as_tensor(y, dtype=torch.int64)
    _check_uint8_images(x)
    if y.shape != (len(x),):
        raise ValueError(f"labels {tuple(y.shape)} do not match {len(x)} images")
    if y.min() < 0:
        raise ValueError("labels must be >= 0")
    num_classes = int(y.max()) + 1
    if cfg.limit is not None and cfg.limit < len(x):
        if cfg.limit < num_classes:
            raise ValueError(f"limit {cfg.limit} is below the number of classes {num_classes}")
        keep = torch.as_tensor(data.stratified_subset(y.numpy(), cfg.limit // num_classes, cfg.seed))
        x, y = x[keep], y[keep]

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # the init must not depend on, nor consume, the caller's RNG
        model = FeatureExtractor(cfg, x.shape[1], num_classes, tuple(x.shape[2:]))
    mean, std = _channel_stats(x)
    model.mean.copy_(mean.view_as(model.mean))
    model.std.copy_(std.clamp_min(1e-3).view_as(model.std))  # clamp: a constant channel would divide by 0
    model.n_train = len(x)
    model = to_device(model, device).train()

    loader = data.DeviceLoader(x, y, cfg.batch_size, shuffle=True, drop_last=len(x) >= cfg.batch_size,
                               seed=cfg.seed, device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    warmup = round(cfg.warmup_epochs * len(loader))

    def lr_factor(step: int) -> float:  # linear up over `warmup` steps, then linear down to 0 at `total`
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    start_time, step = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        loss_sum = correct = seen = 0.0
        for xb, yb in tqdm(loader, desc=f"extractor epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           leave=False, disable=not progress):
            views = _augment(xb.float().div_(255), cfg.crop_padding, cfg.flip, generator)
            with autocast(device):
                _, logits = model(prepare_batch(views, device))
            loss = F.cross_entropy(logits.float(), yb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"extractor loss is {loss.item()} at step {step} (epoch {epoch})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        stats = {"extractor_loss": loss_sum / seen, "extractor_train_acc": correct / seen * 100,
                 "lr": opt.param_groups[0]["lr"]}
        if logger is not None:
            logger.log_metrics(stats, step=epoch + 1)
        if progress:
            print(f"extractor epoch {epoch + 1}/{cfg.epochs}: loss {stats['extractor_loss']:.3f}, "
                  f"train acc {stats['extractor_train_acc']:.1f}%, {time.perf_counter() - start_time:.0f} s",
                  file=sys.stderr, flush=True)
        model.train_acc = stats["extractor_train_acc"]
    model.eval()
    if test is not None:
        model.test_acc = extractor_accuracy(model, *test)
        if progress:
            print(f"extractor test accuracy {model.test_acc:.2f}%", file=sys.stderr, flush=True)
    return model


# ---------------------------------------------------------------- scoring

def _shuffled(rows: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rows in a fixed random order (a CPU generator, so the order is the same everywhere)."""
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]


class FIDScorer:
    """FID and IS of generated images against a fixed reference set, for one detector.

    The reference (usually the test split) passes through the detector once, at
    construction; :meth:`score` returns ``{"fid_<kind>", "is_<kind>", "is_<kind>_std"}``
    with kind ``inception`` or ``indomain``, so an in-domain number can never be
    mistaken for an Inception one. FID is biased upward at small N: compare scores
    made with the same number of generated images (StyleGAN2-ADA: 50k; many GAN papers: 10k).

    IS rows are put in a fixed seeded random order before splitting. The IS splits are
    consecutive rows, so a class-sorted set (the prepared test split; a conditional
    generator sampled class by class) would put one class in each split and score
    near 1: measured on the CIFAR-10 test split with the mini extractor, 1.74 sorted
    against about 5 shuffled. StyleGAN2-ADA needs no shuffle because it draws a random
    label per sample; for i.i.d. samples the permutation changes nothing in distribution.
    """

    def __init__(self, reference_images, detector: Detector, splits: int = 10, batch_size: int = 250):
        ref = _check_uint8_images(reference_images)
        self.detector, self.splits, self.batch_size = detector, splits, batch_size
        self.kind, self.label = detector.kind, detector.label
        self.image_shape = tuple(ref.shape[1:])
        feats, probs = detector.features_and_probs(ref, batch_size)
        self.mu, self.sigma = feature_stats(feats)
        self.n_reference = len(ref)
        # The IS of real data is the ceiling a generator can approach on this detector.
        self.reference_is = inception_score(_shuffled(probs), min(splits, len(ref)))

    def score(self, fake_images) -> dict[str, float]:
        fake = _check_uint8_images(fake_images)
        if tuple(fake.shape[1:]) != self.image_shape:
            raise ValueError(f"generated images are {tuple(fake.shape[1:])}, the reference {self.image_shape}")
        feats, probs = self.detector.features_and_probs(fake, self.batch_size)
        mu, sigma = feature_stats(feats)
        is_mean, is_std = inception_score(_shuffled(probs), self.splits)
        k = self.kind
        return {f"fid_{k}": frechet_distance(mu, sigma, self.mu, self.sigma),
                f"is_{k}": is_mean, f"is_{k}_std": is_std}


def make_scorer(test_images, inception_weights: str | Path | None, extractor_path: str | Path | None,
                device: str | torch.device = "cpu", splits: int = 10) -> FIDScorer:
    """A :class:`FIDScorer` on Inception when ``inception_weights`` is an existing file, else in-domain.

    A given but missing Inception path warns (the numbers will be keyed ``*_indomain``);
    with neither file available it raises :class:`WeightsNotFoundError` naming both.
    """
    if inception_weights is not None and Path(inception_weights).is_file():
        return FIDScorer(test_images, load_inception(inception_weights, device), splits)
    if inception_weights is not None:
        warnings.warn(f"metrics.inception_weights = {inception_weights} does not exist; falling back to the "
                      f"in-domain extractor: numbers are keyed *_indomain, labelled \"{INDOMAIN_LABEL}\"",
                      stacklevel=2)
    if extractor_path is None or not Path(extractor_path).is_file():
        raise WeightsNotFoundError(
            "no FID detector available. " + _inception_missing_message(inception_weights) +
            (" The in-domain extractor path is not set (metrics.extractor)." if extractor_path is None else
             f" The in-domain extractor {extractor_path} does not exist either: make it with `python -m "
             f"shared.metrics train-extractor --params params.yaml --prepared data/prepared/cifar10 "
             f"--out {extractor_path}`."))
    return FIDScorer(test_images, FeatureExtractor.load(extractor_path, device), splits)


@dataclasses.dataclass
class MetricsConfig:
    """The ``metrics`` section of params.yaml: where the detectors' weights are."""
    inception_weights: str | None = None  # path to inception-2015-12-05.pt; null -> in-domain FID
    extractor: str | None = "data/extractor/cifar10.pt"
    is_splits: int = 10

    def __post_init__(self):
        if self.is_splits < 1:
            raise ValueError(f"is_splits must be >= 1, got {self.is_splits}")


# ---------------------------------------------------------------- stage

def train_extractor_stage(params: Path, prepared: Path, out: Path, metrics_path: Path | None = None,
                          progress: bool = True) -> dict:
    """Train the in-domain extractor on ``<prepared>/train.npz``, test on ``test.npz``; write
    ``out``, ``metrics.json`` and ``config.yaml`` (the latter two beside ``out`` by default)."""
    params, prepared, out = Path(params), Path(prepared), Path(out)
    metrics_path = Path(metrics_path) if metrics_path is not None else out.parent / "metrics.json"
    suite = config.load_suite(params)
    cfg = config.load_section(ExtractorConfig, params, "extractor", suite.scale)
    device = pick_device(suite.device)
    name = prepared.name
    resolved = {"scale": suite.scale, "prepared": str(prepared), "device": str(device), **config.to_dict(cfg)}
    with tracking.stage_logger(suite, "data", f"extractor/{name}", resolved, stage="extractor",
                               dataset=name) as log:
        x, y = data.load_prepared(prepared, "train")
        test = data.load_prepared(prepared, "test")
        start = time.perf_counter()
        extractor = train_extractor(x, y, cfg, device, progress=progress, test=test, logger=log)
        seconds = time.perf_counter() - start
        extractor.save(out)
        metrics = {"label": INDOMAIN_LABEL, "dataset": name, "scale": suite.scale,
                   "test_acc": round(extractor.test_acc, 3), "train_acc": round(extractor.train_acc, 3),
                   "n_train": extractor.n_train, "n_test": len(test[1]),
                   "feature_dim": extractor.feature_dim, "num_classes": extractor.num_classes,
                   "train_seconds": round(seconds, 1), "device": str(device), **tracking.provenance()}
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
        config.save_resolved(resolved, out.parent / "config.yaml")
        log.log_metrics({"extractor_test_acc": extractor.test_acc, "train_seconds": seconds})
        log.log_dict(metrics, "metrics.json")
    print(f"extractor/{name}: test accuracy {extractor.test_acc:.2f}% in {seconds:.0f} s -> {out}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.metrics", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-extractor", help="train the in-domain feature extractor (ResNet-18 classifier)",
                       description="Reads `scale`, `device`, `tracking` and the `extractor` section of params.yaml.")
    t.add_argument("--params", type=Path, default=Path("params.yaml"))
    t.add_argument("--prepared", type=Path, required=True, help="folder with train.npz / test.npz (shared.data)")
    t.add_argument("--out", type=Path, required=True, help="weights file, e.g. data/extractor/cifar10.pt")
    t.add_argument("--metrics", type=Path, help="metrics JSON (default: metrics.json beside --out)")
    t.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    return run_stage(lambda: train_extractor_stage(args.params, args.prepared, args.out, args.metrics,
                                                   progress=not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
