"""Sample-quality metrics: Frechet distance (FID), Inception Score, the detectors and the scorer.

Two detectors (:class:`shared.detector.Detector`), and every number says which one made it:

* **Inception** (``kind = "inception"``): the TorchScript translation of TensorFlow's
  ``inception-2015-12-05`` graph that StyleGAN2-ADA uses, read from a USER-SUPPLIED file
  (``metrics.inception_weights`` in params.yaml; no pretrained weights exist offline).
  Its numbers are keyed ``fid_inception`` / ``is_inception`` and are comparable with
  published FIDs made with the same number of images and reference set (the offline
  CIFAR-10 copy is JPEG re-encoded: report that beside any number made from it).
* **In-domain** (``kind = "indomain"``): the CIFAR ResNet-18 classifier the suite trains
  itself (:mod:`shared.extractor`, ``python -m shared.extractor``). Its numbers are keyed
  ``fid_indomain`` / ``is_indomain`` and labelled :data:`INDOMAIN_LABEL`. They rank models
  trained here against each other; they are NOT comparable with any published FID or IS.

Public pieces: :func:`feature_stats`, :func:`frechet_distance`, :func:`inception_score`,
:func:`load_inception`, :class:`FIDScorer`, :func:`make_scorer` (Inception when its file
exists, else the in-domain extractor) and :class:`MetricsConfig`.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.special
import torch
from torch import nn

from shared.detector import CorruptWeightsError, Detector, WeightsNotFoundError, check_uint8_images
from shared.extractor import INDOMAIN_LABEL, FeatureExtractor

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "INCEPTION_LABEL",
    "feature_stats", "frechet_distance", "inception_score",
    "InceptionDetector", "load_inception", "FIDScorer", "make_scorer", "MetricsConfig",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
# Where StyleGAN2-ADA's metrics fetch the detector; named as text only: nothing here downloads it.
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 "inception-2015-12-05.pt")
INCEPTION_LABEL = "FID (Inception-v3 pool3 features, inception-2015-12-05)"


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


# ---------------------------------------------------------------- the Inception detector

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
        x = check_uint8_images(images, channels=(1, 3))
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
        ref = check_uint8_images(reference_images)
        self.detector, self.splits, self.batch_size = detector, splits, batch_size
        self.kind, self.label = detector.kind, detector.label
        self.image_shape = tuple(ref.shape[1:])
        feats, probs = detector.features_and_probs(ref, batch_size)
        self.mu, self.sigma = feature_stats(feats)
        self.n_reference = len(ref)
        # The IS of real data is the ceiling a generator can approach on this detector.
        self.reference_is = inception_score(_shuffled(probs), min(splits, len(ref)))

    def score(self, fake_images) -> dict[str, float]:
        fake = check_uint8_images(fake_images)
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
             f"shared.extractor --params params.yaml --prepared data/prepared/cifar10 "
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
