"""augmentation_generator's MoCo v2 stages: F's file, the G_A view source, compute-matched re-training, the linear
evaluation, and the pretrain / retrain / evaluate stages end to end on tiny synthetic data.

MoCo v2 itself (InfoNCE with the queue against a per-sample loop, the FIFO queue and its wrap-around, the
momentum update, split batch norm, resume) is tested in tests/shared/methods/test_mocov2.py, not here.
"""
import json

import pytest
import torch
import yaml
from torch import nn

from papers.augmentation_generator import evaluate, pretrain, retrain
from papers.augmentation_generator.config import MoCoConfig, RetrainConfig
from papers.augmentation_generator.data import DRAWERS, Splits, save_splits
from papers.augmentation_generator.encoder import (FORMAT, build_encoder, build_moco, load_encoder, read_encoder_file,
                                                   save_encoder)
from papers.augmentation_generator.evaluate import accuracy, evaluate_features, fit_linear, row_id
from papers.augmentation_generator.models import Augmenter, EliminatorPredictor, GeneratorSpec, save_generators, \
    save_latents
from papers.augmentation_generator.retrain import AugmenterViews, StepLoader, frozen, schedule, variant_data
from shared import checkpoint, records
from shared.methods.mocov2 import SplitBatchNorm2d
from shared.trainers.common import NonFiniteLossError
from shared.trainers.linear_eval import LinearEvalConfig, train_linear
from shared.trainers.ssl import SSLConfig
from shared.view_sources import ClassicViews, PipelineConfig
from shared.views import SimCLRViewConfig

CPU = torch.device("cpu")
AUG_PLUS = PipelineConfig.from_simclr(SimCLRViewConfig(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                                                       saturation=0.4, hue=0.1))


def images(n, seed=0, side=28):
    return torch.randint(0, 256, (n, 1, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- encoder.pt

def test_a_split_bn_trained_encoder_round_trips_into_a_plain_resnet(tmp_path):
    torch.manual_seed(0)
    method = build_moco(build_encoder(1 / 16), MoCoConfig(dim=8, queue_size=16, bn_splits=2))
    assert any(isinstance(m, SplitBatchNorm2d) for m in method.encoder.modules())
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    for s in range(2):  # moves the weights and the running statistics away from their init
        loss, _ = method([images(8, s).float() / 255, images(8, s + 10).float() / 255])
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(s, 2)
    save_encoder(tmp_path / "encoder.pt", method.encoder, 1 / 16, method=method, stage="test")
    loaded = load_encoder(tmp_path / "encoder.pt", CPU)
    assert not loaded.training and loaded.feature_dim == method.encoder.feature_dim
    assert not any(isinstance(m, SplitBatchNorm2d) for m in loaded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    x = images(6, 99).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), method.encoder.eval()(x), rtol=1e-5, atol=1e-6)
    doc = read_encoder_file(tmp_path / "encoder.pt")
    assert doc["format"] == FORMAT and doc["meta"] == {"stage": "test"} and "queue" in doc["method"]


def test_a_missing_corrupt_or_foreign_encoder_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_encoder(tmp_path / "nothing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="bad.pt is corrupt"):
        load_encoder(tmp_path / "bad.pt")
    checkpoint.save(tmp_path / "other.pt", {"kind": "augmentation_generator/generators"})
    with pytest.raises(checkpoint.CheckpointError, match="other.pt is not an encoder file"):
        load_encoder(tmp_path / "other.pt")
    save_encoder(tmp_path / "wide.pt", build_encoder(1 / 16), 1 / 8)  # weights of another width than recorded
    with pytest.raises(checkpoint.CheckpointError, match="wide.pt: its encoder does not fit"):
        load_encoder(tmp_path / "wide.pt")


# ---------------------------------------------------------------- the G_A view source

class Stamp(nn.Module):
    """G_A stand-in: an all-`value` image, recording the z it is given; one parameter to check gradients."""

    def __init__(self, value=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value))
        self.seen = []

    def forward(self, x, z):
        self.seen.append(z.clone())
        return (self.scale * torch.ones_like(x)).clamp(0, 1)


def half_dark(n, seed=0):
    """Float images in [0, 0.5): never all ones, so an all-ones row is G_A's."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.5


@pytest.mark.parametrize("branch,hit", [("key", (False, True)), ("both", (True, True))])
def test_g_a_feeds_only_the_configured_branch_and_every_sample_at_p_1(branch, hit):
    x = half_dark(32)
    views = AugmenterViews(PipelineConfig.identity(), Stamp(), torch.rand(5, 3), p=1.0, branch=branch)
    out = views(x, None, torch.Generator().manual_seed(0))
    for v, expected in zip(out, hit):
        assert torch.equal(v, torch.ones_like(x)) if expected else torch.equal(v, x)
    assert views.last_mask.tolist() == [list(hit)] * 32


def test_g_a_hits_each_sample_with_probability_p_and_the_mask_says_which():
    x = half_dark(4000)
    views = AugmenterViews(PipelineConfig.identity(), Stamp(), torch.rand(5, 3), p=0.3, branch="both")
    out = views(x, None, torch.Generator().manual_seed(1))
    mask = views.last_mask
    for b in (0, 1):
        stamped = (out[b] == 1).flatten(1).all(1)
        assert torch.equal(stamped, mask[:, b])
        assert abs(mask[:, b].float().mean().item() - 0.3) < 0.03  # 4000 draws: std 0.0072
    # "both": an independent coin per view
    assert abs((mask[:, 0] & mask[:, 1]).float().mean().item() - 0.09) < 0.02


def test_at_p_0_the_views_are_the_standard_ones_draw_for_draw():
    x = images(16)
    ga = Stamp()
    views = AugmenterViews(AUG_PLUS, ga, torch.rand(5, 3), p=0.0, branch="both")
    ours = views(x, None, torch.Generator().manual_seed(3))
    standard = ClassicViews.symmetric(AUG_PLUS, 2)(x, None, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(ours, standard, strict=True))
    assert ga.seen == [] and not views.last_mask.any()


def test_z_is_drawn_uniformly_from_the_rows_of_z_tilde_only():
    latents = torch.rand(4, 3)
    ga = Stamp()
    views = AugmenterViews(PipelineConfig.identity(), ga, latents, p=1.0, branch="both")
    for s in range(5):
        views(half_dark(200, s), None, torch.Generator().manual_seed(s))
    z = torch.cat(ga.seen)
    assert z.shape == (2000, 3)
    rows = (z[:, None, :] == latents[None]).all(-1)  # (2000, 4): which row of Z~ each z is
    assert rows.sum(1).eq(1).all()  # every z is exactly one row of Z~
    counts = rows.sum(0).float()
    assert (counts - 500).abs().max() < 80  # uniform over the 4 rows: std ~19 each


def test_g_a_gets_no_gradient_and_the_views_carry_none_back_to_it():
    ga = Stamp(0.7)  # left trainable on purpose: the source must still run it without a graph
    encoder = build_encoder(1 / 16)
    views = AugmenterViews(AUG_PLUS, ga, torch.rand(5, 3), p=1.0, branch="both")
    out = views(images(8), None, torch.Generator().manual_seed(0))
    assert not any(v.requires_grad for v in out)
    encoder(torch.cat(out)).sum().backward()
    assert ga.scale.grad is None
    assert all(p.grad is not None for p in encoder.parameters())
    g = frozen(Stamp())
    assert not g.training and not any(p.requires_grad for p in g.parameters())


# ---------------------------------------------------------------- compute-matched steps

def tiny_splits(n_p=48, chars=4, fine_drawers=3, test_drawers=2):
    def omni(drawers, offset, seed):
        index = torch.tensor([c * DRAWERS + offset + d for c in range(chars) for d in range(drawers)])
        return images(len(index), seed), index
    fine_clean, fine_index = omni(fine_drawers, 0, 1)
    test_clean, test_index = omni(test_drawers, fine_drawers, 2)
    return Splits(xp=images(n_p, 3), yp=torch.arange(n_p) % 10, fine_dotted=fine_clean.clamp(min=200),
                  fine_clean=fine_clean, fine_y=fine_index // DRAWERS, fine_index=fine_index,
                  test_clean=test_clean, test_dotted=test_clean.clamp(min=200), test_y=test_index // DRAWERS,
                  test_index=test_index, n_classes=chars)


def test_every_variant_gets_the_same_steps_of_the_same_batch_whatever_its_data():
    splits = tiny_splits(n_p=50)
    cfg = RetrainConfig(ssl=SSLConfig(epochs=3, batch_size=8))
    assert schedule(len(splits.xp), cfg) == (3, 6)  # None: 3 passes of X_p, floor(50 / 8) = 6 steps each
    assert schedule(len(splits.xp), RetrainConfig(ssl=SSLConfig(epochs=3, batch_size=8), steps=21)) == (3, 7)
    with pytest.raises(ValueError, match="multiple of retrain.ssl.epochs"):
        RetrainConfig(ssl=SSLConfig(epochs=2), steps=21)
    seen = {}
    for variant in ("xp", "xp_ga", "xp_xf"):
        x, tag = variant_data(variant, splits)
        loader = StepLoader(x, tag, 8, 6, seed=5)
        batches = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            batches += [idx for _, _, idx in loader]
        assert len(batches) == 18 and all(len(b) == 8 for b in batches)
        seen[variant] = torch.cat(batches)
    # X_p ∪ X~_f: the dotted images (never the clean ones), more images than X_p, all reached
    x, tag = variant_data("xp_xf", splits)
    assert torch.equal(x, torch.cat([splits.xp, splits.fine_dotted])) and tag.sum() == len(splits.fine_dotted)
    assert seen["xp_xf"].max() >= len(splits.xp) and seen["xp"].max() < len(splits.xp)


def test_the_step_loader_order_is_a_function_of_seed_and_epoch_and_passes_do_not_repeat_within():
    x, y = images(20), torch.arange(20)
    a, b = StepLoader(x, y, 4, 3, seed=1), StepLoader(x, y, 4, 3, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    first = [idx for _, _, idx in a]
    assert all(torch.equal(i, j) for i, j in zip(first, [idx for _, _, idx in b], strict=True))
    b.set_epoch(0)
    stream = []
    for e in range(4):  # 12 batches = 2.4 passes of 5 batches each
        b.set_epoch(e)
        stream += [(xb, idx) for xb, _, idx in b]
    assert all(torch.equal(xb, x[idx]) for xb, idx in stream)
    assert sorted(torch.cat([idx for _, idx in stream[:5]]).tolist()) == list(range(20))  # one pass: a permutation
    assert all(torch.equal(i, j) for i, j in zip(first, [idx for _, idx in stream[6:9]]))  # epoch 2 = batches 6-8


# ---------------------------------------------------------------- the linear evaluation

def test_the_head_is_shared_train_linears_head_and_scores_both_test_sets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 6, generator=g), torch.randint(0, 5, (90,), generator=g)
    tx, ty = torch.randn(40, 6, generator=g), torch.randint(0, 5, (40,), generator=g)
    cfg = LinearEvalConfig(epochs=7, batch_size=16, optimizer="sgd", lr=0.5, momentum=0.9, milestones=(4,))
    reference = train_linear(x, y, tx, ty, cfg, num_classes=5)
    head, curve = fit_linear(x, y, cfg, 5)
    assert accuracy(head, x, y) == reference["linear_train_acc"]
    assert accuracy(head, tx, ty) == reference["linear_test_acc"]
    assert [c["epoch"] for c in curve] == list(range(1, 8)) and all(c["loss"] > 0 for c in curve)


def test_a_linearly_separable_feature_set_is_classified_almost_perfectly_and_the_knn_too():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 16, generator=g) * 4  # 20 classes, well apart

    def sample(per_class):
        y = torch.arange(20).repeat_interleave(per_class)
        return centres[y] + 0.3 * torch.randn(len(y), 16, generator=g), y
    train, clean, dotted = sample(15), sample(5), sample(5)
    cfg = evaluate.EvaluateConfig(linear=LinearEvalConfig(epochs=30, batch_size=64, optimizer="sgd", lr=30.0,
                                                          momentum=0.9, milestones=(18, 24)))
    out = evaluate_features(train, {"d_to_c": clean, "d_to_d": dotted}, cfg, 20)
    for name in ("d_to_c", "d_to_d"):
        assert out[name]["top1"] >= 99.0 and out[name]["knn_top1"] >= 99.0
        assert out[name]["linear_train_acc"] == 100.0
    assert out["linear_curve"][-1]["train_acc"] >= out["linear_curve"][0]["train_acc"]


def test_a_diverging_head_stops_naming_the_key():
    x, y = torch.randn(40, 4) * 1e20, torch.arange(40) % 3
    cfg = LinearEvalConfig(epochs=3, batch_size=8, optimizer="sgd", lr=1e30)
    with pytest.raises(NonFiniteLossError, match="linear.lr"):
        fit_linear(x, y, cfg, 3)


def test_row_ids():
    assert [row_id(r) for r in ("pretrained", "xp", "xp_ga", "xp_xf")] == \
        ["mocov2_pretrained", "mocov2_xp", "mocov2_xp_ga", "mocov2_xp_xf"]
    with pytest.raises(ValueError, match="unknown encoder run"):
        row_id("simclr")


# ---------------------------------------------------------------- the stages end to end (tiny)

TINY_SSL = {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4,
            "schedule": "cosine", "eval_every": 1, "log_every": 1}
TINY_MOCO = {"dim": 8, "queue_size": 16, "momentum": 0.99, "temperature": 0.2, "bn_splits": 2}
TINY_VIEWS = {"crop_scale": [0.2, 1.0], "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
MONITOR = {"classes": 3, "knn_k": 2}


@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    """A data folder of tiny splits, the paper's params at toy size, the smoke suite params (tracking off)."""
    data = tmp_path / "data"
    data.mkdir()
    splits = tiny_splits()
    with open(data / "splits.npz", "wb") as f:
        save_splits(splits, f)
    params = tmp_path / "paper_params.yaml"
    params.write_text(yaml.safe_dump({
        "runs": {"n_seeds": 1},
        "pretrain": {"width": 0.0625, "moco": TINY_MOCO, "ssl": TINY_SSL, "views": TINY_VIEWS, "monitor": MONITOR},
        "retrain": {"moco": TINY_MOCO, "ssl": {**TINY_SSL, "epochs": 1}, "views": TINY_VIEWS, "steps": 3,
                    "monitor": MONITOR},
        "evaluate": {"linear": {"epochs": 5, "batch_size": 8, "optimizer": "sgd", "lr": 30.0, "momentum": 0.9,
                                "milestones": [3, 4]}, "knn_k": 2}}))
    spec = GeneratorSpec(z_dim=3, hidden=8)
    torch.manual_seed(0)
    save_generators(tmp_path / "generators.pt", Augmenter(spec), EliminatorPredictor(spec))
    save_latents(tmp_path / "latents.pt", torch.rand(len(splits.fine_dotted), 3))
    common = ["--params", str(params), "--suite-params", str(suite_params()), "--data", str(data)]
    return tmp_path, common, splits


def test_pretrain_retrain_evaluate_end_to_end_with_equal_steps(project):
    tmp, common, splits = project
    assert pretrain.main([*common, "--seed", "0", "--out", str(tmp / "pre")]) == 0
    pre = records.read(tmp / "pre" / "metrics.json")
    assert pre.table is None and pre.extra["steps"] == 2 * (48 // 8)
    assert [h["epoch"] for h in pre.extra["history"]] == [1, 2]
    assert {"loss", "knn_d_to_c", "knn_d_to_d"} <= set(pre.metrics)
    load_encoder(tmp / "pre" / "encoder.pt")

    game = ["--generators", str(tmp / "generators.pt"), "--latents", str(tmp / "latents.pt")]
    steps = {}
    for variant in ("xp", "xp_ga", "xp_xf"):
        out = tmp / f"re_{variant}"
        assert retrain.main([*common, "--variant", variant, "--seed", "0", "--encoder", str(tmp / "pre" / "encoder.pt"),
                             *game, "--out", str(out)]) == 0
        record = records.read(out / "metrics.json")
        steps[variant] = (record.extra["steps"], record.extra["batch_size"])
        assert record.extra["started_from"] == "pretrained F, heads, key encoder and queue"
        assert record.extra["images"] == 48 + (len(splits.fine_dotted) if variant == "xp_xf" else 0)
        assert (record.extra["ga_p"] is not None) == (variant == "xp_ga")
        assert read_encoder_file(out / "encoder.pt")["meta"]["steps"] == 3
    assert steps == {"xp": (3, 8), "xp_ga": (3, 8), "xp_xf": (3, 8)}

    out = tmp / "eval_xp_ga"
    assert evaluate.main([*common, "--encoder-run", "xp_ga", "--seed", "0", "--encoder",
                          str(tmp / "re_xp_ga" / "encoder.pt"), "--out", str(out)]) == 0
    for table in ("table1_d_to_c", "table1_d_to_d"):
        record = records.read(out / f"{table}.json")
        assert (record.table, record.row, record.seed) == (table, "mocov2_xp_ga", 0)
        assert set(record.metrics) == {"top1", "knn_top1", "linear_train_acc"}
        assert 0 <= record.metrics["top1"] <= 100 and len(record.extra["linear_curve"]) == 5
        assert record.extra["train_images"] == len(splits.fine_y)


def test_seeds_beyond_the_scale_write_skip_markers(project):
    tmp, common, _ = project
    assert pretrain.main([*common, "--seed", "1", "--out", str(tmp / "pre1")]) == 0
    assert records.read(tmp / "pre1" / "metrics.json").is_skip
    assert retrain.main([*common, "--variant", "xp", "--seed", "1", "--encoder", str(tmp / "none.pt"),
                         "--out", str(tmp / "re1")]) == 0
    assert records.read(tmp / "re1" / "metrics.json").is_skip
    assert evaluate.main([*common, "--encoder-run", "xp", "--seed", "1", "--encoder", str(tmp / "none.pt"),
                          "--out", str(tmp / "ev1")]) == 0
    for table in ("table1_d_to_c", "table1_d_to_d"):
        assert json.loads((tmp / "ev1" / f"{table}.json").read_text())["skipped"].startswith("seed 1")


def test_a_missing_encoder_is_a_one_line_error_naming_it(project, capsys):
    tmp, common, _ = project
    assert evaluate.main([*common, "--encoder-run", "xp", "--seed", "0", "--encoder", str(tmp / "none.pt"),
                          "--out", str(tmp / "ev")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
