"""generative_prior end to end: `dvc repro papers/generative_prior` at smoke scale on the real CIFAR-10 copy
(200 training / 200 test images, one seed, the runs of `scales.smoke.pretrain.run_names`)."""
import json

import numpy as np
from PIL import Image

P = "papers/generative_prior"


def test_generative_prior_pipeline_at_smoke_scale(smoke_project, dvc, data_root):
    project = smoke_project(packages=("shared", "papers"), shared_cache=True,
                            tracking={"backend": "none", "uri": None})

    run = dvc(["repro", P], project, timeout=1800)  # the README's literal command: the alias stage
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"claims ({P}/results/smoke/claims.json)" in run.stdout  # the alias printed them

    out = project / P / "outputs"
    assert json.loads((out / "data/meta.json").read_text())["counts"] == {"train": 200, "test": 200}
    ebm = json.loads((out / "ebm/metrics.json").read_text())
    assert ebm["scale"] == "smoke" and ebm["steps"] == 3 and "auc_real_vs_noise" in ebm["metrics"]
    Image.open(out / "ebm/samples.png").verify()
    chain = json.loads((out / "langevin/default/metrics.json").read_text())
    assert {f"psnr_step{k}" for k in (0, 5, 10, 15, 20)} <= set(chain["metrics"])
    Image.open(out / "langevin/default/chain.png").verify()
    assert "skipped" in json.loads((out / "langevin/std2/metrics.json").read_text())  # not run at smoke
    gan = json.loads((out / "gan/metrics.json").read_text())
    assert {"d_knn_acc", "d_knn_acc_init", "d_real_fake_acc"} <= set(gan["metrics"])
    assert gan["method"] == "diffaugment[color,translation,cutout]"  # scales.smoke.gan.policy
    assert [0 <= h["d_knn_acc"] <= 100 for h in gan["history"]] == [True, True]  # D's kNN at steps 2 and 4

    # one process per run, its seeds inside: seed 0 ran, seeds 1 and 2 are skip markers at smoke
    simclr = json.loads((out / "pretrain/simclr_default/seed0/metrics.json").read_text())
    assert simclr["row"] == "simclr_default" and simclr["run"]["langevin"]["snapshot"] == 15
    assert 0 <= simclr["metrics"]["linear_eval_acc"] <= 100 and simclr["curve"]
    assert "skipped" in json.loads((out / "pretrain/simclr_default/seed1/metrics.json").read_text())
    byol_d = json.loads((out / "pretrain/byol_disc0p1/seed0/metrics.json").read_text())
    assert byol_d["run"]["disc"]["coeff"] == 0.1 and byol_d["discriminator"]["head"] == "trainable"
    assert byol_d["discriminator"]["source"] == "trained"
    control = json.loads((out / "pretrain/byol_discinit0p1/seed0/metrics.json").read_text())  # D at initialisation
    assert control["run"]["disc"]["source"] == "init" and control["discriminator"]["file"].startswith("none")
    assert "skipped" in json.loads((out / "pretrain/byol_lambda0p1/seed0/metrics.json").read_text())
    flat = json.loads((out / "metrics/pretrain/simclr_default.json").read_text())
    assert set(flat) == {"seed0/linear_eval_acc", "seed0/knn_acc"}

    results = project / P / "results/smoke"
    summary = json.loads((results / "summary.json").read_text())
    steps = {r: v for r, v in summary["tables"]["steps"].items()} if "tables" in summary else summary["steps"]
    assert steps["simclr_default"]["n"] == 1 and np.isfinite(steps["simclr_default"]["mean"])
    for name in ("langevin_steps.png", "convergence.png", "ebm_samples.png", "langevin_chain.png", "gan_samples.png"):
        Image.open(results / name).verify()
    claims = json.loads((results / "claims.json").read_text())
    assert set(claims["verdicts"].values()) == {"inconclusive"}  # one seed: nothing can be tested
    assert summary["extra_rows"]["byol_discinit0p1"]["n"] == 1
    assert (results / "runs/pretrain/simclr_default/seed0/metrics.json").is_file()
    assert "up to date" in dvc(["status", f"{P}/dvc.yaml"], project).stdout
