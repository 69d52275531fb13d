"""SSL methods by name: each an ``nn.Module`` owning its encoder, heads, loss and momentum state.

    method = build_method("byol", encoder, base_target_ema=0.99)
    loss, logs = method(views)          # views: list of N >= 2 (B, C, H, W) tensors
    method.after_step(step, total_steps)  # after the optimiser step (EMA target, key encoder)

:mod:`shared.methods.base` states the protocol the trainer relies on. A new method is a new
module with a class registered in :data:`METHODS`.
"""
from __future__ import annotations

import inspect

from torch import nn

from shared.methods.base import SSLMethod
from shared.methods.byol import BYOL
from shared.methods.mocov2 import MoCoV2
from shared.methods.simclr import SimCLR
from shared.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "vicreg": VICReg, "byol": BYOL, "mocov2": MoCoV2}

__all__ = ["BYOL", "METHODS", "MoCoV2", "SSLMethod", "SimCLR", "VICReg", "build_method"]


def build_method(name: str, encoder: nn.Module, **cfg) -> SSLMethod:
    """The method ``name`` around ``encoder``, its heads built from ``cfg`` (the class's keyword arguments).

    Heads are created here, after the encoder, on the CPU: move the method to the device
    afterwards (``shared.device.to_device(method, device)``). An unknown name or key is an
    error that lists the allowed ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}; allowed: {', '.join(METHODS)}")
    cls = METHODS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p != "encoder"]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return cls(encoder, **cfg)
