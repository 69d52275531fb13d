"""shared.tracking: loggers (NullLogger in memory, MLflowLogger on a temporary SQLite store), checked
against what MLflow reads back."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from shared import tracking
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


# ---------------------------------------------------------------- one run per thing, what the UI shows

def test_resume_reopens_a_run_and_ends_abandoned_ones(uri):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    tags = {"stage": "sweep", "study": "s1"}
    with MLflowLogger("exp_resume", "sweep/s1", tags, uri) as first:
        pass
    again = MLflowLogger("exp_resume", "sweep/s1", tags, uri, resume=tracking.SAME_TAGS)
    assert again.run_id == first.run_id and again.resumed
    assert client.get_run(first.run_id).info.status == "RUNNING"
    again.close()
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert client.get_run(first.run_id).data.tags["resumes"] == "1"
    # another study's run is not it; a run id from elsewhere starts a new run
    with MLflowLogger("exp_resume", "sweep/s1", {**tags, "study": "s2"}, uri, resume=tracking.SAME_TAGS) as other:
        assert other.run_id != first.run_id and not other.resumed
    with MLflowLogger("exp_resume", "sweep/s1", tags, uri, resume="0" * 32) as fresh:
        assert fresh.run_id != first.run_id

    abandoned = MLflowLogger("exp_resume", "train/x", {"stage": "train"}, uri)  # never closed, as after SIGKILL
    with MLflowLogger("exp_resume", "train/x", {"stage": "train"}, uri, end_abandoned=True) as successor:
        assert successor.ended == [abandoned.run_id]
    run = client.get_run(abandoned.run_id)
    assert run.info.status == "KILLED" and successor.run_id in run.data.tags["killed_reason"]
    assert run.data.tags["pid"] == str(os.getpid()) and run.data.tags["host"]


def test_experiments_are_described_for_the_training_view(uri, tmp_path):
    from mlflow import MlflowClient

    with MLflowLogger("exp_described", "r", tracking_uri=uri):
        pass
    tags = MlflowClient(uri).get_experiment_by_name("exp_described").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's "Model training" kind
    assert "`compare/<table>/<scale>`" in tags["mlflow.note.content"]
    readme = tmp_path / "papers" / "alpha" / "README.md"
    readme.parent.mkdir(parents=True)
    readme.write_text("# alpha: a paper\n\nA. Author, \"A Title\",\nICLR 2021.\n\n## The claim\n\n...\n")
    text = tracking.experiment_description("alpha", tmp_path)
    assert text.startswith('**alpha: a paper**\n\nA. Author, "A Title", ICLR 2021.\n\nPackage `papers/alpha`')
    assert "The claim" not in text  # title and citation only


def test_describing_an_experiment_tolerates_a_process_that_tagged_it_first():
    """Two stages started together both find the experiment untagged; the second insert of the same tag
    fails in SQLite. The loser accepts the winner's tag, and still raises when the tag really is missing."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    class RacingClient:
        def __init__(self, stored):
            self.stored, self.set_calls = stored, []

        def set_experiment_tag(self, experiment_id, key, value):
            self.set_calls.append(key)
            raise MlflowException("UNIQUE constraint failed: experiment_tags.key")

        def get_experiment(self, experiment_id):
            return SimpleNamespace(tags=self.stored)

    untagged = SimpleNamespace(experiment_id="3", name="exp_race", tags={})
    everything = {tracking.NOTE_TAG: "by the other process", tracking.KIND_TAG: tracking.TRAINING_KIND}
    client = RacingClient(everything)
    tracking.describe_experiment(client, untagged)
    assert client.set_calls == [tracking.NOTE_TAG, tracking.KIND_TAG]
    with pytest.raises(MlflowException, match="UNIQUE"):
        tracking.describe_experiment(RacingClient({tracking.NOTE_TAG: "set"}), untagged)  # KIND_TAG missing


def test_saved_views_show_the_result_runs_numbers_as_columns(uri):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    with MLflowLogger("exp_views", "compare/t1/mini", {"kind": "comparison", "table": "t1", "scale": "mini"},
                      uri) as log:
        log.log_metrics({"reported/r10": 1.0, "reported/r2": 2.0, "reproduced/r10": 3.0, "delta/r10": 2.0,
                         "reported/never_run": 5.0})
    with MLflowLogger("exp_views", "claims/mini", {"kind": "claims", "scale": "mini", "verdict/a": "holds"},
                      uri) as log:
        log.log_metrics({"difference/a": 1.5})
    tracking.update_views(client, log.experiment_id)
    tags = client.get_experiment(log.experiment_id).tags
    view = json.loads(tags["mlflow.sharedViewState.comparisons"])
    assert view["name"] == "Reported vs reproduced" and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["searchFilter"] == "tags.kind = 'comparison'"
    assert state["selectedColumns"] == ["tags.`table`", "tags.`scale`", "metrics.`reported/r10`",
                                        "metrics.`reproduced/r10`", "metrics.`delta/r10`"]  # rows that ran
    claims = json.loads(json.loads(tags["mlflow.sharedViewState.claims"])["state"])
    assert claims["selectedColumns"] == ["tags.`scale`", "tags.`verdict/a`", "metrics.`difference/a`"]
    (link,) = [u for e, name, u in tracking.view_links(client, "http://127.0.0.1:5000")
               if e == "exp_views" and name == "Claims"]
    assert link == (f"http://127.0.0.1:5000/#/experiments/{log.experiment_id}/runs?viewStateShareKey=claims"
                    "&workflowType=machine_learning")


@pytest.mark.parametrize("key", ["fid.final, of the best G_ema", "a(b)", "lr=0.1", "x;y", "during training",
                                 "train.lr", "scales/mini:gan-x_1"])
def test_param_keys_are_checked_as_mlflow_checks_them(key):
    # MLflow's own validator is the reference: a key it refuses fails in flatten_params, before any run starts
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_param_name

    try:
        _validate_param_name(key)
        accepted = True
    except MlflowException:
        accepted = False
    if accepted:
        assert tracking.flatten_params({key: 1}) == {key: "1"}
    else:
        with pytest.raises(ValueError, match="characters MLflow refuses"):
            tracking.flatten_params({"section": {key: 1}})
