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

from shared.config import REPO_ROOT as REPO


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
    from test_ssl import TensorLoader, toy_images, tiny_net
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
    script.write_text(CHILD.format(tests=str(REPO / "tests" / "shared" / "trainers")))

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
