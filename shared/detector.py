"""What every FID/IS detector shares: the protocol, the input check and the weights-file errors.

Two detectors implement :class:`Detector`: the Inception network read from a user-supplied file
(:class:`shared.metrics.InceptionDetector`) and the suite's in-domain classifier
(:class:`shared.extractor.FeatureExtractor`). :class:`shared.metrics.FIDScorer` takes either.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch


class WeightsNotFoundError(FileNotFoundError):
    """A weights file a metric needs (Inception detector or in-domain extractor) is absent."""


class CorruptWeightsError(RuntimeError):
    """A weights file exists but cannot be read as what it should be."""


class Detector(Protocol):
    """What :class:`shared.metrics.FIDScorer` needs: a kind for the metric keys, a label, and batched outputs."""
    kind: str
    label: str

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
