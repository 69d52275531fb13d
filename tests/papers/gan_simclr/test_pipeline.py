"""gan_simclr end to end: `dvc repro papers/gan_simclr/dvc.yaml` at smoke scale on the real CIFAR-10 copy."""
import json

import numpy as np
from PIL import Image



def test_gan_simclr_pipeline_at_smoke_scale(smoke_project, dvc, data_root):
    project = smoke_project(packages=("shared", "papers"), tracking={"backend": "none", "uri": None})

    run = dvc(["repro", "papers/gan_simclr/dvc.yaml"], project)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    out = project / "papers/gan_simclr/outputs"
    gan = json.loads((out / "gan/metrics.json").read_text())
    assert gan["scale"] == "smoke" and "in-domain" in gan["fid_label"]
    assert np.isfinite(gan["best"]["fid_indomain"])
    with np.load(out / "samples/fake_2500.npz") as f:
        assert f["x"].shape == (100, 3, 32, 32) and f["x"].dtype == np.uint8  # 2500 * 200 / 5000
    Image.open(out / "samples/fake_2500.png").verify()

    ran = json.loads((out / "pretrain/lars_fake10000_seed0/metrics.json").read_text())
    assert ran["fake_count"] == 10000 and ran["fakes_used"] == 400 and ran["real_count"] == 200
    assert ran["scale"] == "smoke" and len(ran["curve"]) == 2
    assert "skipped" in json.loads((out / "pretrain/adam_fake0_seed1/metrics.json").read_text())

    results = project / "papers/gan_simclr/results/smoke"
    table = json.loads((results / "table1.json").read_text())
    assert table["scale"] == "smoke"
    assert all(row["n"] == 1 for row in table["rows"]), table["rows"]
    for name in ("figure3.png", "figure4.png"):
        Image.open(results / name).verify()
    claims = json.loads((results / "claims.json").read_text())
    assert set(claims["verdicts"].values()) == {"inconclusive"}  # one seed: never a verdict
    assert json.loads((results / "gan_quality.json").read_text())["fid_label"] == gan["fid_label"]
    assert "up to date" in dvc(["status", "papers/gan_simclr/dvc.yaml"], project).stdout
