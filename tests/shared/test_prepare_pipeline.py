"""The top-level DVC pipeline, run for real at smoke scale on the offline data."""
import json

import numpy as np
import yaml

from shared import data

SHARED_STAGES = ["prepare", "subset", "extractor"]


def test_prepare_stages_run_at_smoke_scale(smoke_project, dvc, data_root):
    project = smoke_project()
    # the shared stages by name: `dvc repro` alone also runs every paper (their alias stages)
    run = dvc(["repro", *SHARED_STAGES], project)
    assert run.returncode == 0, run.stdout + run.stderr
    x, y = data.load_prepared(project / "data/prepared/cifar10", "train")
    assert x.shape == (400, 3, 32, 32) and x.dtype == np.uint8  # smoke: 40 per class
    assert np.bincount(y).tolist() == [40] * 10
    assert data.load_prepared(project / "data/prepared/mnist", "test")[0].shape == (400, 1, 28, 28)
    assert data.load_prepared(project / "data/prepared/omniglot", "background")[0].shape[1:] == (1, 105, 105)
    idx = data.load_indices(project / "data/subsets/cifar10_5k.npy")
    assert np.bincount(y[idx]).tolist() == [20] * 10
    # GenCL's ImageNet stand-in: Tiny-ImageNet-100 at 64 x 64, 40 of its 300 train / 50 test images per class
    tx, ty = data.load_prepared(project / "data/prepared/tinyimagenet100", "train")
    assert tx.shape == (4000, 3, 64, 64) and tx.dtype == np.uint8 and np.bincount(ty).tolist() == [40] * 100
    assert np.bincount(data.load_prepared(project / "data/prepared/tinyimagenet100", "test")[1]).tolist() == [40] * 100
    # its label subsets (1% / 10%: 3 and 30 per class at every scale) and the SSL set (2 per class at smoke)
    subsets = {name: data.load_indices(project / f"data/subsets/tinyimagenet100_{name}.npy")
               for name in ("1pct", "10pct", "ssl10k")}
    for name, per_class in {"1pct": 3, "10pct": 30, "ssl10k": 2}.items():
        assert np.bincount(ty[subsets[name]], minlength=100).tolist() == [per_class] * 100, name
        assert len(np.unique(subsets[name])) == len(subsets[name]), name
    resolved = yaml.safe_load((project / "data/prepared/cifar10/config.yaml").read_text())
    assert resolved["scale"] == "smoke" and resolved["limit_per_class"] == 40
    meta = json.loads((project / "data/subsets/cifar10_5k.npy.json").read_text())
    assert meta["scale"] == "smoke" and meta["per_class"] == 20
    from mlflow import MlflowClient  # the stages logged into the project's own local store
    client = MlflowClient(f"sqlite:///{project}/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("data").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        "extractor/cifar10", "prepare/cifar10", "prepare/mnist", "prepare/omniglot", "prepare/tinyimagenet100",
        "subset/cifar10_5k", "subset/tinyimagenet100_10pct", "subset/tinyimagenet100_1pct",
        "subset/tinyimagenet100_ssl10k"]
    extractor = json.loads((project / "data/extractor/metrics.json").read_text())
    assert extractor["scale"] == "smoke" and "in-domain" in extractor["label"]
    assert {r.data.tags["scale"] for r in runs} == {"smoke"} and {r.info.status for r in runs} == {"FINISHED"}
    again = dvc(["status", *SHARED_STAGES], project)
    assert "up to date" in again.stdout, again.stdout


def test_missing_data_fails_the_stage_naming_the_ways_and_writes_nothing(tmp_path, smoke_project, dvc):
    project = smoke_project(data={"paths": {"cifar10": str(tmp_path / "nowhere")}})
    run = dvc(["repro", "prepare@cifar10"], project)
    assert run.returncode != 0
    assert "nowhere" in run.stderr and "REPRO_DATA_DIR" in run.stderr
    assert not (project / "data/prepared/cifar10").exists()


def test_bad_params_fail_naming_key_and_file(smoke_project, dvc):
    # a typo beside the keys the stage depends on (dvc.yaml): the stage names it
    project = smoke_project(prepare={"limit_per_class": None, "limit_per_clas": 3})
    run = dvc(["repro", "prepare@mnist"], project)
    assert run.returncode != 0
    assert "params.yaml: unknown key 'prepare.limit_per_clas'" in run.stderr
    # a typo in place of one: DVC stops first, naming the key it misses
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "prepare": {"limit_per_clas": 3}}))
    run = dvc(["repro", "prepare@mnist"], project)
    assert run.returncode != 0
    assert "Parameters 'prepare.limit_per_class' are missing from 'params.yaml'" in run.stderr
