"""shared.tune: exact trial counts with several workers on one study, the defaults enqueued once,
loud sweep files and pruning, on a toy stage (no torch). The gan_simclr sweep is tested with its
paper (tests/papers/gan_simclr/test_sweep.py)."""
import dataclasses
import math
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from shared import config
from shared.config import REPO_ROOT as REPO
from shared.tune.spec import SweepStage, load_plan
from shared.tune.study import FINISHED, run_sweep, split


# ---- a toy stage: a known optimum, 3 evaluations per run, no torch; importable by spawned workers

@dataclasses.dataclass
class ToyArgs:
    delay: float = 0.0  # seconds per evaluation, so two workers overlap


TOY_PARAMS = {"toy": {"lr": 0.1, "momentum": 0.9, "epochs": 3}}


def _toy_resolve(scale, overrides, args):
    resolved = config.deep_merge(TOY_PARAMS, overrides)
    if unknown := set(resolved["toy"]) - set(TOY_PARAMS["toy"]):
        raise config.ConfigError(f"<toy>: unknown key 'toy.{sorted(unknown)[0]}'")
    return resolved


def _toy_run(suite, overrides, args, *, logger, report):
    cfg = _toy_resolve(suite.scale, overrides, args)["toy"]
    for epoch in range(1, cfg["epochs"] + 1):
        time.sleep(args.delay)
        acc = epoch / cfg["epochs"] * (90 - 10 * (math.log10(cfg["lr"]) + 1) ** 2 - 20 * abs(cfg["momentum"] - 0.9))
        report(epoch, {"linear_test_acc": acc}, epoch == cfg["epochs"])
    return {"linear_test_acc": acc}


def toy_stage():
    return SweepStage(paper="toy", stage="fit", args_type=ToyArgs, resolve=_toy_resolve, run=_toy_run)


def _suite(tmp_path, backend="none", uri=None):
    suite = yaml.safe_load((REPO / "params.yaml").read_text())
    suite.update(scale="smoke", tracking={"backend": backend, "uri": uri})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _toy_sweep(tmp_path, **extra):
    doc = {"name": "toy", "stage": "test_tune:toy_stage", "args": {"delay": 0.15},
           "space": {"lr": {"key": "toy.lr", "low": 1e-3, "high": 1.0, "log": True},
                     "momentum": {"key": "toy.momentum", "low": 0.5, "high": 0.99}},
           "sampler": {"n_startup_trials": 3}, "pruner": {"n_startup_trials": 2, "n_warmup_steps": 1}, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _param_sets(study):
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)]


def test_two_workers_share_one_study_with_exact_counts_and_one_defaults_trial(tmp_path, capfd):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(scale="smoke", storage=storage, out=tmp_path / "out", suite_params=_suite(tmp_path))
    run_sweep(_toy_sweep(tmp_path), n_trials=7, workers=2, **kwargs)
    study = optuna.load_study(study_name="toy-smoke", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 7 and all(t.state in FINISHED for t in trials)
    assert sorted(t.number for t in trials) == list(range(7))
    out = capfd.readouterr().out
    assert "[worker 0] trial" in out and "[worker 1] trial" in out  # both processes ran trials
    assert trials[0].params == {"lr": 0.1, "momentum": 0.9} and trials[0].user_attrs["enqueued"]

    # Resume for a total of 10 (in this process): three more trials, the defaults not enqueued again.
    summary = run_sweep(_toy_sweep(tmp_path), n_trials=10, workers=1, **kwargs)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 10 and all(t.state in FINISHED for t in trials)
    assert sorted(t.number for t in trials) == list(range(10))
    counts = Counter(_param_sets(study))
    assert max(counts.values()) == 1, counts  # no point measured twice, the defaults included
    assert sum(t.user_attrs.get("enqueued") is not None for t in trials) == 1
    assert summary["states"].get("COMPLETE", 0) + summary["states"].get("PRUNED", 0) == 10
    best = max((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    assert summary["best"]["value"] == best.value
    assert yaml.safe_load((tmp_path / "out" / "best_params.yaml").read_text()) == {"toy": best.params}


def test_a_study_refuses_another_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(scale="smoke", storage=storage, out=tmp_path / "out", suite_params=_suite(tmp_path))
    run_sweep(_toy_sweep(tmp_path, args={"delay": 0.0}), n_trials=1, **kwargs)
    with pytest.raises(config.ConfigError, match="another sweep"):
        run_sweep(_toy_sweep(tmp_path, args={"delay": 0.0}, budget={"toy": {"epochs": 2}}), n_trials=2,
                        **kwargs)


def test_a_study_names_its_objective_and_keeps_one_mlflow_run(tmp_path):
    """The study's value is named for optuna-dashboard and the CLI; the sweep run again (finished,
    then with more trials) reopens the study's MLflow run instead of adding an empty one."""
    from mlflow import MlflowClient

    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    kwargs = dict(scale="smoke", storage=storage, out=tmp_path / "out", references=False,
                  suite_params=_suite(tmp_path, backend="mlflow", uri=uri))
    path = _toy_sweep(tmp_path, args={"delay": 0.0})
    run_sweep(path, n_trials=2, **kwargs)
    assert optuna.load_study(study_name="toy-smoke", storage=storage).metric_names == ["linear_test_acc"]
    run_sweep(path, n_trials=2, **kwargs)  # finished: outputs only
    run_sweep(path, n_trials=3, workers=1, **kwargs)  # resumed with one more trial

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert parent.info.run_name == "sweep/toy-smoke" and parent.info.status == "FINISHED"
    assert parent.data.tags["resumes"] == "2" and parent.data.tags["n_trials"] == "3"
    assert parent.data.params["objective.metric"] == "linear_test_acc" and parent.data.params["study"] == "toy-smoke"
    assert parent.data.tags["mlflow.note.content"] == (tmp_path / "out" / "summary.md").read_text()
    trials = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert trials == ["trial 0", "trial 1", "trial 2"]  # every trial under the one run
    assert len(runs) == 4


def test_split_is_exact():
    assert split(14, 3) == [5, 5, 4] and split(2, 4) == [1, 1, 0, 0]
    assert all(sum(split(n, w)) == n for n in range(20) for w in range(1, 6))


# ---- the sweep file is checked loudly

class NotAStage:
    pass


def not_a_stage():
    return NotAStage()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(n_trails=3), "unknown key 'n_trails'"),
    (lambda d: d["space"]["lr"].update(hgh=1.0), "unknown key 'space.lr.hgh'"),
    (lambda d: d["space"]["lr"].update(key="toy.lrr"), "key 'space.lr.key'"),
    (lambda d: d["space"]["lr"].update(low=0.5), "'space.lr': the params value 0.1"),
    (lambda d: d.update(budget={"toy": {"epoch": 3}}), "toy.epoch"),
    (lambda d: d["args"].update(dealy=0), "unknown key 'args.dealy'"),
    (lambda d: d.update(stage="toy_stage"), "expected module:function"),
    (lambda d: d.update(stage="test_tune:toy_stag"), "cannot load 'test_tune:toy_stag'"),
    (lambda d: d.update(stage="test_tune:not_a_stage"), "returned NotAStage, not a SweepStage"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, edit, message):
    path = _toy_sweep(tmp_path)
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(config.ConfigError, match=message) as err:
        load_plan(path, "mini")
    assert str(path) in str(err.value)


def test_a_pruned_trial_stops_its_run(tmp_path):
    """A trial below the median of the finished ones at an evaluation stops there (state PRUNED)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _toy_sweep(tmp_path, args={"delay": 0.0}, enqueue_defaults=False,
                      pruner={"n_startup_trials": 2, "n_warmup_steps": 1})
    study = optuna.create_study(study_name="toy-smoke", storage=storage, direction="maximize")
    for lr in (0.1, 0.12, 0.001):  # two good runs, then a bad one
        study.enqueue_trial({"lr": lr, "momentum": 0.9})
    run_sweep(path, scale="smoke", n_trials=3, storage=storage, out=tmp_path / "out",
                    suite_params=_suite(tmp_path), references=False)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert list(study.trials[2].intermediate_values) == [1]  # stopped after its first evaluation


@pytest.fixture(autouse=True)
def _toy_stage_importable(monkeypatch):
    """Sweep files name their stage as `module:function`; the toy stage lives in this module, which
    spawned workers import by name (they inherit the parent's sys.path)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
