"""The top-level DVC pipeline, run for real at smoke scale on the offline data."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from conftest import REPO
from shared import data


def dvc(args, cwd):
    bin_dir = str(Path(sys.executable).parent)  # `python` in the stage commands is this venv's
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    if env.get("REPRO_DATA_DIR"):  # the stages run in `cwd`, so a relative data root must be made absolute
        env["REPRO_DATA_DIR"] = str(Path(env["REPRO_DATA_DIR"]).resolve())
    return subprocess.run([str(Path(bin_dir) / "dvc"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def smoke_project(tmp_path, packages=("shared",), **overrides):
    """A DVC project in `tmp_path` with the repository's top-level files and `packages`, at smoke scale."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    for package in packages:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "outputs", "results"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(scale="smoke", **overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert dvc(["init", "--no-scm", "-q"], tmp_path).returncode == 0
    return tmp_path


def test_prepare_stages_run_at_smoke_scale(tmp_path, data_root):
    project = smoke_project(tmp_path)
    run = dvc(["repro"], project)
    assert run.returncode == 0, run.stdout + run.stderr
    x, y = data.load_prepared(project / "data/prepared/cifar10", "train")
    assert x.shape == (400, 3, 32, 32) and x.dtype == np.uint8  # smoke: 40 per class
    assert np.bincount(y).tolist() == [40] * 10
    assert data.load_prepared(project / "data/prepared/mnist", "test")[0].shape == (400, 1, 28, 28)
    assert data.load_prepared(project / "data/prepared/omniglot", "background")[0].shape[1:] == (1, 105, 105)
    idx = data.load_indices(project / "data/subsets/cifar10_5k.npy")
    assert np.bincount(y[idx]).tolist() == [20] * 10
    resolved = yaml.safe_load((project / "data/prepared/cifar10/config.yaml").read_text())
    assert resolved["scale"] == "smoke" and resolved["limit_per_class"] == 40
    meta = json.loads((project / "data/subsets/cifar10_5k.npy.json").read_text())
    assert meta["scale"] == "smoke" and meta["per_class"] == 20
    from mlflow import MlflowClient  # the stages logged into the project's own local store
    client = MlflowClient(f"sqlite:///{project}/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("data").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["extractor/cifar10", "prepare/cifar10", "prepare/mnist",
                                                     "prepare/omniglot", "subset/cifar10_5k"]
    extractor = json.loads((project / "data/extractor/metrics.json").read_text())
    assert extractor["scale"] == "smoke" and "in-domain" in extractor["label"]
    assert {r.data.tags["scale"] for r in runs} == {"smoke"} and {r.info.status for r in runs} == {"FINISHED"}
    again = dvc(["status"], project)
    assert "up to date" in again.stdout, again.stdout


def test_missing_data_fails_the_stage_naming_the_ways_and_writes_nothing(tmp_path):
    project = smoke_project(tmp_path, data={"paths": {"cifar10": str(tmp_path / "nowhere")}})
    run = dvc(["repro", "prepare@cifar10"], project)
    assert run.returncode != 0
    assert "nowhere" in run.stderr and "REPRO_DATA_DIR" in run.stderr
    assert not (project / "data/prepared/cifar10").exists()


def test_bad_params_fail_naming_key_and_file(tmp_path):
    project = smoke_project(tmp_path, prepare={"limit_per_clas": 3})
    run = dvc(["repro", "prepare@mnist"], project)
    assert run.returncode != 0
    assert "params.yaml: unknown key 'prepare.limit_per_clas'" in run.stderr
