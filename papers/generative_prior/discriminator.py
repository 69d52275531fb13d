"""The frozen GAN discriminator of idea #2: the file the `train_gan` stage writes, and how it is read back.

Kept apart from the stage (``gan.py``) so the pre-training stage reads D without importing another stage.
``initial_discriminator`` rebuilds the same D at its initialisation (the control view: random convolutional
features of the same architecture, no GAN training).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared import checkpoint
from shared.device import to_device
from shared.models.sngan import sngan
from shared.stage import run_seed

DISCRIMINATOR_FILE = "discriminator.pt"


def load_discriminator(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The frozen D written by the train_gan stage: eval mode, no parameter requires grad, on ``device``.

    Keep it in eval mode: spectral norm updates its power-iteration vectors in training mode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `dvc repro papers/generative_prior/dvc.yaml:train_gan` "
                                f"or `python -m papers.generative_prior.gan --out {path.parent}`")
    state = checkpoint.load(path, map_location="cpu")
    try:
        _, D = sngan(state["discriminator"], width=state["width"], z_dim=state["z_dim"])
        D.load_state_dict(state["D"])
    except (KeyError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path}: not a discriminator written by papers.generative_prior.gan "
                                         f"({type(err).__name__}: {err})") from err
    return frozen(D, device)


def initial_discriminator(discriminator: str, width: float, z_dim: int, suite_seed: int,
                          device: torch.device | str = "cpu") -> nn.Module:
    """The train_gan stage's D as it was before its first step, frozen like ``load_discriminator``'s.

    The stage seeds every RNG with trial 0's seed of ``suite_seed`` (``shared.stage.start``) and then builds G
    and D (``sngan``) before anything else draws; this repeats that under a forked RNG, so the caller's stream
    is untouched. ``tests/papers/generative_prior/test_prepare_gan.py`` checks it against the D the stage
    builds.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_seed(suite_seed, 0))
        _, D = sngan(discriminator, width=width, z_dim=z_dim)
    return frozen(D, device)


def frozen(D: nn.Module, device: torch.device | str) -> nn.Module:
    """``D`` on ``device`` in eval mode (spectral norm's power iteration runs only in training mode), every
    parameter without gradient."""
    D = to_device(D, device).eval()
    for p in D.parameters():
        p.requires_grad_(False)
    return D
