"""The IC-GAN generator file (`generator.pt`): the trained G_ema and the keyword arguments that rebuild it.

Written by the `icgan_train` stage (`papers.gencl.icgan`), read by its `noise_augment` stage and by the `cost`
stage (Table 4 times the full noise-based path); a module of its own so that no stage imports another.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shared import checkpoint
from shared.device import to_device
from shared.models.conditional import ConditionalGenerator

GENERATOR_FILE = "generator.pt"
GENERATOR_FORMAT = "gencl.icgan.generator/1"
TRAIN_STAGE = "papers/gencl/dvc.yaml:icgan_train"


def save_generator(path: Path, G_ema: ConditionalGenerator, arch: dict, steps: int) -> None:
    checkpoint.save(path, {"format": GENERATOR_FORMAT, "G_ema": G_ema.state_dict(), "arch": arch, "steps": steps,
                           "note": "the G_ema at the end of training; load with papers.gencl.generator.load_generator"})


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> ConditionalGenerator:
    """The trained G_ema of `generator.pt` (a file or the train stage's folder), frozen, in eval mode."""
    path = Path(path)
    path = path / GENERATOR_FILE if path.is_dir() else path
    state = checkpoint.load(path)
    if state is None:
        raise FileNotFoundError(f"{path} does not exist: it is made by `python -m papers.gencl.icgan train` "
                                f"(`dvc repro {TRAIN_STAGE}`)")
    if state.get("format") != GENERATOR_FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not an IC-GAN generator (format {state.get('format')!r})")
    G = ConditionalGenerator(**state["arch"])
    G.load_state_dict(state["G_ema"])
    return to_device(G, torch.device(device)).eval().requires_grad_(False)
