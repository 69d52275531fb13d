"""One MLflow run per stage instance (shared.stage.Stage.tracked on a temporary SQLite store): a stage
killed mid-run continues its run, a run left RUNNING by a killed process is marked KILLED, a run a
live process holds is left alone."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from shared import stage, tracking
from shared.config import REPO_ROOT


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def start(tmp_path, uri):
    """stage.start for one stage instance (paper p, stage train, trial 0, out tmp/run), logging to `uri`."""
    doc = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    doc.update(scale="smoke", tracking={"backend": "mlflow", "uri": uri})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    threads = torch.get_num_threads()
    yield lambda: stage.start("p", "train", suite_params=params, out=tmp_path / "run", trial=0)
    torch.set_num_threads(threads)


def killed(st: stage.Stage, resolved: dict, checkpoint: bool = True) -> tracking.MLflowLogger:
    """A tracked run that is never closed, as a SIGKILLed process leaves it: RUNNING in the store."""
    context = st.tracked(resolved, "train/r/seed0", row="r")
    log = context.__enter__()
    log.closed = True  # so the run is never closed, not even when `context` is garbage-collected
    log.log_metrics({"loss": 2.0}, step=1)
    if checkpoint:
        (st.out / "checkpoint.pt").write_bytes(b"made at step 1")
    return log


def runs(uri: str, name: str = "train/r/seed0") -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("p")
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])
            if r.info.run_name == name}


def test_a_stage_killed_mid_run_continues_its_run(start, uri):
    from mlflow import MlflowClient

    first = killed(start(), {"lr": 0.1})
    record_file = start().out / stage.RUN_RECORD
    record = json.loads(record_file.read_text())
    assert record["run_id"] == first.run_id and record["run_name"] == "train/r/seed0"
    assert runs(uri)[first.run_id].info.status == "RUNNING"

    with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:  # the same stage, started again
        assert log.run_id == first.run_id and log.resumed
        log.log_metrics({"loss": 1.0}, step=2)
    (run,) = runs(uri).values()  # one run for the stage, finished
    assert run.info.run_id == first.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumes"] == "1" and run.data.tags["out"].endswith("run")
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]
    assert json.loads(record_file.read_text()) == record  # the same record: DVC sees no change

    with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:  # finished, run again: still one
        assert log.run_id == first.run_id
    assert list(runs(uri)) == [first.run_id]


def test_a_running_run_of_another_config_is_marked_killed(start, uri):
    old = killed(start(), {"lr": 0.1})
    with start().tracked({"lr": 0.2}, "train/r/seed0", row="r") as log:  # the checkpoint is restarted
        assert log.run_id != old.run_id and not log.resumed
        assert log.ended == [old.run_id]
    assert not (start().out / "checkpoint.pt").exists()
    found = runs(uri)
    assert {i: r.info.status for i, r in found.items()} == {old.run_id: "KILLED", log.run_id: "FINISHED"}
    assert "started again as run " + log.run_id in found[old.run_id].data.tags["killed_reason"]
    assert json.loads((start().out / stage.RUN_RECORD).read_text())["run_id"] == log.run_id


def test_a_stage_that_restarts_from_step_zero_gets_a_new_run(start, uri):
    """Killed before its first checkpoint: the stage starts over, so its curves get a new run."""
    old = killed(start(), {"lr": 0.1}, checkpoint=False)
    with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:
        assert log.run_id != old.run_id
    assert {i: r.info.status for i, r in runs(uri).items()} == {old.run_id: "KILLED", log.run_id: "FINISHED"}


def test_a_deleted_run_is_not_reopened(start, uri):
    from mlflow import MlflowClient

    old = killed(start(), {"lr": 0.1})
    MlflowClient(uri).delete_run(old.run_id)
    with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:
        assert log.run_id != old.run_id and not log.resumed
    assert list(runs(uri)) == [log.run_id]


def test_a_run_a_live_process_holds_is_left_running(start, uri):
    old = killed(start(), {"lr": 0.1}, checkpoint=False)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old.set_tags({"pid": alive.pid})  # as if another process of this machine had it open
        with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:
            assert log.ended == []
        assert runs(uri)[old.run_id].info.status == "RUNNING"
    finally:
        alive.kill()
        alive.wait()
    with start().tracked({"lr": 0.1}, "train/r/seed0", row="r") as log:  # its process is gone now
        assert log.ended == [old.run_id]
