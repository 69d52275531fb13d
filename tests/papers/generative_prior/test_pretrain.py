"""generative_prior's pretrain stage end to end on tiny synthetic data: a baseline, Langevin runs in each mode and a
discriminator run write the records the report reads; skip markers; resume after a kill; errors naming files.

The losses themselves are tested in test_methods.py.
"""
import json

import numpy as np
import pytest
import torch
import yaml

from papers.generative_prior import pretrain
from papers.generative_prior.config import RUN_NAMES, DiscUse, LangevinUse, RunSpec
from papers.generative_prior.pretrain import LangevinViews, PretrainConfig, default_runs, langevin_file
from shared import checkpoint, config, records
from shared.models.sngan import sngan
from shared.view_sources import PipelineConfig, PrecomputedViews, write_precomputed

N_TRAIN, N_TEST, BATCH, EPOCHS = 40, 16, 16, 2  # 2 steps per epoch
TINY_SSL = {"epochs": EPOCHS, "batch_size": BATCH, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6,
            "warmup_epochs": 1.0, "schedule": "cosine", "eval_every": 1, "log_every": 1}
HEADS = {"embedding_dim": 8, "projector_hidden": 16, "predictor_hidden": 16, "disc_hidden": 16}
RECORD_KEYS = {"curve", "run", "assumptions", "steps", "images"}


def images(n, seed):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def langevin_of(x):
    """A stand-in for the Langevin images: a fixed function of each row (what matters here is the alignment)."""
    return (x.int() // 2 + 64).to(torch.uint8)


@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    """The data folder, precomputed Langevin snapshots, a discriminator file and toy-size params."""
    data = tmp_path / "data"
    data.mkdir()
    train_x, test_x = images(N_TRAIN, 0), images(N_TEST, 1)
    for split, x in (("train", train_x), ("test", test_x)):
        np.savez(data / f"{split}.npz", x=x.numpy(), y=(np.arange(len(x)) % 4).astype(np.int64),
                 source_index=np.arange(len(x), dtype=np.int64))
    for chain, snapshot in (("default", 15), ("default", 5), ("alpha0p5", 15)):
        path = langevin_file(tmp_path / "langevin", LangevinUse(chain=chain, snapshot=snapshot))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_precomputed(path, langevin_of(train_x), train_x, meta={"chain": chain, "snapshot": snapshot})
    torch.manual_seed(0)
    _, D = sngan("sndcgan", width=0.0625, z_dim=8)
    checkpoint.save(tmp_path / "discriminator.pt", {"D": D.state_dict(), "discriminator": "sndcgan",
                                                    "width": 0.0625, "z_dim": 8, "steps": 0})
    runs = config.to_dict(default_runs())
    runs["simclr_steps5"]["langevin"]["mode"] = "add_to_dataset"  # the other modes, on runs of the registry
    runs["byol_steps5"]["langevin"]["mode"] = "both"
    params = tmp_path / "paper_params.yaml"
    params.write_text(yaml.safe_dump({
        "runs": {"n_seeds": 1},
        "langevin": {"run_chains": ["default", "alpha0p5", "alpha0p7"]},
        "gan": {"width": 0.0625, "z_dim": 8},  # what the discinit control rebuilds D from
        "pretrain": {"width": 0.0625, "heads": HEADS, "simclr": TINY_SSL, "byol": TINY_SSL, "runs": runs,
                     "run_names": ["simclr_baseline", "simclr_default", "simclr_steps5", "simclr_alpha0p5",
                                   "byol_baseline", "byol_disc0p1", "byol_steps5", "simclr_disc0p01", "simclr_std2",
                                   "byol_discinit0p1"],
                     "evaluate": {"linear": {"epochs": 3, "batch_size": 8}, "knn_k": 5}}}))
    common = ["--params", str(params), "--suite-params", str(suite_params()), "--data", str(data),
              "--langevin", str(tmp_path / "langevin"), "--discriminator", str(tmp_path / "discriminator.pt")]
    return tmp_path, common, train_x


def run_stage(project, name, seed=0, out=None, extra=()):
    tmp, common, _ = project
    out = out or tmp / f"{name}_seed{seed}"
    code = pretrain.main([*common, "--run", name, "--seed", str(seed), "--out", str(out),
                          "--metrics", str(tmp / "metrics" / f"{out.name}.json"),
                          "--plots", str(tmp / "plots" / f"{out.name}.json"), *extra])
    return code, out


# ---------------------------------------------------------------- the runs and their records

@pytest.mark.parametrize("name,mode,images", [
    ("simclr_baseline", None, N_TRAIN),
    ("simclr_default", "aux_loss", N_TRAIN),
    ("simclr_steps5", "add_to_dataset", 2 * N_TRAIN),
    ("byol_steps5", "both", 2 * N_TRAIN),
    ("byol_disc0p1", None, N_TRAIN),
])
def test_a_run_writes_the_record_the_report_reads(project, name, mode, images):
    tmp = project[0]
    code, out = run_stage(project, name)
    assert code == 0
    record = records.read(out / "metrics.json")
    assert (record.paper, record.stage, record.table, record.row, record.seed) == \
        ("generative_prior", "pretrain", "runs", name, 0)
    assert set(record.metrics) == {"linear_eval_acc", "knn_acc"}
    assert all(0 <= v <= 100 for v in record.metrics.values())
    assert RECORD_KEYS <= set(record.extra)
    steps = EPOCHS * (N_TRAIN // BATCH)  # the same steps whatever the dataset holds
    assert record.extra["steps"] == steps and record.extra["images"] == images
    assert record.extra["curve"] == [
        {"epoch": e, "step": e * (N_TRAIN // BATCH), "linear_eval_acc": record.extra["curve"][e - 1]["linear_eval_acc"],
         "knn_acc": record.extra["curve"][e - 1]["knn_acc"]} for e in (1, 2)]
    assert record.extra["curve"][-1]["linear_eval_acc"] == record.metrics["linear_eval_acc"]
    expected = config.to_dict(default_runs()[name])
    if mode in ("add_to_dataset", "both"):
        expected["langevin"]["mode"] = mode
    assert record.extra["run"] == expected
    assert set(record.extra["assumptions"]) == {"dataset", "encoder", "metric", "optimizer"}
    assert "CIFAR-10" in record.extra["assumptions"]["dataset"]
    assert (record.extra["langevin"] is not None) == (mode is not None)
    assert (record.extra["discriminator"] is not None) == name.startswith("byol_disc")
    doc = checkpoint.load(out / "encoder.pt")
    assert doc["format"] == "generative_prior/encoder" and doc["meta"]["steps"] == steps
    dvc_metrics = json.loads((tmp / "metrics" / f"{out.name}.json").read_text())
    assert dvc_metrics == record.metrics
    plot = json.loads((tmp / "plots" / f"{out.name}.json").read_text())
    assert [row["step"] for row in plot] == [2, 4] and set(plot[0]) == {"step", "linear_eval_acc"}


def test_the_discinit_control_takes_d_at_initialisation_from_the_gan_section_not_the_file(project, tmp_path,
                                                                                        monkeypatch):
    tmp, common, _ = project
    calls = []
    real = pretrain.initial_discriminator

    def spy(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(pretrain, "initial_discriminator", spy)
    args = list(common)
    args[args.index("--discriminator") + 1] = str(tmp_path / "nothing.pt")  # never read by the control
    out = tmp / "init"
    assert pretrain.main([*args, "--run", "byol_discinit0p1", "--seed", "0", "--out", str(out)]) == 0
    suite_seed = yaml.safe_load(open(args[args.index("--suite-params") + 1]))["seed"]
    assert [c[:4] for c in calls] == [("sndcgan", 0.0625, 8, suite_seed)]
    record = records.read(out / "metrics.json")
    assert record.extra["run"]["disc"] == {"coeff": 0.1, "head": "trainable", "source": "init"}
    assert record.extra["discriminator"]["source"] == "init"
    assert record.extra["discriminator"]["file"].startswith("none")
    assert default_runs()["byol_discinit0p1"] == RunSpec(method="byol", disc=DiscUse(coeff=0.1, source="init"))
    assert default_runs()["byol_disc0p1"].disc.source == "trained"


def test_a_baseline_needs_neither_the_langevin_files_nor_the_discriminator(project, tmp_path):
    tmp, common, _ = project
    args = [a for a in common]
    args[args.index("--langevin") + 1] = str(tmp_path / "nowhere")
    args[args.index("--discriminator") + 1] = str(tmp_path / "nothing.pt")
    assert pretrain.main([*args, "--run", "byol_baseline", "--seed", "0", "--out", str(tmp / "b")]) == 0


def test_a_missing_langevin_snapshot_or_discriminator_is_a_one_line_error_naming_it(project, tmp_path, capsys):
    tmp, common, _ = project
    args = list(common)
    args[args.index("--langevin") + 1] = str(tmp_path / "nowhere")
    args[args.index("--discriminator") + 1] = str(tmp_path / "nothing.pt")
    assert pretrain.main([*args, "--run", "simclr_default", "--seed", "0", "--out", str(tmp / "a")]) == 2
    assert "nowhere/default/step15.npy" in capsys.readouterr().err
    assert pretrain.main([*args, "--run", "simclr_disc0p01", "--seed", "0", "--out", str(tmp / "d")]) == 2
    assert "nothing.pt does not exist" in capsys.readouterr().err


def test_a_chain_the_scale_does_not_run_is_an_error_naming_the_key(project, capsys):
    assert run_stage(project, "simclr_std2")[0] == 2
    assert "chain 'std2' is not in langevin.run_chains" in capsys.readouterr().err


def test_langevin_images_of_another_training_set_are_refused(project, capsys):
    tmp, _, train_x = project
    other = images(N_TRAIN, 7)
    write_precomputed(langevin_file(tmp / "langevin", LangevinUse()), langevin_of(other), other)
    assert run_stage(project, "simclr_default")[0] == 2
    assert "not the source images stored for their index" in capsys.readouterr().err


def test_the_langevin_view_is_the_augmented_langevin_image_of_each_rows_real_image(project):
    tmp, _, train_x = project
    source = PrecomputedViews(langevin_file(tmp / "langevin", LangevinUse()))
    views = LangevinViews(PipelineConfig.identity(), source, train_x)
    index = torch.tensor([3, 0, 45, 79])  # rows >= 40: the Langevin rows of the "both" dataset
    x = torch.cat([train_x, langevin_of(train_x)])[index]
    v1, v2, vl = views(x, index)
    assert torch.equal(v1, x.float() / 255) and torch.equal(v2, x.float() / 255)
    assert torch.equal(vl, langevin_of(train_x)[index % N_TRAIN].float() / 255)


# ---------------------------------------------------------------- skips, resume, config errors

def test_seeds_beyond_the_scale_and_runs_outside_run_names_write_skip_markers(project):
    tmp = project[0]
    for name, seed, reason in (("simclr_baseline", 1, "seed 1 is not run"),
                               ("byol_alpha0p7", 0, "run byol_alpha0p7 is not run at scale smoke")):
        code, out = run_stage(project, name, seed)
        assert code == 0
        record = records.read(out / "metrics.json")
        assert record.is_skip and reason in record.skipped
        assert json.loads((tmp / "metrics" / f"{out.name}.json").read_text()) == {}


def test_an_unknown_run_is_an_error_listing_the_runs(project, capsys):
    assert run_stage(project, "simclr_nothing")[0] == 2
    assert "unknown run 'simclr_nothing'" in capsys.readouterr().err


def test_a_run_killed_after_its_first_epoch_resumes_to_the_same_result(project, monkeypatch):
    _, full = run_stage(project, "simclr_default", out=project[0] / "full")
    original, calls = pretrain.linear_eval, []

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2 trained, its checkpoint not yet written: a kill there
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)
    monkeypatch.setattr(pretrain, "linear_eval", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_stage(project, "simclr_default", out=project[0] / "killed")
    assert checkpoint.load(project[0] / "killed" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(pretrain, "linear_eval", original)
    code, resumed = run_stage(project, "simclr_default", out=project[0] / "killed")
    assert code == 0
    a, b = records.read(full / "metrics.json"), records.read(resumed / "metrics.json")
    assert a.metrics == b.metrics and a.extra["curve"] == b.extra["curve"] and a.extra["steps"] == b.extra["steps"]
    wa, wb = (checkpoint.load(p / "encoder.pt")["encoder"] for p in (full, resumed))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_default_registry_defines_every_run_as_its_name_says():
    runs = default_runs()
    assert list(runs) == list(RUN_NAMES)
    assert runs["simclr_baseline"] == RunSpec("simclr")
    assert runs["byol_default"] == RunSpec("byol", langevin=LangevinUse(chain="default", snapshot=15, lam=0.01))
    assert runs["simclr_steps0"].langevin.snapshot == 0 and runs["byol_steps20"].langevin.snapshot == 20
    assert runs["simclr_stepsize20"].langevin == LangevinUse(chain="stepsize20")
    assert runs["simclr_std0p5"].langevin.chain == "std0p5" and runs["byol_alpha0p7"].langevin.chain == "alpha0p7"
    assert runs["byol_lambda0p001"].langevin == LangevinUse(lam=0.001)
    assert runs["simclr_disc0p001"] == RunSpec("simclr", disc=DiscUse(coeff=0.001))
    assert runs["byol_disc1"].disc.coeff == 1.0


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="run_names: 'byol_default' has no definition"):
        PretrainConfig(runs={"simclr_baseline": RunSpec("simclr")}, run_names=["byol_default"])
    with pytest.raises(ValueError, match="runs.simclr_x: not a run"):
        PretrainConfig(runs={"simclr_x": RunSpec("simclr")}, run_names=[])
    with pytest.raises(ValueError, match="does not match the run's name"):
        PretrainConfig(runs={"simclr_baseline": RunSpec("byol")}, run_names=[])
    with pytest.raises(config.ConfigError, match="key .pretrain.runs.simclr_default.langevin. expects"):
        config.build(PretrainConfig, {"runs": {"simclr_default": {"method": "simclr", "langevin": {"mode": "x"}}},
                                      "run_names": []}, prefix="pretrain.")
