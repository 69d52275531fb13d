import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from shared import checkpoint
from shared.config import REPO_ROOT as REPO
from shared.data import DeviceLoader
from shared.device import prepare_batch
from shared.losses import nt_xent
from shared.methods import METHODS
from shared.mixing import MixedLoader
from shared.tracking import NullLogger
from shared.trainers.ssl import NonFiniteLossError, SSLConfig, make_optimizer, ssl_step, train_ssl

CPU = torch.device("cpu")


def flip_views(x, index=None):
    x = x.float() / 255
    return [x, x.flip(-1)]


# --------------------------------------------------------------------------- loaders

def test_loaders_yield_images_labels_and_their_rows(toy_images):
    x, y = toy_images(20)
    for batch_x, batch_y, index in DeviceLoader(x, y, batch_size=6, seed=1):
        assert index.dtype == torch.int64
        assert torch.equal(batch_x, x[index]) and torch.equal(batch_y, y[index])
    fake = torch.flip(x[:10], dims=[-1])
    mixed = MixedLoader(x, fake, batch_size=6, sampler="balanced", seed=1, drop_last=False)
    seen = []
    for batch_x, source, index in mixed:
        assert torch.equal(batch_x, torch.cat([x, fake])[index])
        assert torch.equal(source, (index >= len(x)).long())
        seen += index.tolist()
    assert sorted(seen) == list(range(30))


# --------------------------------------------------------------------------- ssl_step

def test_every_parameter_gets_a_gradient_and_moves(tiny_method, toy_images):
    method = tiny_method("simclr")
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    opt = make_optimizer(SSLConfig(optimizer="lars", lr=0.1), method.trainable_parameters())
    x, _ = toy_images(8)
    ssl_step(method, flip_views(x), opt, CPU)
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"


def test_loss_falls_over_a_few_steps(tiny_method, toy_images):
    method = tiny_method("simclr")
    opt = make_optimizer(SSLConfig(lr=3e-3), method.trainable_parameters())
    x, _ = toy_images(16)
    losses = [ssl_step(method, flip_views(x), opt, CPU)[0].item() for _ in range(15)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_step_is_the_method_loss_then_after_step_with_the_0_based_step(tiny_method, toy_images):
    method = tiny_method("simclr")
    calls = []
    method.after_step = lambda step, total: calls.append((step, total))  # a recording stand-in
    x, _ = toy_images(8)
    views = [prepare_batch(v, CPU) for v in flip_views(x)]  # the memory format ssl_step gives them
    expected = nt_xent(method.projector(method.encoder(views[0])), method.projector(method.encoder(views[1])), 0.5)
    opt = make_optimizer(SSLConfig(), method.trainable_parameters())
    loss, logs = ssl_step(method, views, opt, CPU, step=4, total_steps=9)
    assert torch.equal(loss, expected.detach()) and logs == {}
    assert calls == [(4, 9)]


# --------------------------------------------------------------------------- train_ssl

def test_evaluations_are_logged_as_curves(tmp_path, tiny_method, toy_images):
    method = tiny_method("simclr")
    x, y = toy_images(32)
    logger = NullLogger()
    calls = []

    def evaluate(enc):
        assert enc is method.encoder
        calls.append(enc.training)
        enc.eval()
        return {"acc": float(len(calls))}

    cfg = SSLConfig(epochs=5, batch_size=8, eval_every=2, log_every=1)
    result = train_ssl(cfg, method, flip_views, DeviceLoader(x, y, 8, drop_last=True), out_dir=tmp_path,
                       logger=logger, device=CPU, evaluate=evaluate, progress=False)
    assert [h["epoch"] for h in result.history] == [2, 4, 5]
    assert result.final == {"acc": 3.0} and result.steps == 20
    assert calls == [True, True, True]  # each evaluation sets eval(); the trainer sets train() again
    eval_steps = [step for step, m in logger.metrics if "eval/acc" in m]
    assert eval_steps == [2, 4, 5]
    assert sum("train/loss" in m for _, m in logger.metrics) == 20


def test_the_view_source_gets_each_batch_and_its_rows(tmp_path, tiny_method, toy_images):
    x, y = toy_images(24)
    loader = DeviceLoader(x, y, 8, drop_last=True, seed=3)
    expected = []
    for e in range(2):
        loader.set_epoch(e)
        expected += [(bx, idx) for bx, _, idx in loader]
    got = []

    def views(batch_x, index):
        got.append((batch_x, index))
        return flip_views(batch_x)

    train_ssl(SSLConfig(epochs=2, batch_size=8), tiny_method("simclr"), views, loader, out_dir=tmp_path,
              logger=NullLogger(), device=CPU, progress=False)
    assert len(got) == len(expected) == 6
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, expected))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_trains_and_logs(tmp_path, name, tiny_method, toy_images):
    method = tiny_method(name)
    x, y = toy_images(16)
    logger = NullLogger()
    train_ssl(SSLConfig(epochs=1, batch_size=8, log_every=1), method, flip_views, DeviceLoader(x, y, 8),
              out_dir=tmp_path, logger=logger, device=CPU, progress=False)
    logged = [m for _, m in logger.metrics]
    assert len(logged) == 2 and all(np.isfinite(m["train/loss"]) for m in logged)
    if name == "vicreg":  # the method's logs come through as train/<name>
        assert {"train/repr", "train/std", "train/cov"} <= set(logged[0])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["method"]
    assert state.keys() == method.state_dict().keys()


def test_non_finite_loss_stops_naming_step_and_value(tmp_path, tiny_method, toy_images):
    x, y = toy_images(32)
    count = {"n": 0}

    def views(batch_x, index):
        count["n"] += 1
        v1, v2 = flip_views(batch_x)
        return [v1 * float("nan"), v2] if count["n"] == 3 else [v1, v2]

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 3 \(epoch 1\)"):
        train_ssl(SSLConfig(epochs=2, batch_size=8), tiny_method("simclr"), views, DeviceLoader(x, y, 8),
                  out_dir=tmp_path, logger=NullLogger(), device=CPU, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing half-done is left behind


def test_a_checkpoint_without_method_state_is_refused_by_name(tmp_path, tiny_method, toy_images):
    checkpoint.save(tmp_path / "checkpoint.pt", {"encoder": {}, "projector": {}, "epoch": 1})
    x, y = toy_images(16)
    with pytest.raises(checkpoint.CheckpointError, match="no 'method' state"):
        train_ssl(SSLConfig(epochs=2, batch_size=8), tiny_method("simclr"), flip_views, DeviceLoader(x, y, 8),
                  out_dir=tmp_path, logger=NullLogger(), device=CPU, progress=False)


# The child builds everything from the suite's own modules; it imports no test module.
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from shared import checkpoint
    from shared.data import DeviceLoader
    from shared.methods import build_method
    from shared.models import resnet18
    from shared.tracking import NullLogger
    from shared.trainers.linear_eval import LinearEvalConfig, linear_eval
    from shared.trainers.ssl import SSLConfig, train_ssl
    from shared.views import SimCLRViewConfig, SimCLRViews

    out, name, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    g = torch.Generator().manual_seed(0)  # class-coloured noisy 16x16 images, 4 classes
    y = torch.arange(64) % 4
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=torch.float)[y]
    x = (base[:, :, None, None] + 30 * torch.randn(64, 3, 16, 16, generator=g)).clamp(0, 255).to(torch.uint8)
    checkpoint.seed_everything(0)
    heads = {"simclr": dict(projection_dim=8, hidden_dim=16), "mocov2": dict(dim=8, queue_size=24, bn_splits=2)}
    method = build_method(name, resnet18(width=1 / 16), **heads[name])
    simclr_views = SimCLRViews(SimCLRViewConfig.from_strength(0.5, blur=False))
    calls = {"n": 0}

    def views(batch, index):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return simclr_views(batch, index)

    evaluate = lambda enc: linear_eval(enc, (x, y), (x, y), LinearEvalConfig(epochs=3, batch_size=16),
                                       torch.device("cpu"), knn_k=5)
    cfg = SSLConfig(epochs=3, batch_size=16, optimizer="lars", lr=0.1, schedule="cosine", warmup_epochs=1,
                    eval_every=1)
    result = train_ssl(cfg, method, views, DeviceLoader(x, y, 16, drop_last=True), out_dir=out,
                       logger=NullLogger(), device=torch.device("cpu"), evaluate=evaluate, progress=False)
    state = torch.cat([t.detach().double().flatten() for t in method.state_dict().values()])
    json.dump({"history": result.history, "steps": result.steps, "state_sum": state.sum().item(),
               "state_abs_sum": state.abs().sum().item()}, open(os.path.join(out, "result.json"), "w"))
""")


@pytest.mark.parametrize("name", ["simclr"])  # BYOL and MoCo v2 resume in-process in tests/shared/methods
def test_sigkilled_run_resumes_to_the_same_result(tmp_path, name):
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def run(out, kill_at):
        out.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, str(script), str(out), name, str(kill_at)], cwd=REPO,
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
