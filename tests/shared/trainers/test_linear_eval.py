import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from shared.trainers.linear_eval import LinearEvalConfig, knn_accuracy, linear_eval, train_linear


# --------------------------------------------------------------------------- evaluation

def blobs(n, d=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, d, generator=g), y


def test_linear_head_matches_sklearn_logistic_regression():
    train_x, train_y = blobs(400, seed=1)
    test_x, test_y = blobs(400, seed=2)
    ours = train_linear(train_x, train_y, test_x, test_y, LinearEvalConfig(epochs=50, lr=1e-2, batch_size=64))
    ref = LogisticRegression(max_iter=2000).fit(train_x.numpy(), train_y.numpy())
    ref_acc = ref.score(test_x.numpy(), test_y.numpy()) * 100
    assert ours["linear_test_acc"] > 90
    assert abs(ours["linear_test_acc"] - ref_acc) < 3


def test_linear_head_sgd_with_milestones_is_deterministic():
    train_x, train_y = blobs(200, seed=1)
    cfg = LinearEvalConfig(epochs=10, optimizer="sgd", lr=0.1, milestones=(5, 8), seed=4)
    torch.manual_seed(0)
    a = train_linear(train_x, train_y, train_x, train_y, cfg)
    b = train_linear(train_x, train_y, train_x, train_y, cfg)
    assert a == b


def test_knn_matches_sklearn_weighted_knn():
    train_x, train_y = blobs(300, seed=3)
    test_x, test_y = blobs(200, seed=4)
    train_x, test_x = train_x - 1.5, test_x - 1.5  # spread the angles so cosine kNN is non-trivial
    k, t = 15, 0.1
    ours = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=t)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=lambda d: np.exp((1 - d) / t))
    ref_acc = ref.fit(train_x.numpy(), train_y.numpy()).score(test_x.numpy(), test_y.numpy()) * 100
    assert ours == pytest.approx(ref_acc, abs=0.51)  # at most one tie broken differently


def test_linear_eval_extracts_features_in_eval_mode_without_touching_rng(tiny_net, toy_images):
    encoder, _ = tiny_net()
    encoder.train()
    x, y = toy_images(32)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    out = linear_eval(encoder, (x, y), (x, y), LinearEvalConfig(epochs=2), torch.device("cpu"), knn_k=3)
    assert torch.equal(torch.rand(1), expected)
    assert encoder.training
    assert set(out) == {"linear_train_acc", "linear_test_acc", "knn_test_acc"}
    assert all(0 <= v <= 100 for v in out.values())


# --------------------------------------------------------------------------- top-k, cosine, VICReg's head init

def test_topk_accuracy_matches_sklearn_top_k_accuracy_score():
    from sklearn.metrics import top_k_accuracy_score

    from shared.trainers.linear_eval import topk_accuracy, topk_correct

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(300, 12, generator=g), torch.randint(0, 12, (300,), generator=g)
    ours = topk_accuracy(logits, y, (1, 3, 5, 12, 20))
    ref = [top_k_accuracy_score(y.numpy(), logits.numpy(), k=k, labels=np.arange(12)) * 100 for k in (1, 3, 5)]
    assert ours[:3] == pytest.approx(ref, abs=1e-9)
    assert ours[0] == pytest.approx((logits.argmax(1) == y).float().mean().item() * 100)
    assert ours[3:] == [100.0, 100.0]  # k >= C: every label is in the top k
    assert topk_correct(logits, y, (1, 5)).tolist() == [round(ours[0] * 3), round(ours[2] * 3)]


def test_eval_sets_give_per_epoch_top1_top5_and_the_last_row_is_the_returned_head():
    from shared.trainers.linear_eval import fit_linear, topk_accuracy

    train_x, train_y = blobs(200, classes=8, seed=1)
    test_x, test_y = blobs(100, classes=8, seed=2)
    cfg = LinearEvalConfig(epochs=4, optimizer="sgd", lr=0.05, schedule="cosine", init_std=0.01, batch_size=32)
    head, curve = fit_linear(train_x, train_y, cfg, 8, eval_sets={"test": (test_x, test_y)})
    assert [r["epoch"] for r in curve] == [1, 2, 3, 4]
    assert [curve[-1]["test_top1"], curve[-1]["test_top5"]] == topk_accuracy(head(test_x).detach(), test_y)
    assert all(r["test_top1"] <= r["test_top5"] for r in curve)
    plain, plain_curve = fit_linear(train_x, train_y, cfg, 8)
    assert set(plain_curve[0]) == {"epoch", "loss", "train_acc"}  # without eval_sets the curve is as before
    assert torch.equal(plain.weight, head.weight)  # scoring does not change training


def test_cosine_schedule_anneals_per_epoch_and_rejects_milestones(monkeypatch):
    from shared.trainers import linear_eval

    lrs = []
    real_sgd = torch.optim.SGD

    class RecordingSGD(real_sgd):
        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(linear_eval.torch.optim, "SGD", RecordingSGD)
    train_x, train_y = blobs(64, seed=1)
    linear_eval.fit_linear(train_x, train_y, LinearEvalConfig(epochs=4, batch_size=64, optimizer="sgd", lr=0.2,
                                                              schedule="cosine"), 4)
    want = [0.2 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]  # one step per epoch, lr of epoch e
    assert lrs == pytest.approx(want)
    with pytest.raises(ValueError, match="milestones"):
        LinearEvalConfig(schedule="cosine", milestones=(5,))


def test_init_std_draws_weights_from_a_normal_and_zeroes_the_bias():
    from shared.trainers.linear_eval import fit_linear

    train_x, train_y = blobs(64, d=200, classes=50, seed=1)
    cfg = LinearEvalConfig(epochs=1, batch_size=64, optimizer="sgd", lr=1e-12, momentum=0.0, init_std=0.01)
    head, _ = fit_linear(train_x, train_y % 50, cfg, 50)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert head.weight.mean().abs().item() < 1e-3 and head.bias.abs().max().item() < 1e-9
    again, _ = fit_linear(train_x, train_y % 50, cfg, 50)
    assert torch.equal(head.weight, again.weight)  # seeded by cfg.seed
