import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from shared import checkpoint
from shared.losses import nt_xent
from shared.models import resnet18, simclr_projector
from shared.tracking import NullLogger
from shared.trainers.linear_eval import LinearEvalConfig, knn_accuracy, linear_eval, train_linear
from shared.trainers.ssl import NonFiniteLossError, SSLConfig, make_optimizer, ssl_step, train_ssl

from conftest import REPO


class TensorLoader:
    """A minimal in-memory loader with the trainer's interface (deterministic per epoch)."""

    def __init__(self, x, y, batch_size, seed=0):
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def toy_images(n=64, size=16, seed=0):
    """Class-coloured noisy images: a linear probe can tell the 4 classes apart."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=torch.float)[y]
    x = base[:, :, None, None] + 30 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y


def flip_views(x):
    x = x.float() / 255
    return [x, x.flip(-1)]


def tiny_net(seed=0):
    torch.manual_seed(seed)
    encoder = resnet18(width=1 / 16)
    return encoder, simclr_projector(encoder.feature_dim, 16, 8)


# --------------------------------------------------------------------------- ssl

def test_every_parameter_gets_a_gradient_and_moves():
    encoder, projector = tiny_net()
    before = {n: p.detach().clone() for n, p in [*encoder.named_parameters(), *projector.named_parameters()]}
    opt = make_optimizer(SSLConfig(optimizer="lars", lr=0.1), [*encoder.parameters(), *projector.parameters()])
    x, _ = toy_images(8)
    ssl_step(encoder, projector, flip_views, lambda a, b: nt_xent(a, b, 0.5), x, opt, torch.device("cpu"))
    for name, p in [*encoder.named_parameters(), *projector.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"


def test_loss_falls_over_a_few_steps():
    encoder, projector = tiny_net()
    opt = make_optimizer(SSLConfig(lr=3e-3), [*encoder.parameters(), *projector.parameters()])
    x, _ = toy_images(16)
    losses = [ssl_step(encoder, projector, flip_views, lambda a, b: nt_xent(a, b, 0.5), x, opt,
                       torch.device("cpu")).item() for _ in range(15)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_evaluations_are_logged_as_curves(tmp_path):
    encoder, projector = tiny_net()
    x, y = toy_images(32)
    logger = NullLogger()
    calls = []

    def evaluate(enc):
        calls.append(enc.training)
        return {"acc": float(len(calls))}

    cfg = SSLConfig(epochs=5, batch_size=8, eval_every=2, log_every=1)
    result = train_ssl(cfg, encoder, projector, flip_views, lambda a, b: nt_xent(a, b, 0.5),
                       TensorLoader(x, y, 8), out_dir=tmp_path, logger=logger, device=torch.device("cpu"),
                       evaluate=evaluate, progress=False)
    assert [h["epoch"] for h in result.history] == [2, 4, 5]
    assert result.final == {"acc": 3.0} and result.steps == 20
    assert calls == [True, True, True]  # the trainer hands over a training-mode encoder; eval sets eval()
    eval_steps = [step for step, m in logger.metrics if "eval/acc" in m]
    assert eval_steps == [2, 4, 5]
    assert sum("train/loss" in m for _, m in logger.metrics) == 20


def test_non_finite_loss_stops_naming_step_and_value(tmp_path):
    encoder, projector = tiny_net()
    x, y = toy_images(32)
    count = {"n": 0}

    def loss_fn(a, b):
        count["n"] += 1
        loss = nt_xent(a, b, 0.5)
        return loss * float("nan") if count["n"] == 3 else loss

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 3 \(epoch 1\)"):
        train_ssl(SSLConfig(epochs=2, batch_size=8), encoder, projector, flip_views, loss_fn,
                  TensorLoader(x, y, 8), out_dir=tmp_path, logger=NullLogger(), device=torch.device("cpu"),
                  progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing half-done is left behind


CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainers import TensorLoader, toy_images, tiny_net
    from shared.losses import nt_xent
    from shared.tracking import NullLogger
    from shared.trainers.linear_eval import LinearEvalConfig, linear_eval
    from shared.trainers.ssl import SSLConfig, train_ssl
    from shared.views import SimCLRViewConfig, SimCLRViews

    out, kill_at = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    encoder, projector = tiny_net()
    x, y = toy_images(64)
    calls = {{"n": 0}}

    def loss_fn(a, b):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return nt_xent(a, b, 0.5)

    views = SimCLRViews(SimCLRViewConfig.from_strength(0.5, blur=False))
    evaluate = lambda enc: linear_eval(enc, (x, y), (x, y), LinearEvalConfig(epochs=3, batch_size=16),
                                       torch.device("cpu"), knn_k=5)
    cfg = SSLConfig(epochs=3, batch_size=16, optimizer="lars", lr=0.1, schedule="cosine", warmup_epochs=1,
                    eval_every=1)
    result = train_ssl(cfg, encoder, projector, views, loss_fn, TensorLoader(x, y, 16), out_dir=out,
                       logger=NullLogger(), device=torch.device("cpu"), evaluate=evaluate, progress=False)
    params = torch.cat([p.detach().flatten() for p in encoder.parameters()])
    json.dump({{"history": result.history, "steps": result.steps, "param_sum": params.double().sum().item()}},
              open(os.path.join(out, "result.json"), "w"))
""")


def test_sigkilled_run_resumes_to_the_same_result(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(REPO / "tests")))

    def run(out, kill_at):
        out.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, str(script), str(out), str(kill_at)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    straight = run(tmp_path / "straight", 0)
    assert straight.returncode == 0, straight.stderr
    killed = run(tmp_path / "killed", 7)  # 4 steps per epoch: dies in epoch 2, after epoch 1's checkpoint
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "killed" / "result.json").exists()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = run(tmp_path / "killed", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a = json.loads((tmp_path / "straight" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert a == b
    assert len(a["history"]) == 3 and a["steps"] == 12


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, {"step": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"step": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.pt is corrupt"):
        checkpoint.load(path)
    assert checkpoint.load(tmp_path / "absent.pt") is None


def test_rng_state_round_trip():
    checkpoint.seed_everything(3)
    state = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3))
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


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


def test_linear_eval_extracts_features_in_eval_mode_without_touching_rng():
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
