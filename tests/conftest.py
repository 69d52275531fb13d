"""Test-wide settings and fixtures: one thread, the data root a user would set, toy data, DVC projects.

Test modules never import each other (pytest runs with ``--import-mode=importlib``): what several
modules need lives here as a fixture.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shared.config import REPO_ROOT

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline data root, read through REPRO_DATA_DIR exactly as a user sets it."""
    root = os.environ.get("REPRO_DATA_DIR")
    message = "REPRO_DATA_DIR is not set (the README's test command sets it to ../shared/data)"
    if not root:
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must exercise the real data, never skip it
        pytest.skip(message)
    return Path(root)


# ---- toy data and networks

def _toy_images(n=64, size=16, seed=0):
    """Class-coloured noisy uint8 images: a linear probe can tell the 4 classes apart."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=torch.float)[y]
    x = base[:, :, None, None] + 30 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y


def _tiny_net(seed=0):
    """A ResNet-18 of width 1/16 and a SimCLR projector 16 -> 8."""
    from shared.models import resnet18, simclr_projector

    torch.manual_seed(seed)
    encoder = resnet18(width=1 / 16)
    return encoder, simclr_projector(encoder.feature_dim, 16, 8)


@pytest.fixture
def toy_images():
    """``toy_images(n=64, size=16, seed=0) -> (uint8 x, y)``."""
    return _toy_images


@pytest.fixture
def tiny_net():
    """``tiny_net(seed=0) -> (encoder, projector)``."""
    return _tiny_net


# ---- DVC projects at smoke scale

def run_dvc(args, cwd, timeout=600):
    """``dvc *args`` in ``cwd`` with this venv's ``python`` first on PATH (the stages call ``python``)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    if env.get("REPRO_DATA_DIR"):  # the stages run in `cwd`, so a relative data root must be made absolute
        env["REPRO_DATA_DIR"] = str(Path(env["REPRO_DATA_DIR"]).resolve())
    return subprocess.run([str(Path(bin_dir) / "dvc"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def dvc():
    """``dvc(args, cwd) -> CompletedProcess``."""
    return run_dvc


@pytest.fixture
def smoke_project(tmp_path):
    """``smoke_project(packages=("shared",), **params) -> Path``: a DVC project in ``tmp_path``.

    It holds the repository's top-level files and ``packages`` (without outputs or results), and a
    ``params.yaml`` at scale smoke with ``params`` overriding top-level keys.
    """
    def make(packages=("shared",), **overrides):
        shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
        for package in packages:
            shutil.copytree(REPO_ROOT / package, tmp_path / package,
                            ignore=shutil.ignore_patterns("__pycache__", "outputs", "results"))
        params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
        params.update(scale="smoke", **overrides)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        assert run_dvc(["init", "--no-scm", "-q"], tmp_path).returncode == 0
        return tmp_path
    return make
