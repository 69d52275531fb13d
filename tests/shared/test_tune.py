"""shared.tune: exact trial counts with several workers on one study, the defaults enqueued once,
loud sweep files, and one real gan_simclr pretrain sweep end to end on tiny synthetic data."""
import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from shared.config import REPO_ROOT as REPO
from papers.gan_simclr import pretrain
from shared import config, tracking, tune


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
    return tune.SweepStage(paper="toy", stage="fit", args_type=ToyArgs, resolve=_toy_resolve, run=_toy_run)


def _suite(tmp_path, backend="none"):
    suite = yaml.safe_load((REPO / "params.yaml").read_text())
    suite.update(scale="smoke", tracking={"backend": backend, "uri": None})
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
    tune.run_sweep(_toy_sweep(tmp_path), n_trials=7, workers=2, **kwargs)
    study = optuna.load_study(study_name="toy-smoke", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 7 and all(t.state in tune.FINISHED for t in trials)
    assert sorted(t.number for t in trials) == list(range(7))
    out = capfd.readouterr().out
    assert "[worker 0] trial" in out and "[worker 1] trial" in out  # both processes ran trials
    assert trials[0].params == {"lr": 0.1, "momentum": 0.9} and trials[0].user_attrs["enqueued"]

    # Resume for a total of 10 (in this process): three more trials, the defaults not enqueued again.
    summary = tune.run_sweep(_toy_sweep(tmp_path), n_trials=10, workers=1, **kwargs)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 10 and all(t.state in tune.FINISHED for t in trials)
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
    tune.run_sweep(_toy_sweep(tmp_path, args={"delay": 0.0}), n_trials=1, **kwargs)
    with pytest.raises(config.ConfigError, match="another sweep"):
        tune.run_sweep(_toy_sweep(tmp_path, args={"delay": 0.0}, budget={"toy": {"epochs": 2}}), n_trials=2,
                        **kwargs)


def test_split_is_exact():
    assert tune.split(14, 3) == [5, 5, 4] and tune.split(2, 4) == [1, 1, 0, 0]
    assert all(sum(tune.split(n, w)) == n for n in range(20) for w in range(1, 6))


# ---- the sweep file is checked loudly

def _gan_simclr_sweep(tmp_path, edit) -> str:
    doc = yaml.safe_load((REPO / "papers/gan_simclr/sweep.yaml").read_text())
    edit(doc)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(n_trails=3), "unknown key 'n_trails'"),
    (lambda d: d["space"]["lr"].update(hgh=1.0), "unknown key 'space.lr.hgh'"),
    (lambda d: d["space"]["lr"].update(key="pretrain.optimizers.lars.lrr"), "key 'space.lr.key'"),
    (lambda d: d["space"]["lr"].update(low=0.5), "'space.lr': the params value 0.15"),
    (lambda d: d["scales"]["mini"]["budget"]["pretrain"]["optimizers"]["lars"].update(epoch=3), "lars.epoch"),
    (lambda d: d["args"].update(fake=0), "unknown key 'args.fake'"),
    (lambda d: d.update(stage="gan_simclr.pretrian"), "unknown stage 'gan_simclr.pretrian'"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, edit, message):
    path = _gan_simclr_sweep(tmp_path, edit)
    with pytest.raises(config.ConfigError, match=message) as err:
        tune.load_plan(path, "mini")
    assert path in str(err.value)


def test_the_gan_simclr_sweep_starts_from_the_params_yaml_values():
    plan = tune.load_plan(REPO / "papers/gan_simclr/sweep.yaml", "mini")
    lars = config.load_yaml(REPO / "papers/gan_simclr/params.yaml")["pretrain"]["optimizers"]["lars"]
    assert plan.defaults == {"lr": lars["lr"], "momentum": lars["momentum"], "weight_decay": lars["weight_decay"],
                             "eta": lars["eta"], "warmup_epochs": 0.0}
    cfg = pretrain.load_config(pretrain.PARAMS, "mini", plan.overrides({"lr": 0.5}))
    assert cfg.optimizers["lars"].lr == 0.5 and cfg.optimizers["lars"].epochs == 4  # the trial budget
    assert cfg.optimizers["lars"].eta == lars["eta"] and cfg.width == 0.25  # the rest stays the scale's


# ---- one real sweep of gan_simclr's pretrain on tiny synthetic data

def _tiny_prepared(tmp_path):
    rng = np.random.default_rng(0)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for split, n in (("train", 40), ("test", 20)):
        np.savez(prepared / f"{split}.npz", x=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                 y=np.arange(n, dtype=np.int64) % 10)
    np.save(tmp_path / "subset.npy", np.arange(40, dtype=np.int64))
    return prepared, tmp_path / "subset.npy"


def test_gan_simclr_pretrain_sweep_end_to_end(tmp_path, monkeypatch):
    prepared, subset = _tiny_prepared(tmp_path)

    def edit(doc):
        doc["args"].update(prepared=str(prepared), subset=str(subset))
        doc["scales"]["smoke"]["budget"]["pretrain"].update(test_limit=None, linear={"epochs": 2})
        for opt in ("lars", "adam"):
            doc["scales"]["smoke"]["budget"]["pretrain"]["optimizers"][opt].update(batch_size=16)

    loggers = []  # the study's run and, through it, the trials' and the reference's
    monkeypatch.setattr(tracking, "make_logger",
                        lambda backend, experiment, run_name=None, tags=None, tracking_uri=None:
                        loggers.append(tracking.NullLogger(run_name, tags)) or loggers[-1])
    out = tmp_path / "out"
    summary = tune.run_sweep(_gan_simclr_sweep(tmp_path, edit), scale="smoke", n_trials=2,
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}", out=out,
                              suite_params=_suite(tmp_path, backend="mlflow"))

    assert sum(summary["states"].values()) == 2 and summary["states"].get("COMPLETE") == 2
    assert summary["defaults"]["number"] == 0 and summary["defaults"]["params"]["lr"] == 0.15
    assert 0 <= summary["references"]["adam"]["value"] <= 100
    assert [c["step"] for c in summary["references"]["adam"]["curve"]] == [1, 2]
    assert all(list(t["curve"]) == [1, 2] for t in summary["trials"])  # every epoch reported
    # best_params.yaml is params.yaml-shaped: pretrain takes it as --overrides
    cfg = pretrain.load_config(pretrain.PARAMS, "smoke", out / "best_params.yaml")
    assert cfg.optimizers["lars"].lr == pytest.approx(summary["best"]["params"]["lr"])
    assert cfg.optimizers["lars"].epochs == 2  # the budget is not part of the best parameters
    for name in ("summary.md", "summary.json", "optimization_history.png", "intermediate_values.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["scale"] == "smoke"

    (study_run,) = loggers
    assert study_run.tags["kind"] == "sweep" and study_run.tags["study"] == "lars_fake0-smoke"
    assert [c.run_name for c in study_run.children] == ["trial 0", "trial 1", "reference adam"]
    trial0 = study_run.children[0]
    assert {k: trial0.tags[k] for k in ("paper", "stage", "scale", "study", "trial")} == {
        "paper": "gan_simclr", "stage": "pretrain", "scale": "smoke", "study": "lars_fake0-smoke", "trial": "0"}
    assert trial0.status == "FINISHED" and trial0.tags["state"] == "COMPLETE"
    assert trial0.params["pretrain.optimizers.lars.epochs"] == "2" and trial0.params["trial.lr"] == "0.15"
    assert [s for s, _ in trial0.metric_history("eval/linear_test_acc")] == [1, 2]
    assert "best_params.yaml" in study_run.artifacts


def test_pretrain_overrides_file_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "best_params.yaml"
    bad.write_text(yaml.safe_dump({"pretrain": {"optimizers": {"lars": {"lrr": 0.3}}}}))
    with pytest.raises(config.ConfigError, match="lrr") as err:
        pretrain.load_config(pretrain.PARAMS, "mini", bad)
    assert str(bad) in str(err.value)
    code = pretrain.main(["--fakes", "0", "--optimizer", "lars", "--seed", "0", "--out", str(tmp_path / "run"),
                          "--suite-params", str(_suite(tmp_path)), "--overrides", str(bad)])
    assert code == 2 and "pretrain.optimizers.lars.lrr" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"pretrian": {}}))
    with pytest.raises(config.ConfigError, match="unknown key 'pretrian'"):
        pretrain.load_config(pretrain.PARAMS, "mini", bad)


def test_a_pruned_trial_stops_its_run(tmp_path):
    """A trial below the median of the finished ones at an evaluation stops there (state PRUNED)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _toy_sweep(tmp_path, args={"delay": 0.0}, enqueue_defaults=False,
                      pruner={"n_startup_trials": 2, "n_warmup_steps": 1})
    study = optuna.create_study(study_name="toy-smoke", storage=storage, direction="maximize")
    for lr in (0.1, 0.12, 0.001):  # two good runs, then a bad one
        study.enqueue_trial({"lr": lr, "momentum": 0.9})
    tune.run_sweep(path, scale="smoke", n_trials=3, storage=storage, out=tmp_path / "out",
                    suite_params=_suite(tmp_path), references=False)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert list(study.trials[2].intermediate_values) == [1]  # stopped after its first evaluation



@pytest.fixture(autouse=True)
def _toy_stage_importable(monkeypatch):
    """Sweep files name their stage as `module:function`; the toy stage lives in this module, which
    spawned workers import by name (they inherit the parent's sys.path)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
