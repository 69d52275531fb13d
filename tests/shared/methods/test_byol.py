"""BYOL: the loss by hand and by formula, the EMA target and its tau schedule, gradients, resume."""
import math

import pytest
import torch

from shared.losses import byol_loss
from shared.methods.byol import target_ema


def views(n, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 16, 16, generator=g) for _ in range(n)]


# ---------------------------------------------------------------- the loss

def test_byol_loss_on_vectors_worked_by_hand():
    # cos((3, 4), (4, 3)) = 24/25 -> 2 - 48/25 = 0.08; (1, 0) against (0, 5): cos 0 -> 2; mean 1.04
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [0.0, 5.0]])
    assert byol_loss(p, z).item() == pytest.approx(1.04, abs=1e-6)
    # parallel -> 0, opposite -> 4, whatever the norms
    assert byol_loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[7.0, 0.0], [0.0, -3.0]])).item() == \
        pytest.approx(2.0, abs=1e-6)


def test_byol_loss_matches_the_squared_distance_of_the_unit_vectors():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    naive = 0.0
    for pn, zn in zip(p.tolist(), z.tolist()):
        np_, nz = math.sqrt(sum(a * a for a in pn)), math.sqrt(sum(b * b for b in zn))
        naive += sum((a / np_ - b / nz) ** 2 for a, b in zip(pn, zn))
    assert byol_loss(p, z).item() == pytest.approx(naive / 5, rel=1e-12)


def test_the_method_loss_is_the_symmetric_loss_with_the_predictor_on_the_online_branch_only(tiny_method):
    method = tiny_method("byol")
    v1, v2 = views(2)
    loss, _ = method([v1, v2])
    p1, p2 = (method.predictor(method.projector(method.encoder(v))) for v in (v1, v2))
    with torch.no_grad():
        t1, t2 = (method.target_projector(method.target_encoder(v)) for v in (v1, v2))
    assert torch.equal(loss, byol_loss(p1, t2) + byol_loss(p2, t1))
    vs = views(3, seed=1)
    p = [method.predictor(method.projector(method.encoder(v))) for v in vs]
    with torch.no_grad():
        t = [method.target_projector(method.target_encoder(v)) for v in vs]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(byol_loss(p[i], t[j]) + byol_loss(p[j], t[i]) for i, j in pairs) / 3
    torch.testing.assert_close(method(vs)[0], expected, rtol=1e-6, atol=0)


def test_gradients_reach_the_online_network_and_never_the_target(tiny_method):
    method = tiny_method("byol")
    method(views(2))[0].backward()
    target = {id(p) for m in (method.target_encoder, method.target_projector) for p in m.parameters()}
    assert target and target.isdisjoint(id(p) for p in method.trainable_parameters())
    for name, p in method.named_parameters():
        if id(p) in target:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- the EMA target

def test_tau_follows_the_cosine_schedule():
    K = 100
    for k in (0, 1, 25, 50, 99, 100):
        assert target_ema(k, K) == pytest.approx(1 - (1 - 0.996) * (math.cos(math.pi * k / K) + 1) / 2, abs=1e-15)
    assert target_ema(0, K) == pytest.approx(0.996) and target_ema(50, K) == pytest.approx(0.998)
    assert target_ema(K, K) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        target_ema(101, K)


def test_the_target_starts_as_the_online_network_and_follows_the_ema(tiny_method):
    method = tiny_method("byol", base_target_ema=0.9)
    online = [*method.encoder.parameters(), *method.projector.parameters()]
    target = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    assert all(torch.equal(t, o) for t, o in zip(target, online, strict=True))
    expected = [t.detach().double().clone() for t in target]
    g = torch.Generator().manual_seed(0)
    K = 6
    for k in range(4):
        with torch.no_grad():  # the optimiser's move, stood in by noise
            for o in online:
                o.add_(0.1 * torch.randn(o.shape, generator=g))
        method.after_step(k, K)
        tau = 1 - (1 - 0.9) * (math.cos(math.pi * k / K) + 1) / 2
        expected = [tau * e + (1 - tau) * o.detach().double() for e, o in zip(expected, online)]
    for t, e in zip(target, expected):
        torch.testing.assert_close(t.double(), e, rtol=1e-5, atol=1e-6)
    assert not all(torch.allclose(t, o) for t, o in zip(target, online))


def test_an_interrupted_run_resumes_to_the_same_state(tmp_path, train_tiny):
    straight, result = train_tiny("byol", tmp_path / "straight")
    with pytest.raises(RuntimeError, match="stopped after epoch 2"):
        train_tiny("byol", tmp_path / "killed", stop_after=2)
    # another init seed: the resumed state must come from the checkpoint
    resumed, resumed_result = train_tiny("byol", tmp_path / "killed", init_seed=7)
    assert resumed_result.history == result.history and resumed_result.steps == result.steps == 12
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("target_encoder.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
