"""Atomic, resumable checkpoints: model, optimiser, scheduler, step and every RNG."""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared import config
from shared.io import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read."""


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training loop may touch."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` through a temp file in the same folder, fsync, then ``os.replace``.

    A run killed mid-write, or a full disk, leaves the previous checkpoint intact, never a truncated
    one or a temp file; the ``OSError`` names ``path`` (:mod:`shared.io`). The state
    is serialised into memory first: ``torch.save`` to a named file embeds the file's (random temp)
    name, so two identical runs would write different bytes.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None if there is none; a corrupt file raises naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        # weights_only=False: the state holds RNG tuples and numpy arrays, written by this suite.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), "")  # one line
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {reason}); "
            f"delete it to restart the stage from scratch") from err


def fresh_start_if_config_changed(out_dir: str | os.PathLike, resolved: dict) -> None:
    """Resume ``out_dir/checkpoint.pt`` only if it was made with this exact resolved config.

    A stage whose checkpoint DVC keeps (``persist: true``) must not resume a run made with
    other parameters: the checkpoint is deleted and the new config written to ``config.yaml``.
    """
    out_dir = Path(out_dir)
    previous, ckpt = out_dir / "config.yaml", out_dir / "checkpoint.pt"
    if ckpt.exists() and (not previous.exists() or config.load_yaml(previous) != resolved):
        print(f"{ckpt} was made with another config: starting afresh")
        ckpt.unlink()
    config.save_resolved(resolved, previous)
