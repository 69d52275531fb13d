"""Test-wide settings: small thread count, the data root a user would set."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


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
