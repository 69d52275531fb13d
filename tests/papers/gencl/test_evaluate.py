import json
import math

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import top_k_accuracy_score

from papers.gencl import evaluate
from papers.gencl.evaluate import (EvaluateConfig, FinetuneConfig, SemiLR, VICRegLinearConfig, evaluate_encoder,
                                   finetune, linear_head)
from papers.gencl.encoder import EncoderConfig, build_encoder, save_encoder
from shared import records
from shared.data import save_indices
from shared.models import resnet18
from shared.trainers.linear_eval import fit_linear

CPU = torch.device("cpu")
CLASSES = 10


def images(n, seed, side=12):
    """uint8 images of CLASSES classes told apart by a per-class colour, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    base = torch.rand(CLASSES, 3, generator=torch.Generator().manual_seed(7)) * 200 + 25
    x = base[y][:, :, None, None] + 40 * torch.randn(n, 3, side, side, generator=g)
    return x.clamp(0, 255).to(torch.uint8).numpy(), y.numpy().astype(np.int64)


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return resnet18(width=1 / 16)


class Counting(torch.nn.Module):
    """Counts forward calls and images of the encoder it wraps."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls, self.images = encoder, 0, 0

    def forward(self, x):
        self.calls, self.images = self.calls + 1, self.images + len(x)
        return self.encoder(x)


def blobs(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # overlapping classes: top-1 < top-5 < 100
    centres = 0.6 * torch.randn(CLASSES, d, generator=torch.Generator().manual_seed(3))
    y = torch.arange(n) % CLASSES
    return centres[y] + torch.randn(n, d, generator=g), y


def small_cfg(protocol="linear_probe", **over):
    lin = VICRegLinearConfig(epochs=3, batch_size=32, lr=0.05, feature_batch_size=64)
    cfg = EvaluateConfig(linear=lin, semi_protocol=protocol, knn_k=5,
                         finetune=FinetuneConfig(epochs=2, batch_size=16, eval_batch_size=64,
                                                 semi1=SemiLR(0.05, 0.1), semi10=SemiLR(0.05, 0.1)))
    cfg.probe.semi1 = cfg.probe.semi10 = VICRegLinearConfig(epochs=2, batch_size=16, lr=0.05)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------- the numbers

def test_linear_top1_top5_match_sklearn_on_the_same_head():
    train, test = blobs(300, seed=1), blobs(200, seed=2)
    cfg = VICRegLinearConfig(epochs=4, batch_size=32, lr=0.01)
    got = linear_head(train, test, cfg, CLASSES)
    head, _ = fit_linear(*train, cfg, CLASSES)  # same cfg.seed: the same head
    scores, y = head(test[0]).detach().numpy(), test[1].numpy()
    want = [top_k_accuracy_score(y, scores, k=k, labels=np.arange(CLASSES)) * 100 for k in (1, 5)]
    assert [got["top1"], got["top5"]] == pytest.approx(want, abs=1e-9)
    assert 20 < got["top1"] < got["top5"] < 100  # not degenerate


def test_the_final_epoch_is_reported_not_the_best(monkeypatch):
    train, test = blobs(100, seed=1), blobs(50, seed=2)
    head = torch.nn.Linear(8, CLASSES)
    with torch.no_grad():
        final = [top_k_accuracy_score(test[1].numpy(), head(test[0]).numpy(), k=k, labels=np.arange(CLASSES)) * 100
                 for k in (1, 5)]
    curve = [{"epoch": 1, "loss": 1.0, "train_acc": 50.0, "test_top1": 99.0, "test_top5": 100.0},
             {"epoch": 2, "loss": 2.0, "train_acc": 40.0, "test_top1": final[0], "test_top5": final[1]}]
    assert final[0] < 99
    monkeypatch.setattr(evaluate, "fit_linear", lambda *a, **k: (head, curve))
    got = linear_head(train, test, VICRegLinearConfig(epochs=2), CLASSES)
    assert [got["top1"], got["top5"]] == pytest.approx(final)
    assert (got["best_epoch_top1"], got["best_epoch"]) == (99.0, 1)


def test_fine_tuning_reports_the_final_epoch_not_the_best(monkeypatch):
    scores = iter([(50.0, 60.0), (70.0, 80.0), (40.0, 45.0)])
    monkeypatch.setattr(evaluate, "classify", lambda *a, **k: next(scores))
    x, y = images(32, seed=0)
    cfg = FinetuneConfig(epochs=3, batch_size=16)
    got = finetune(tiny_encoder(), (torch.as_tensor(x), torch.as_tensor(y)), (torch.as_tensor(x), torch.as_tensor(y)),
                   cfg, SemiLR(0.01, 0.01), CLASSES, CPU, seed=0)
    assert (got["top1"], got["top5"]) == (40.0, 45.0)
    assert [r["test_top1"] for r in got["curve"]] == [50.0, 70.0, 40.0] and got["steps"] == 6


# ---------------------------------------------------------------- frozen features, gradients

@pytest.mark.parametrize("linear_rows", [None, np.arange(0, 120, 2)])
def test_features_are_computed_once_and_the_frozen_encoder_gets_no_gradient(linear_rows):
    train, test = images(120, seed=0), images(50, seed=1)
    subsets = {"semi1": np.arange(0, 120, 12), "semi10": np.arange(1, 120, 4)}
    enc = Counting(tiny_encoder())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    out = evaluate_encoder(enc, train, test, linear_rows, subsets, small_cfg(), CPU, seed=0)
    rows = 120 if linear_rows is None else len(np.union1d(linear_rows, np.concatenate(list(subsets.values()))))
    assert enc.images == rows + 50  # every needed train row once, the test split once
    assert enc.calls == math.ceil(rows / 64) + math.ceil(50 / 64)
    assert all(p.grad is None for p in enc.parameters())
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # BN statistics too: eval mode
    assert out["counts"]["linear_train_images"] == (120 if linear_rows is None else 60)
    assert (out["counts"]["semi1_images"], out["counts"]["semi10_images"]) == (10, 30)
    assert {"lin_top1", "lin_top5", "semi1_top1", "semi1_top5", "semi10_top1", "semi10_top5",
            "knn_top1"} <= set(out["metrics"])
    assert len(out["linear_curve"]) == 3 and len(out["semi1_curve"]) == 2


def test_the_linear_probe_trains_on_the_subsets_features_only(monkeypatch):
    train, test = images(120, seed=0), images(30, seed=1)
    subsets = {"semi1": np.arange(0, 120, 12), "semi10": np.arange(1, 120, 4)}
    seen = []
    real = evaluate.linear_head
    monkeypatch.setattr(evaluate, "linear_head", lambda tr, te, cfg, c: seen.append(tr) or real(tr, te, cfg, c))
    enc = tiny_encoder()
    evaluate_encoder(enc, train, test, None, subsets, small_cfg(), CPU, seed=0)
    feats = evaluate.extract_features(enc, torch.as_tensor(train[0]), CPU)
    for (x, y), idx in zip(seen[1:], subsets.values()):
        assert torch.allclose(x, feats[idx], atol=1e-6) and torch.equal(y, torch.as_tensor(train[1][idx]))


def test_fine_tuning_changes_every_backbone_parameter_of_a_copy(monkeypatch, tmp_path):
    train, test = images(64, seed=0), images(20, seed=1)
    subsets = {"semi1": np.arange(0, 64, 4), "semi10": np.arange(0, 64, 2)}
    tiny = EncoderConfig(arch="resnet18", width=1 / 16, stem="cifar", zero_init_residual=False)
    save_encoder(tmp_path / "encoder.pt", build_encoder(tiny), tiny)
    enc = evaluate.load_encoder(tmp_path / "encoder.pt", CPU)  # as the stage gets it: frozen, eval mode
    assert not any(p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    copies = []
    real = evaluate.finetune
    monkeypatch.setattr(evaluate, "finetune", lambda encoder, *a, **k: copies.append(encoder) or real(encoder, *a, **k))
    out = evaluate_encoder(enc, train, test, None, subsets, small_cfg("finetune"), CPU, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # the original stays frozen
    assert len(copies) == 2
    for tuned in copies:
        unchanged = [n for n, p in tuned.named_parameters() if torch.equal(p.detach(), before[n])]
        assert unchanged == []
    assert out["counts"]["semi1_finetune_steps"] == 2 * 1 and out["counts"]["semi10_finetune_steps"] == 2 * 2
    cosine = [0.05, 0.05 * (1 + math.cos(math.pi / 2)) / 2]  # CosineAnnealingLR(T_max=2), per epoch
    assert [r["lr_backbone"] for r in out["semi1_curve"]] == pytest.approx(cosine)


def test_fine_tuning_resumes_from_an_epoch_checkpoint_exactly():
    x, y = (torch.as_tensor(a) for a in images(48, seed=0))
    cfg, lr = FinetuneConfig(epochs=3, batch_size=16), SemiLR(0.05, 0.1)
    states = []
    full = finetune(tiny_encoder(), (x, y), (x, y), cfg, lr, CLASSES, CPU, seed=3, save=states.append)
    resumed_enc = tiny_encoder(seed=9)  # other weights: everything must come from the state
    resumed = finetune(resumed_enc, (x, y), (x, y), cfg, lr, CLASSES, CPU, seed=3, resume=states[0])
    assert resumed["curve"] == full["curve"] and resumed["steps"] == full["steps"] == 9
    assert [s["epoch"] for s in states] == [1, 2, 3]


def test_max_steps_stops_fine_tuning_early():
    x, y = (torch.as_tensor(a) for a in images(48, seed=0))
    got = finetune(tiny_encoder(), (x, y), (x, y), FinetuneConfig(epochs=5, batch_size=16, max_steps=2),
                   SemiLR(0.01, 0.01), CLASSES, CPU, seed=0)
    assert got["steps"] == 2 and got["epochs"] == 1


# ---------------------------------------------------------------- the stage end to end

@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for split, (n, seed) in {"train": (100, 0), "test": (40, 1)}.items():
        x, y = images(n, seed)
        np.savez(prepared / f"{split}.npz", x=x, y=y, classes=np.array([str(c) for c in range(CLASSES)]))
    save_indices(tmp_path / "ssl.npy", np.arange(0, 100, 2))
    save_indices(tmp_path / "semi1.npy", np.arange(0, 100, 10))
    save_indices(tmp_path / "semi10.npy", np.arange(0, 100, 5))
    tiny = EncoderConfig(arch="resnet18", width=1 / 16, stem="cifar")
    torch.manual_seed(0)
    save_encoder(tmp_path / "encoder.pt", build_encoder(tiny), tiny)  # read back by encoder.load_encoder

    def make(n_seeds=1, encoder=True, **evaluate_cfg):
        params = tmp_path / "paper_params.yaml"
        params.write_text(yaml.safe_dump({"runs": {"n_seeds": n_seeds}, "evaluate": {
            "linear": {"epochs": 3, "batch_size": 32, "lr": 0.05, "feature_batch_size": 64}, "knn_k": 5,
            "probe": {"semi1": {"epochs": 2, "batch_size": 16}, "semi10": {"epochs": 2, "batch_size": 16}},
            "finetune": {"epochs": 2, "batch_size": 16, "max_steps": 1, "eval_batch_size": 64}, **evaluate_cfg}}))
        return ["--params", str(params), "--suite-params", str(suite_params()),
                *(["--encoder", str(tmp_path / "encoder.pt")] if encoder else []),
                "--prepared", str(prepared), "--semi1", str(tmp_path / "semi1.npy"), "--semi10",
                str(tmp_path / "semi10.npy"), "--run", "pair_crop"]
    return tmp_path, make


def test_stage_with_linear_probes_labels_them_in_the_record(project):
    tmp, make = project
    out = tmp / "eval"
    assert evaluate.main([*make(semi_protocol="linear_probe", linear_train="ssl_subset"), "--indices",
                          str(tmp / "ssl.npy"), "--seed", "0", "--out", str(out), "--metrics",
                          str(tmp / "m.json"), "--plots", str(tmp / "p.json")]) == 0
    record = records.read(out / "metrics.json")
    assert (record.table, record.row, record.seed) == ("runs", "pair_crop", 0)
    assert record.extra["cells"] == [["table1", "Crop + Generative"]]
    assert set(record.metrics) == {"lin_top1", "lin_top5", "semi1_top1", "semi1_top5", "semi10_top1",
                                   "semi10_top5", "knn_top1"}
    assert all(0 <= v <= 100 for v in record.metrics.values())
    assert record.extra["semi_protocol"] == "linear_probe"
    assert "linear probe" in record.extra["semi_label"] and "NOT the paper's fine-tuning" in record.extra["semi_note"]
    semi_labels = {k: v for k, v in record.extra["metric_labels"].items() if k.startswith("semi")}
    assert len(semi_labels) == 4 and all("(linear probe)" in v for v in semi_labels.values())
    assert record.extra["linear_reported_epoch"].startswith("final")
    assert record.extra["counts"]["linear_train_images"] == 50 and record.extra["linear_train"] == "ssl_subset"
    assert record.metrics["lin_top1"] == record.extra["linear_curve"][-1]["test_top1"]
    assert record.extra["linear_best_epoch_top1"] == max(r["test_top1"] for r in record.extra["linear_curve"])
    assert json.loads((tmp / "m.json").read_text()) == record.metrics
    assert [p["epoch"] for p in json.loads((tmp / "p.json").read_text())] == [1, 2, 3]
    assert not (out / "checkpoint.pt").exists()


def test_stage_fine_tunes_at_smoke_with_a_step_and_says_so(project):
    tmp, make = project
    out = tmp / "eval_ft"
    assert evaluate.main([*make(semi_protocol="finetune"), "--seed", "0", "--out", str(out)]) == 0
    record = records.read(out / "metrics.json")
    assert record.extra["semi_protocol"] == "finetune" and "fine-tuned" in record.extra["semi_label"]
    assert "stopped after 1 steps" in record.extra["semi_note"]
    assert record.extra["counts"]["semi1_finetune_steps"] == record.extra["counts"]["semi10_finetune_steps"] == 1
    assert record.extra["counts"]["linear_train_images"] == 100
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert set(state["done"]) == {"semi1", "semi10"} and "running" not in state
    # a rerun reads the finished fine-tuning from the checkpoint and writes the same semi numbers
    assert evaluate.main([*make(semi_protocol="finetune"), "--seed", "0", "--out", str(out)]) == 0
    again = records.read(out / "metrics.json")
    assert {k: v for k, v in again.metrics.items() if k.startswith("semi")} == \
        {k: v for k, v in record.metrics.items() if k.startswith("semi")}


def test_seeds_beyond_the_scale_skip_and_bad_inputs_are_one_line_errors(project, capsys):
    tmp, make = project
    assert evaluate.main([*make(), "--seed", "1", "--out", str(tmp / "e1")]) == 0
    assert records.read(tmp / "e1" / "metrics.json").is_skip
    skipped = tmp / "pre_skipped"  # the pretrain stage's skip marker where its encoder.pt would be
    records.write(skipped / "metrics.json", records.MetricsRecord("gencl", "pretrain", "smoke", 0,
                                                                  skipped="run x is not run at scale smoke"))
    args = make()
    args[args.index("--encoder") + 1] = str(skipped / "encoder.pt")
    assert evaluate.main([*args, "--seed", "0", "--out", str(tmp / "e0")]) == 0
    assert "run x is not run at scale smoke" in records.read(tmp / "e0" / "metrics.json").skipped
    assert evaluate.main([*make(linear_train="ssl_subset"), "--seed", "0", "--out", str(tmp / "e2")]) == 2
    assert "no --indices" in capsys.readouterr().err
    save_indices(tmp / "bad.npy", np.array([5, 100]))
    args = make()
    args[args.index("--semi1") + 1] = str(tmp / "bad.npy")
    assert evaluate.main([*args, "--seed", "0", "--out", str(tmp / "e3")]) == 2
    assert "bad.npy (1% label subset)" in capsys.readouterr().err


def test_seeds_in_one_process_read_the_pretrain_folders_and_key_metrics_per_seed(project, capsys):
    tmp, make = project
    pre = tmp / "pretrain"  # the pretrain stage's --out with --seeds: seed 0 ran, seed 1 wrote a skip marker
    (pre / "seed0").mkdir(parents=True)
    (tmp / "encoder.pt").rename(pre / "seed0" / "encoder.pt")
    records.write(pre / "seed1" / "metrics.json", records.MetricsRecord("gencl", "pretrain", "smoke", 1,
                                                                        skipped="run x is not run at scale smoke"))
    metrics, plots = tmp / "m.json", tmp / "p.json"
    args = [*make(n_seeds=2, encoder=False), "--pretrain", str(pre), "--metrics", str(metrics), "--plots", str(plots)]
    assert evaluate.main([*args, "--seeds", "0", "1", "2", "--out", str(tmp / "eval")]) == 0
    ran = records.read(tmp / "eval" / "seed0" / "metrics.json")
    assert ran.seed == 0 and ran.extra["encoder"] == str(pre / "seed0" / "encoder.pt")
    assert "run x is not run at scale smoke" in records.read(tmp / "eval" / "seed1" / "metrics.json").skipped
    assert "runs.n_seeds" in records.read(tmp / "eval" / "seed2" / "metrics.json").skipped
    assert json.loads(metrics.read_text()) == {f"seed0/{k}": v for k, v in ran.metrics.items()}
    assert json.loads(plots.read_text()) == [{"epoch": r["epoch"], "seed0": r["test_top1"]}
                                             for r in ran.extra["linear_curve"]]
    # one seed by hand (--seed, --encoder, outputs in --out itself) gives the same numbers
    alone = [*make(n_seeds=2, encoder=False), "--encoder", str(pre / "seed0" / "encoder.pt")]
    assert evaluate.main([*alone, "--seed", "0", "--out", str(tmp / "alone")]) == 0
    assert records.read(tmp / "alone" / "metrics.json").metrics == ran.metrics
    # --seeds takes --pretrain, --seed takes --encoder
    capsys.readouterr()
    for bad in (["--seeds", "0", "--encoder", str(pre / "seed0" / "encoder.pt")], ["--seed", "0"],
                ["--seed", "0", "--pretrain", str(pre)]):
        with pytest.raises(SystemExit) as exit_:
            evaluate.main([*make(encoder=False), *bad, "--out", str(tmp / "x")])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds takes --pretrain" in err and "--seed takes --encoder" in err
