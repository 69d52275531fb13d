"""GenCL's backbone f: its config, how it is built (ResNet with the ImageNet stem), and the ``encoder.pt`` format.

The pretrain stage writes ``encoder.pt`` (:func:`save_encoder`); the evaluate, IC-GAN features and cost stages read
it (:func:`load_encoder`). Not a stage: every stage that needs the encoder imports it from here (STYLE 13).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from shared import checkpoint, config
from shared.device import to_device
from shared.models.resnet import ResNet, resnet18, resnet50

ENCODER_FILE = "encoder.pt"
ENCODER_FORMAT = "gencl/encoder"
ARCHS = {"resnet18": resnet18, "resnet50": resnet50}


@dataclasses.dataclass
class EncoderConfig:
    """The backbone f. Paper: ResNet-50, ImageNet stem, zero-initialised residual branches (official code)."""
    arch: Literal["resnet18", "resnet50"] = "resnet50"
    width: float = 1.0  # channel multiplier (2048-d features for ResNet-50 at 1)
    stem: Literal["imagenet", "cifar"] = "imagenet"  # 7x7/2 conv + 3x3/2 max-pool, or 3x3/1 conv only
    zero_init_residual: bool = True

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"encoder.width must be > 0, got {self.width}")


def build_encoder(cfg: EncoderConfig) -> ResNet:
    return ARCHS[cfg.arch](cfg.width, zero_init_residual=cfg.zero_init_residual, stem=cfg.stem)


def save_encoder(path: Path, encoder: nn.Module, cfg: EncoderConfig, **meta: Any) -> None:
    checkpoint.save(path, {"format": ENCODER_FORMAT, "encoder_config": config.to_dict(cfg),
                           "feature_dim": int(encoder.feature_dim),
                           "encoder": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
                           "meta": meta})


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The pre-trained encoder of ``encoder.pt`` on ``device``, in eval mode, gradients off.

    ``encoder(x)`` maps float images in [0, 1] ``(B, 3, H, W)`` (no normalisation: the suite's input
    convention) to ``(B, encoder.feature_dim)`` pooled features.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: it is written by the GenCL pretrain stage "
                                f"(python -m papers.gencl.pretrain, stage `pretrain` of papers/gencl/dvc.yaml)")
    state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != ENCODER_FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not a GenCL encoder file (format "
                                         f"{state.get('format') if isinstance(state, dict) else None!r}); "
                                         f"rerun the pretrain stage that writes it")
    encoder = build_encoder(config.build(EncoderConfig, state["encoder_config"], source=str(path)))
    encoder.load_state_dict(state["encoder"])
    encoder.requires_grad_(False)
    return to_device(encoder, torch.device(device)).eval()
