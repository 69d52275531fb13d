"""gencl end to end: `dvc repro papers/gencl` at smoke scale on the real Tiny-ImageNet-100 copy (40 images per
class, the 200-image SSL subset, one seed, the runs of `scales.smoke.pretrain.run_names`)."""
import json

import numpy as np
from PIL import Image

P = "papers/gencl"


def test_gencl_pipeline_at_smoke_scale(smoke_project, dvc, data_root):
    project = smoke_project(packages=("shared", "papers"), shared_cache=True,
                            tracking={"backend": "none", "uri": None})

    run = dvc(["repro", P], project, timeout=1800)  # the README's literal command: the alias stage
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"claims ({P}/results/smoke/claims.json)" in run.stdout  # the alias printed them

    out = project / P / "outputs"
    tok = json.loads((out / "tokenizer/metrics.json").read_text())
    assert tok["scale"] == "smoke" and {"psnr", "perplexity", "codes_used"} <= set(tok["metrics"])
    tokens = np.load(out / "tokens/tokens.npy")
    assert tokens.shape == (4000, 16, 16)  # 100 classes x 40 at smoke, 64 px at f = 4
    mask = json.loads((out / "augment/mask/metrics.json").read_text())
    assert mask["metrics"]["masked_fraction"] == 196 / 256  # the 1-token border of a 16 x 16 map, as GenCL
    for grid in ("augment/mask/grid.png", "augment/noise/pairs.png", "icgan/train/neighbourhoods.png"):
        Image.open(out / grid).verify()
    generated = {k: np.load(out / f"augment/{k}/{k}.npy", mmap_mode="r") for k in ("mask", "noise")}
    assert all(a.shape == (200, 3, 64, 64) and a.dtype == np.uint8 for a in generated.values())  # one per SSL image

    # one process per run, its seeds inside: seed 0 ran, seeds 1 and 2 are skip markers at smoke
    base = json.loads((out / "pretrain/baseline/seed0/metrics.json").read_text())
    assert base["conventions"]["gamma"] == 0.0 and np.isfinite(base["metrics"]["final_loss"])
    assert "skipped" in json.loads((out / "pretrain/baseline/seed1/metrics.json").read_text())
    assert "skipped" in json.loads((out / "pretrain/pair_flip/seed0/metrics.json").read_text())  # not at smoke
    ev = json.loads((out / "eval/mask_g1/seed0/metrics.json").read_text())
    assert ev["semi_protocol"] == "finetune" and 0 <= ev["metrics"]["lin_top1"] <= ev["metrics"]["lin_top5"] <= 100
    assert set(json.loads((out / "metrics/eval/mask_g1.json").read_text())) == {
        f"seed0/{k}" for k in ("lin_top1", "lin_top5", "semi1_top1", "semi1_top5", "semi10_top1", "semi10_top5",
                               "knn_top1")}

    results = project / P / "results/smoke"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["table3_lin_top1"]["mask_g100"]["n"] == 1 and summary["table2_lin_top1"]["noise_g0"]["n"] == 1
    assert summary["table1_lin_top1"]["flip"]["n"] == 0  # not run at smoke
    for name in ("augmentations.png", "gamma.png", "pairings.png", "mask_grid.png", "noise_pairs.png"):
        Image.open(results / name).verify()
    claims = json.loads((results / "claims.json").read_text())
    assert set(claims["verdicts"].values()) == {"inconclusive"}  # one seed: nothing can be tested
    assert (results / "runs/eval/baseline/seed0/metrics.json").is_file()
    assert "up to date" in dvc(["status", f"{P}/dvc.yaml"], project).stdout
