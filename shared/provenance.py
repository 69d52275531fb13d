"""Where a number came from: the command, the commit, whether the tree was dirty, and the machine.

Every metrics and results file carries :func:`provenance`. A dirty tree is recorded with a hash of
its diff (``git diff HEAD`` plus the untracked files' names and contents), so two results made from
the same uncommitted change can be told apart from two made from different ones.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from shared.config import REPO_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the repository this file is in, or None outside git / before the first commit."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


# What a pipeline itself rewrites while it runs: DVC's lock files and the reports' results. Changes
# there do not change what made a number, so they do not make the tree dirty.
NOT_SOURCE = (":(exclude,glob)**/dvc.lock", ":(exclude,glob)dvc.lock", ":(exclude,glob)papers/*/results/**")


def tree_state() -> dict[str, object]:
    """``{"dirty": bool | None, "diff_sha256": str | None}`` for the working tree now.

    Ignored files (outputs, data, the MLflow store) and :data:`NOT_SOURCE` do not count; untracked
    files do. ``dirty`` is None outside git.
    """
    status = _git("status", "--porcelain", "--untracked-files=all", "--", ".", *NOT_SOURCE)
    if status is None:
        return {"dirty": None, "diff_sha256": None}
    if not status.strip():
        return {"dirty": False, "diff_sha256": None}
    digest = hashlib.sha256((_git("diff", "HEAD", "--binary", "--", ".", *NOT_SOURCE) or "").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            path = REPO_ROOT / line[3:]
            digest.update(line.encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return {"dirty": True, "diff_sha256": digest.hexdigest()}


def command() -> str:
    """The command line that is running, with the script relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else Path(script.name)
    return " ".join([script.as_posix(), *sys.argv[1:]])


def provenance(device: str | torch.device | None = None) -> dict[str, object]:
    """The command, commit, tree state, torch version, device, CPU threads and world size (processes
    of a torchrun launch, 1 otherwise: shared.distributed) that made a number."""
    return {"command": command(), "commit": git_commit() or "unknown", **tree_state(),
            "torch": torch.__version__, "device": str(device) if device is not None else "unknown",
            "threads": torch.get_num_threads(), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
