"""gan_simclr's sweep (papers/gan_simclr/sweep.yaml): checked against the pretrain stage, started from
the params.yaml values, and run end to end on tiny synthetic data; the stage's --overrides file."""
import json

import numpy as np
import pytest
import yaml

from papers.gan_simclr import pretrain
from shared import config, tracking
from shared.config import REPO_ROOT as REPO
from shared.tune.spec import load_plan
from shared.tune.study import run_sweep


def _suite(tmp_path, backend="none"):
    suite = yaml.safe_load((REPO / "params.yaml").read_text())
    suite.update(scale="smoke", tracking={"backend": backend, "uri": None})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


# ---- the sweep file is checked against the stage

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
    (lambda d: d.update(stage="papers.gan_simclr.pretrian:sweep_stage"), "cannot load"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, edit, message):
    path = _gan_simclr_sweep(tmp_path, edit)
    with pytest.raises(config.ConfigError, match=message) as err:
        load_plan(path, "mini")
    assert path in str(err.value)


def test_the_gan_simclr_sweep_starts_from_the_params_yaml_values():
    plan = load_plan(REPO / "papers/gan_simclr/sweep.yaml", "mini")
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
                        lambda backend, experiment, run_name=None, tags=None, tracking_uri=None, **run:
                        loggers.append(tracking.NullLogger(run_name, tags)) or loggers[-1])
    out = tmp_path / "out"
    summary = run_sweep(_gan_simclr_sweep(tmp_path, edit), scale="smoke", n_trials=2,
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
