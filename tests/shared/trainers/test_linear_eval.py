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
