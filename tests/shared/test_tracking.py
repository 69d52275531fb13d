"""shared.tracking: loggers (NullLogger in memory, MLflowLogger on a temporary SQLite store), checked
against what MLflow reads back."""
import json
from pathlib import Path

import numpy as np
import pytest

from shared.tracking import MLflowLogger, NullLogger, default_tracking_uri, make_logger


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One SQLite store per module: creating its tables costs about a second."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


# ---------------------------------------------------------------- loggers

def test_null_logger_records_params_metrics_tags():
    with NullLogger("run", tags={"scale": "smoke"}) as log:
        log.log_params({"optim": {"lr": 0.1, "betas": (0.9, 0.99)}, "epochs": 3})
        log.log_metrics({"loss": 2.0}, step=0)
        log.log_metrics({"loss": 1.5, "acc": 0.25}, step=1)
        log.set_tags({"paper": "gan_simclr"})
        log.log_dict({"a": 1}, "config.yaml")
        log.log_image(np.zeros((3, 4, 5), np.uint8), "grid.png")
        child = log.child("linear_eval")
        child.log_metrics({"acc": 0.5})
    assert log.params == {"optim.lr": "0.1", "optim.betas": "(0.9, 0.99)", "epochs": "3"}
    assert log.metrics == [(0, {"loss": 2.0}), (1, {"loss": 1.5, "acc": 0.25})]
    assert log.metric_history("loss") == [(0, 2.0), (1, 1.5)]
    assert log.tags == {"scale": "smoke", "paper": "gan_simclr"}
    assert log.artifacts["grid.png"].shape == (4, 5, 3)  # CHW -> HWC
    assert log.children[0].metrics == [(None, {"acc": 0.5})] and log.status == "FINISHED"
    with pytest.raises(ValueError, match="config.txt"):
        log.log_dict({"a": 1}, "config.txt")


def test_make_logger_and_default_uri(tmp_path, monkeypatch):
    assert isinstance(make_logger("none", "gan_simclr"), NullLogger)
    with pytest.raises(ValueError, match="mlflow, none"):
        make_logger("wandb", "gan_simclr")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert default_tracking_uri(tmp_path) == "http://localhost:5000"


def test_mlflow_logger_round_trip(uri, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    with MLflowLogger("exp_roundtrip", "pretrain", tags={"scale": "smoke"}, tracking_uri=uri) as log:
        log.log_params({"optim": {"lr": 0.1}, "long": "x" * 7000})
        for step, loss in enumerate([3.0, 2.0, float("nan"), float("inf")]):
            log.log_metrics({"loss": loss}, step=step)
        log.set_tags({"paper": "gan_simclr"})
        (tmp_path / "notes.txt").write_text("hi")
        log.log_artifact(tmp_path / "notes.txt", "extra")
        log.log_dict({"lr": 0.1, "path": tmp_path}, "config.json")
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        log.log_figure(fig, "curve.png")
        plt.close(fig)
        log.log_image(np.full((3, 8, 8), 200, np.uint8), "grid.png")
        with log.child("linear_eval", tags={"epoch": "10"}) as child:
            child.log_metrics({"acc": 0.4}, step=10)
    client = MlflowClient(uri)
    run = client.get_run(log.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "pretrain"
    assert run.data.params["optim.lr"] == "0.1" and len(run.data.params["long"]) == 6000
    assert run.data.tags["scale"] == "smoke" and run.data.tags["paper"] == "gan_simclr"
    history = sorted((m.step, m.value) for m in client.get_metric_history(log.run_id, "loss"))
    assert [s for s, _ in history] == [0, 1, 2, 3] and history[:2] == [(0, 3.0), (1, 2.0)]
    assert np.isnan(history[2][1]) and history[3][1] > 1e300  # SQLite stores inf as max float
    listed = {a.path for a in client.list_artifacts(log.run_id)}
    assert {"config.json", "curve.png", "grid.png", "extra"} <= listed
    assert [a.path for a in client.list_artifacts(log.run_id, "extra")] == ["extra/notes.txt"]
    loaded = json.loads(Path(client.download_artifacts(log.run_id, "config.json", str(tmp_path))).read_text())
    assert loaded == {"lr": 0.1, "path": str(tmp_path)}
    child_run = client.get_run(child.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == log.run_id
    assert child_run.info.experiment_id == run.info.experiment_id
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "acc")] == [(10, 0.4)]
    artifact_dir = Path(uri[len("sqlite:///"):]).parent / "artifacts" / "exp_roundtrip"
    assert Path(run.info.artifact_uri[len("file://"):]).is_relative_to(artifact_dir)


def test_mlflow_logger_failed_block_marks_failed(uri):
    from mlflow import MlflowClient

    with pytest.raises(RuntimeError):
        with MLflowLogger("exp_failed", "boom", tracking_uri=uri) as log:
            raise RuntimeError("loss is nan")
    assert MlflowClient(uri).get_run(log.run_id).info.status == "FAILED"
