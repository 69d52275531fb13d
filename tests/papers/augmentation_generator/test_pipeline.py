"""augmentation_generator end to end: `dvc repro papers/augmentation_generator` at smoke scale on the real
MNIST and Omniglot copies (20 characters, 10 MNIST images per class, one seed)."""
import json

import numpy as np
from PIL import Image

P = "papers/augmentation_generator"


def test_augmentation_generator_pipeline_at_smoke_scale(smoke_project, dvc, data_root):
    project = smoke_project(packages=("shared", "papers"), shared_cache=True,
                            tracking={"backend": "none", "uri": None})

    run = dvc(["repro", P], project)  # the README's literal command: the alias stage
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"claims ({P}/results/smoke/claims.json)" in run.stdout  # the alias printed them

    out = project / P / "outputs"
    prepared = json.loads((out / "data/meta.json").read_text())
    assert prepared["counts"]["characters"] == 20
    for name in ("dots_grid.png",):
        Image.open(out / "data" / name).verify()

    game = json.loads((out / "game/seed0/metrics.json").read_text())
    assert game["scale"] == "smoke" and game["steps"] == 5
    assert {"eliminate_l1", "dotted_l1", "latent_l1", "latent_l1_independent"} <= set(game["metrics"])
    for name in ("z_sweep.png", "eliminate.png"):
        Image.open(out / "game/seed0" / name).verify()
    assert "skipped" in json.loads((out / "game/seed1/metrics.json").read_text())

    # compute-matched: the three re-trainings ran the same steps at the same batch size
    retrained = {v: json.loads((out / f"retrain/{v}_seed0/metrics.json").read_text()) for v in ("xp", "xp_ga", "xp_xf")}
    assert {(r["steps"], r["batch_size"]) for r in retrained.values()} == {(2, 32)}
    assert retrained["xp_xf"]["images"] > retrained["xp"]["images"]  # X_p ∪ X~_f is larger than X_p

    for run_name, row in (("pretrained", "mocov2_pretrained"), ("xp_ga", "mocov2_xp_ga")):
        for table in ("table1_d_to_c", "table1_d_to_d"):
            rec = json.loads((out / f"eval/{run_name}_seed0/{table}.json").read_text())
            assert rec["table"] == table and rec["row"] == row and 0 <= rec["metrics"]["top1"] <= 100

    results = project / P / "results/smoke"
    dc = {r["id"]: r for r in json.loads((results / "table1_d_to_c.json").read_text())["rows"]}
    assert dc["mocov2_xp_ga"]["n"] == 1 and np.isfinite(dc["mocov2_xp_ga"]["delta"])
    assert "mocov2_pretrained" not in dc  # our extra row is beside the paper's table, not in it
    summary = json.loads((results / "summary.json").read_text())
    assert summary["extra_rows"]["mocov2_pretrained"]["table1_d_to_d"]["n"] == 1
    assert set(json.loads((results / "table1_d_to_c.json").read_text())) >= {"rows", "metric"}
    for name in ("generators.png", "game_losses.png", "table1_d_to_c_vs_reported.png",
                 "table1_d_to_d_vs_reported.png"):
        Image.open(results / name).verify()
    claims = json.loads((results / "claims.json").read_text())
    assert len(claims["verdicts"]) == 8 and set(claims["verdicts"].values()) == {"inconclusive"}  # one seed
    assert (results / "runs/game/seed0/metrics.json").is_file()
    assert "up to date" in dvc(["status", f"{P}/dvc.yaml"], project).stdout

