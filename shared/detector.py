"""What every FID/IS detector shares: the protocols, the input check and the weights-file errors.

Three detectors exist. Two give features and class probabilities (:class:`Detector`): the
StyleGAN2-ADA Inception file (:class:`shared.metrics.InceptionDetector`) and the suite's in-domain
classifier (:class:`shared.extractor.FeatureExtractor`). One gives features only
(:class:`FeatureDetector`): the Inception pool3 network without logits that the suite fetches by
default (:class:`shared.metrics.InceptionPool3`). :class:`shared.metrics.FIDScorer` takes any of
them for FID, and a :class:`Detector` for IS.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


class WeightsNotFoundError(FileNotFoundError):
    """A weights file a metric needs (Inception detector or in-domain extractor) is absent."""


class CorruptWeightsError(RuntimeError):
    """A weights file exists but cannot be read as what it should be."""


@runtime_checkable
class FeatureDetector(Protocol):
    """What FID needs: a kind for the metric keys (``fid_<kind>``), a label, and batched features."""
    kind: str
    label: str

    def features(self, images, batch_size: int = 250) -> torch.Tensor: ...


@runtime_checkable
class Detector(FeatureDetector, Protocol):
    """A detector with class probabilities too, so it also gives IS (``is_<kind>``)."""

    def features_and_probs(self, images, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_uint8_images(images, channels: Sequence[int] | None = None) -> torch.Tensor:
    """``images`` as a uint8 tensor (N >= 1, C, H, W), C in ``channels`` when given; else ValueError."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"expected {' or '.join(map(str, channels))} channels, got images of shape {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("no images")
    return x
