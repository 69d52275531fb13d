"""F, the embedding network (eq. 1), and what its two MoCo v2 stages (pretrain, retrain) share.

F is a CIFAR-stem ResNet-18 (`shared.models.resnet18`, 3x3 stride-1 stem, no max-pool) on one-channel
28 x 28 images (float in [0, 1], bright ink on 0, as the view sources produce them); Y = the pooled
penultimate features (`feature_dim` = 512 x width), as the spec (2.C) proposes for "ResNet-18 [22]
was used as the backbone embedding network".

`encoder.pt` (`save_encoder` / `load_encoder`) holds F's weights as a plain ResNet's state: MoCo's
split batch norm (`shared.methods.mocov2.SplitBatchNorm2d`, the shuffled-BN emulation) keeps the
state-dict keys of `BatchNorm2d` and is a plain batch norm in eval mode, so F trained with it loads
into a plain ResNet and computes the same features. The file also holds the whole MoCo state
(heads, key encoder, queue), so the re-training can continue it (`retrain.heads: pretrained`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from papers.augmentation_generator.config import MoCoConfig, MonitorConfig
from shared import checkpoint
from shared.device import to_device
from shared.methods import build_method
from shared.methods.mocov2 import MoCoV2
from shared.models import ResNet, resnet18
from shared.trainers.linear_eval import extract_features, knn_accuracy

FORMAT = "augmentation_generator/encoder"
IN_CHANNELS = 1  # MNIST and Omniglot are grayscale


# ---------------------------------------------------------------- F and MoCo around it

def build_encoder(width: float) -> ResNet:
    """F: ResNet-18 of channel multiplier ``width`` on 1-channel images; ``forward(x) -> (N, feature_dim)``."""
    return resnet18(width=width, in_channels=IN_CHANNELS)


def build_moco(encoder: nn.Module, cfg: MoCoConfig) -> MoCoV2:
    """MoCo v2 (`shared.methods.mocov2`) around ``encoder``: MLP head, momentum key encoder, queue, split BN.

    With ``cfg.bn_splits > 1`` the encoder's batch norms are replaced in place (same state-dict keys).
    """
    return build_method("mocov2", encoder, dim=cfg.dim, queue_size=cfg.queue_size, momentum=cfg.momentum,
                        temperature=cfg.temperature, hidden_dim=cfg.hidden_dim, bn_splits=cfg.bn_splits)


# ---------------------------------------------------------------- encoder.pt

def _cpu(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_encoder(path: str | os.PathLike, encoder: ResNet, width: float, *, method: nn.Module | None = None,
                 **meta: Any) -> None:
    """Write F (and, if given, the whole MoCo ``method`` around it) to ``path`` atomically.

    ``meta`` (the stage, steps, seed, ...) is stored beside the weights under ``"meta"``.
    """
    doc = {"format": FORMAT, "width": float(width), "in_channels": IN_CHANNELS,
           "feature_dim": int(encoder.feature_dim), "encoder": _cpu(encoder.state_dict()), "meta": meta}
    if method is not None:
        doc["method"] = _cpu(method.state_dict())
    checkpoint.save(path, doc)


def read_encoder_file(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of an ``encoder.pt``; a missing, unreadable or foreign file raises naming ``path``."""
    path = Path(path)
    doc = checkpoint.load(path)  # a corrupt file: CheckpointError naming the path
    if doc is None:
        raise FileNotFoundError(f"{path} does not exist: make it with the pretrain stage "
                                f"(python -m papers.augmentation_generator.pretrain ... --out {path.parent}) "
                                f"or the retrain stage")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise checkpoint.CheckpointError(f"{path} is not an encoder file of this package (format {found!r}, "
                                         f"expected {FORMAT!r}); delete it and re-run the stage that writes it")
    width = doc.get("width")
    if not isinstance(width, float) or not width > 0 or not isinstance(doc.get("encoder"), dict):
        raise checkpoint.CheckpointError(f"{path}: 'width' ({width!r}) or 'encoder' is missing or malformed; "
                                         f"delete it and re-run the stage that writes it")
    return doc


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> ResNet:
    """F from ``encoder.pt``: a plain ResNet-18 (``BatchNorm2d``) on ``device``, in eval mode."""
    doc = read_encoder_file(path)
    encoder = build_encoder(doc["width"])
    load_state(encoder, doc["encoder"], path, "encoder")
    return to_device(encoder, torch.device(device)).eval()


def load_state(module: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike, what: str) -> None:
    """``module.load_state_dict(state)`` (strict), a mismatch raising a CheckpointError that names ``path``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise checkpoint.CheckpointError(f"{path}: its {what} does not fit the network built here ({first}); "
                                         f"was it written with another config?") from err


# ---------------------------------------------------------------- the SSL stages' monitor and loss curve

class DownstreamMonitor:
    """``monitor(encoder) -> {"knn_d_to_c", "knn_d_to_d"}``: weighted-kNN top-1 (%) of F's features.

    Train set: X~_f (dotted fine-tuning images); test sets X_t^C (clean) and X_t^D (dotted), all restricted
    to the first ``cfg.classes`` characters of the fine-tuning set. A curve to watch only: nothing is
    selected by it.
    """

    def __init__(self, fine: tuple[Tensor, Tensor], test_clean: Tensor, test_dotted: Tensor, test_y: Tensor,
                 cfg: MonitorConfig, device: torch.device, batch_size: int = 512):
        first = None if cfg.classes is None else torch.unique(fine[1])[:cfg.classes]
        keep_f = slice(None) if first is None else torch.isin(fine[1], first)
        keep_t = slice(None) if first is None else torch.isin(test_y, first)
        self.fine_x, self.fine_y = fine[0][keep_f], fine[1][keep_f].to(device)
        self.test = {"d_to_c": test_clean[keep_t], "d_to_d": test_dotted[keep_t]}
        self.test_y = test_y[keep_t].to(device)
        self.cfg, self.device, self.batch_size = cfg, device, batch_size

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        if len(self.fine_y) == 0 or len(self.test_y) == 0:
            return {}
        feats = extract_features(encoder, self.fine_x, self.device, self.batch_size)
        out = {}
        for name, images in self.test.items():
            test = extract_features(encoder, images, self.device, self.batch_size)
            out[f"knn_{name}"] = knn_accuracy(feats, self.fine_y, test, self.test_y, k=self.cfg.knn_k,
                                              temperature=self.cfg.knn_temperature)
        return out


class LossMeter:
    """A logger in front of the stage's: passes everything on and keeps the ``train/loss`` values it sees.

    ``take()`` returns their mean since the previous ``take()`` (NaN if none), so an evaluation can put the
    loss of the steps before it into the trainer's history, which the checkpoint keeps across a resume.
    """

    def __init__(self, logger):
        self.logger = logger
        self._losses: list[float] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if "train/loss" in metrics:
            self._losses.append(float(metrics["train/loss"]))
        self.logger.log_metrics(metrics, step=step)

    def take(self) -> float:
        losses, self._losses = self._losses, []
        return sum(losses) / len(losses) if losses else math.nan

    def __getattr__(self, name: str):  # every other Logger method: the stage's logger's
        return getattr(self.logger, name)
