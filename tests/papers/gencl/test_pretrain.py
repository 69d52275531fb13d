"""GenCL's pretrain stage: the gamma rate and branch, T^G, the pairwise families, index alignment of the
precomputed augmentations, gamma 0 = plain VICReg, the ImageNet stem (papers/gencl/encoder.py), and the stage
end to end (encoder.pt, records, skip markers, resume, a missing generator file, several seeds in one process)."""
import json

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import binom

from papers.gencl import pretrain
from papers.gencl.encoder import EncoderConfig, build_encoder, load_encoder
from papers.gencl.pretrain import ViewsConfig, build_views, load_generated, run_pipelines
from papers.gencl.runs import RUNS, get_run
from shared import checkpoint, records
from shared.view_sources import (ClassicViews, GammaMix, GammaMixConfig, PipelineConfig, vicreg_pipelines,
                                 write_precomputed)

SIDE = 16
VIEWS = ViewsConfig(image_size=SIDE)


def images(n, seed, side=SIDE):
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class Constant:
    """A generated-image source: every generated image is ``value`` (float in [0, 1]); counts its calls."""

    def __init__(self, value=0.0):
        self.value, self.calls = value, 0

    def generated(self, x, index, generator=None):
        self.calls += 1
        return torch.full(x.shape, self.value, dtype=torch.float32)


class Refuses:
    def generated(self, x, index, generator=None):
        raise AssertionError("gamma 0 must never ask for generated images")


# ---------------------------------------------------------------- gamma: rate, branch, gamma 0

@pytest.mark.parametrize("name,gamma", [("noise_g0p25", 0.25), ("mask_g0p75", 0.75)])
def test_gamma_is_a_per_sample_rate_on_the_generated_branch_only(name, gamma):
    views = build_views(get_run(name), VIEWS, Constant())
    n = 2000
    x = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    mixed = views.views_and_mask(x, torch.arange(n), torch.Generator().manual_seed(0))
    hits = int(mixed.mask[:, 1].sum())
    lo, hi = binom.ppf(1e-6, n, gamma), binom.isf(1e-6, n, gamma)  # two-sided 2e-6
    assert lo <= hits <= hi, (hits, lo, hi)
    assert not mixed.mask[:, 0].any()  # view 1 (R) never starts from a generated image
    # and redrawn every step (per-step Bernoulli, not a fixed subset of images)
    again = views.views_and_mask(x, torch.arange(n), torch.Generator().manual_seed(1))
    assert not torch.equal(again.mask[:, 1], mixed.mask[:, 1])


def test_gamma_0_is_plain_vicreg_bit_for_bit():
    x, idx = images(12, 0), torch.arange(12)
    plain = ClassicViews(list(vicreg_pipelines(SIDE)))
    baseline = build_views(get_run("baseline"), VIEWS)
    for a, b in zip(baseline(x, idx, torch.Generator().manual_seed(3)),
                    plain(x, idx, torch.Generator().manual_seed(3))):
        assert torch.equal(a, b)
    # GammaMix itself at gamma 0: no generated image is asked for, and after its selection draw the views are the
    # plain ones (so gamma -> 0 is continuous with the baseline)
    branches, tg = run_pipelines(get_run("noise_g0p25"), VIEWS)
    mix = GammaMix(GammaMixConfig(gamma=0.0, branch="second", generated_pipeline=tg), branches, Refuses())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.rand(12, generator=g2)  # the selection draw
    for a, b in zip(mix(x, idx, g1), plain(x, idx, g2)):
        assert torch.equal(a, b)


def test_gamma_1_uses_the_generated_image_for_every_sample_on_its_branch_only():
    x = torch.full((32, 3, SIDE, SIDE), 200, dtype=torch.uint8)
    source = Constant(0.0)  # black: crop, flip, jitter and solarisation of black are black
    v1, v2 = build_views(get_run("noise_g1"), VIEWS, source)(x, torch.arange(32), torch.Generator().manual_seed(0))
    assert source.calls == 1
    assert torch.equal(v2, torch.zeros_like(v2))  # every sample of view 2 from its generated image
    assert (v1 > 0).all()  # no sample of view 1 (jitter's brightness factor is >= 0.6)
    # the generative-only pair is (gen(x), x) exactly
    source = Constant(0.25)
    v1, v2 = build_views(get_run("pair_generative"), VIEWS, source)(x, torch.arange(32))
    assert torch.equal(v1, x.float() / 255) and torch.equal(v2, torch.full_like(v2, 0.25))


# ---------------------------------------------------------------- pipelines

def test_generated_pipeline_is_t_g_without_blur_and_grayscale():
    for name in ("noise_g0p25", "noise_g1", "mask_g0p5"):
        branches, tg = run_pipelines(get_run(name), VIEWS)
        assert tg.enabled_ops() == ["crop", "flip", "jitter", "solarize"]
        assert not tg.blur.enabled and not tg.grayscale.enabled
        assert tg.solarize.p == 0.2 and tg.crop.size == SIDE  # view 2's parameters
        assert branches == list(vicreg_pipelines(SIDE))  # R keeps VICReg's full view 1
        assert branches[0].blur.p == 1.0 and branches[0].solarize.p == 0.0
    assert run_pipelines(get_run("baseline"), VIEWS)[1] is None
    with pytest.raises(ValueError, match="cutout"):
        ViewsConfig(generated_ops=("crop", "cutout"))


@pytest.mark.parametrize("name", [n for n in RUNS if n.startswith("pair_")] + ["mask_genonly"])
def test_pairwise_runs_apply_only_their_family(name):
    run = get_run(name)
    branches, tg = run_pipelines(run, VIEWS)
    assert [b.enabled_ops() for b in branches] == [list(run.ops), list(run.ops)]
    assert tg == branches[1]
    v1, v2 = vicreg_pipelines(SIDE)  # view 1's probabilities on R, view 2's on G
    assert branches == [v1.only(*run.ops), v2.only(*run.ops)]
    only_g, _ = run_pipelines(run, ViewsConfig(image_size=SIDE, pairwise_branches="generated"))
    assert only_g[0] == PipelineConfig.identity() and only_g[1] == branches[1]


def test_pairwise_flip_only_flips():
    x = images(64, 1)
    source = Constant(0.5)
    r, g = build_views(get_run("pair_flip"), VIEWS, source)(x, torch.arange(64), torch.Generator().manual_seed(0))
    xf = x.float() / 255
    same, flipped = (r == xf).flatten(1).all(1), (r == xf.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()
    assert torch.equal(g, torch.full_like(g, 0.5))


# ---------------------------------------------------------------- precomputed augmentations: alignment

def test_a_shuffled_or_foreign_precomputed_file_is_refused(tmp_path):
    x = images(20, 2)
    generated = (x // 2).numpy()
    good = tmp_path / "good" / "noise.npy"
    good.parent.mkdir()
    write_precomputed(good, generated, x.numpy())
    source = load_generated(pretrain.augment_file(good.parent, "noise"), "noise", x)
    out = source.generated(x[[3, 7]], torch.tensor([3, 7]))
    assert torch.equal(out, x[[3, 7]].div(2, rounding_mode="floor").float() / 255)  # row i for image i
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    shuffled = tmp_path / "shuffled.npy"
    write_precomputed(shuffled, generated[perm.numpy()], x[perm].numpy())  # consistent, but in another row order
    with pytest.raises(ValueError, match=r"shuffled\.npy.*not the source images stored for their index"):
        load_generated(shuffled, "noise", x)
    with pytest.raises(ValueError, match="holds 20 generated images, the SSL training set 10"):
        load_generated(good, "noise", x[:10])


# ---------------------------------------------------------------- encoder

def test_imagenet_stem_downsamples_by_4_before_the_first_stage():
    seen = {}
    enc = build_encoder(EncoderConfig(arch="resnet18", width=0.0625, stem="imagenet"))
    enc.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1_in=i[0].shape))
    assert enc(torch.rand(2, 3, 64, 64)).shape == (2, 32)
    assert seen["layer1_in"][-2:] == (16, 16)  # 64 -> conv 7x7/2 -> 32 -> max-pool 3x3/2 -> 16
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2)
    cifar = build_encoder(EncoderConfig(arch="resnet18", width=0.0625, stem="cifar"))
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)


# ---------------------------------------------------------------- the stage end to end

N, BATCH, EPOCHS = 48, 16, 2  # 3 steps per epoch
TINY = {"encoder": {"arch": "resnet18", "width": 0.0625, "stem": "imagenet"},
        "vicreg": {"mlp": "16-16-16"},
        "optim": {"epochs": EPOCHS, "batch_size": BATCH, "base_lr": 0.3, "warmup_epochs": 0.5, "log_every": 1,
                  "sync_batchnorm": False},
        "views": {"image_size": SIDE}}


@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    x = images(N + 8, 3)
    np.savez(prepared / "train.npz", x=x.numpy(), y=(np.arange(N + 8) % 4).astype(np.int64), classes=np.array(["a"]))
    rows = np.arange(8, N + 8)[::-1].copy()  # the SSL set: 48 rows, in a non-trivial order
    np.save(tmp_path / "ssl.npy", rows)
    ssl_x = x[torch.from_numpy(rows)]
    (tmp_path / "noise").mkdir()
    write_precomputed(tmp_path / "noise" / "noise.npy", (255 - ssl_x).numpy(), ssl_x.numpy(), meta={"k": 1})
    params = tmp_path / "gencl_params.yaml"
    params.write_text(yaml.safe_dump({"runs": {"n_seeds": 1},
                                      "pretrain": {**TINY, "run_names": ["baseline", "noise_g0p5", "mask_g1"]}}))
    common = ["--params", str(params), "--suite-params", str(suite_params()), "--prepared", str(prepared),
              "--indices", str(tmp_path / "ssl.npy"), "--noise", str(tmp_path / "noise")]
    return tmp_path, common


def stage(project, name, out, seed=0, extra=()):
    tmp, common = project
    return pretrain.main([*common, "--run", name, "--seed", str(seed), "--out", str(out),
                          "--metrics", str(tmp / "dvc" / f"{out.name}.json"),
                          "--plots", str(tmp / "dvc" / f"{out.name}_plot.json"), *extra])


def test_stage_writes_a_loadable_encoder_and_the_record(project):
    tmp, _ = project
    out = tmp / "noise_g0p5"
    assert stage(project, "noise_g0p5", out) == 0
    record = records.read(out / "metrics.json")
    assert (record.paper, record.stage, record.table, record.row, record.seed) == \
        ("gencl", "pretrain", "pretrain", "noise_g0p5", 0)
    steps = EPOCHS * (N // BATCH)
    assert record.extra["steps"] == steps and record.extra["images"] == N
    assert [p["step"] for p in record.extra["curve"]] == list(range(1, steps + 1))
    assert record.metrics["final_loss"] == record.extra["curve"][-1]["loss"]
    conv = record.extra["conventions"]
    assert conv["gamma"] == 0.5 and conv["generated_branch"] == "second" and conv["real_branch"] == "first"
    assert conv["generated_pipeline"] == ["crop", "flip", "jitter", "solarize"]
    assert conv["gamma_sampling"].startswith("bernoulli_per_sample_per_step")
    assert record.extra["run"]["tables"] == {"table2": "50%"}
    assert record.extra["lr"] == pytest.approx(0.3 * BATCH / 256)
    assert record.extra["generated"]["meta"] == {"k": 1}
    assert json.loads((tmp / "dvc" / "noise_g0p5.json").read_text()) == record.metrics
    encoder = load_encoder(out / "encoder.pt", "cpu")
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    feats = encoder(torch.rand(5, 3, SIDE, SIDE))
    assert feats.shape == (5, encoder.feature_dim) == (5, 32) and torch.isfinite(feats).all()
    doc = checkpoint.load(out / "encoder.pt")
    assert doc["meta"] == {"run": "noise_g0p5", "seed": 0, "steps": steps}


def test_stage_resumes_a_killed_run_exactly(project, monkeypatch, capsys):
    tmp, _ = project
    assert stage(project, "baseline", tmp / "whole") == 0
    calls = {"n": 0}
    real = ClassicViews.__call__

    def dies_in_epoch_2(self, x, index=None, generator=None):
        calls["n"] += 1
        if calls["n"] == N // BATCH + 2:  # the 2nd step of epoch 2: epoch 1's checkpoint exists
            raise KeyboardInterrupt
        return real(self, x, index, generator)

    monkeypatch.setattr(ClassicViews, "__call__", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        stage(project, "baseline", tmp / "killed")
    monkeypatch.setattr(ClassicViews, "__call__", real)
    assert checkpoint.load(tmp / "killed" / "checkpoint.pt")["step"] == N // BATCH
    capsys.readouterr()
    assert stage(project, "baseline", tmp / "killed") == 0
    assert "at epoch 1 (step 3)" in capsys.readouterr().out  # resumed, not restarted
    a, b = checkpoint.load(tmp / "whole" / "encoder.pt"), checkpoint.load(tmp / "killed" / "encoder.pt")
    for k in a["encoder"]:
        assert torch.equal(a["encoder"][k], b["encoder"][k]), k
    ra, rb = records.read(tmp / "whole" / "metrics.json"), records.read(tmp / "killed" / "metrics.json")
    assert ra.extra["curve"] == rb.extra["curve"]  # the curve survived the kill


def test_skips_and_missing_generator_files(project, tmp_path, capsys):
    tmp, common = project
    assert stage(project, "pair_crop", tmp / "pc") == 0  # not in run_names
    assert "pretrain.run_names" in records.read(tmp / "pc" / "metrics.json").skipped
    assert stage(project, "baseline", tmp / "s1", seed=1) == 0  # runs.n_seeds = 1
    assert "runs.n_seeds" in records.read(tmp / "s1" / "metrics.json").skipped
    capsys.readouterr()
    assert stage(project, "mask_g1", tmp / "m") == 2  # no --mask
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mask" in err and "papers/gencl/dvc.yaml:mask_augment" in err
    assert stage(project, "mask_g1", tmp / "m", extra=["--mask", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere/mask.npy" in err and "mask_augment" in err
    assert stage(project, "pair_cutout", tmp / "x") == 2
    assert "unknown GenCL run 'pair_cutout'" in capsys.readouterr().err


def test_seeds_in_one_process_write_per_seed_folders_skip_markers_and_seed_keys(project):
    tmp, common = project  # runs.n_seeds = 1: seed 1 is not run at this scale
    metrics, plots = tmp / "dvc" / "seeds.json", tmp / "dvc" / "seeds_plot.json"
    assert pretrain.main([*common, "--run", "baseline", "--seeds", "0", "1", "--out", str(tmp / "base"),
                          "--metrics", str(metrics), "--plots", str(plots)]) == 0
    ran = records.read(tmp / "base" / "seed0" / "metrics.json")
    assert ran.seed == 0 and not ran.is_skip and (tmp / "base" / "seed0" / "encoder.pt").is_file()
    skipped = records.read(tmp / "base" / "seed1" / "metrics.json")
    assert skipped.seed == 1 and "runs.n_seeds" in skipped.skipped
    assert not (tmp / "base" / "seed1" / "encoder.pt").exists() and not (tmp / "base" / "metrics.json").exists()
    assert json.loads(metrics.read_text()) == {"seed0/final_loss": ran.metrics["final_loss"]}
    steps = EPOCHS * (N // BATCH)
    assert json.loads(plots.read_text()) == [{"step": p["step"], "seed0": p["loss"]} for p in ran.extra["curve"]]
    assert len(ran.extra["curve"]) == steps
    # the same seed alone (--seed, in --out itself) trains the same encoder: one process per seed or per run
    assert stage(project, "baseline", tmp / "alone") == 0
    a, b = checkpoint.load(tmp / "alone" / "encoder.pt"), checkpoint.load(tmp / "base" / "seed0" / "encoder.pt")
    assert all(torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])
    # a run not made at this scale: a skip marker per seed, empty DVC files
    assert pretrain.main([*common, "--run", "pair_crop", "--seeds", "0", "1", "--out", str(tmp / "pc"),
                          "--metrics", str(metrics), "--plots", str(plots)]) == 0
    for seed in (0, 1):
        assert records.read(tmp / "pc" / f"seed{seed}" / "metrics.json").is_skip
    assert json.loads(metrics.read_text()) == {} and json.loads(plots.read_text()) == []


def test_seed_and_seeds_are_exclusive(project, capsys):
    tmp, common = project
    for extra in (["--seed", "0", "--seeds", "0"], [], ["--seeds", "0", "0"]):
        with pytest.raises(SystemExit) as exit_:
            pretrain.main([*common, "--run", "baseline", "--out", str(tmp / "x"), *extra])
        assert exit_.value.code == 2
    assert "a seed given twice" in capsys.readouterr().err
