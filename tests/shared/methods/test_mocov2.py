"""MoCo v2: InfoNCE with a queue against a per-sample loop, the FIFO queue, the momentum update,
split batch norm, gradients and resume."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.losses import infonce_with_queue
from shared.methods.mocov2 import SplitBatchNorm2d, split_batchnorm


def views(n, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 16, 16, generator=g) for _ in range(n)]


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


# ---------------------------------------------------------------- the loss

def naive_infonce(q, k, queue, t):
    """1/N sum_n -log( exp(q_n.k_n/t) / (exp(q_n.k_n/t) + sum_j exp(q_n.queue_j/t)) ), one sample at a time."""
    total = 0.0
    for qn, kn in zip(q.tolist(), k.tolist()):
        pos = math.exp(sum(a * b for a, b in zip(qn, kn)) / t)
        neg = sum(math.exp(sum(a * b for a, b in zip(qn, key)) / t) for key in queue.tolist())
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("n,k", [(1, 1), (4, 6), (5, 32)])
def test_infonce_with_queue_matches_a_per_sample_loop(n, k):
    q, keys, queue = unit(n, 8, seed=1), unit(n, 8, seed=2), unit(k, 8, seed=3)
    for t in (0.2, 0.07):
        expected = naive_infonce(q, keys, queue, t)
        assert infonce_with_queue(q, keys, queue, t).item() == pytest.approx(expected, rel=1e-10)


def test_infonce_with_queue_checks_shapes():
    with pytest.raises(AssertionError, match=r"queue must be \(K, 8\)"):
        infonce_with_queue(unit(4, 8), unit(4, 8), unit(6, 7), 0.2)
    with pytest.raises(AssertionError, match="q and k must both be"):
        infonce_with_queue(unit(4, 8), unit(3, 8), unit(6, 8), 0.2)


# ---------------------------------------------------------------- the method

def keys_of(method, v):
    with torch.no_grad():
        return F.normalize(method.key_head(method.key_encoder(v)), dim=1)


def test_the_loss_uses_the_queue_before_this_batch_is_enqueued(tiny_method):
    method = tiny_method("mocov2", temperature=0.2)
    v1, v2 = views(2)
    queue = method.queue.clone()
    loss, _ = method([v1, v2])
    q = F.normalize(method.head(method.encoder(v1)), dim=1)
    torch.testing.assert_close(loss, infonce_with_queue(q, keys_of(method, v2), queue, 0.2), rtol=1e-6, atol=0)
    assert torch.allclose(method.queue[:8], keys_of(method, v2), atol=1e-6)
    assert torch.equal(method.queue[8:], queue[8:]) and method.queue_ptr.item() == 8


def test_the_queue_is_fifo_and_wraps_around(tiny_method):
    method = tiny_method("mocov2", queue_size=10)
    start = method.queue.clone()
    assert torch.allclose(start.norm(dim=1), torch.ones(10))  # starts with random unit keys
    batches = [views(2, b=4, seed=s) for s in range(3)]
    keys = []
    for vs in batches:
        method(vs)
        keys.append(keys_of(method, vs[1]))
    a, b, c = keys
    # 4 + 4 + 4 keys into 10 rows: the third batch's last two overwrite rows 0-1, the oldest
    expected = torch.cat([c[2:], a[2:], b, c[:2]])
    torch.testing.assert_close(method.queue, expected, rtol=0, atol=1e-6)
    assert method.queue_ptr.item() == 2
    method.eval()
    method(batches[0])  # outside training a forward leaves the queue alone
    assert method.queue_ptr.item() == 2


def test_the_key_encoder_follows_the_query_encoder_with_momentum(tiny_method):
    method = tiny_method("mocov2", momentum=0.99)
    query = [*method.encoder.parameters(), *method.head.parameters()]
    key = [*method.key_encoder.parameters(), *method.key_head.parameters()]
    assert all(torch.equal(k, q) for k, q in zip(key, query, strict=True))  # f_k starts as a copy of f_q
    with torch.no_grad():
        for q in query:
            q.add_(torch.randn_like(q))
    before = [k.detach().clone() for k in key]
    method.after_step(0, 10)
    for k, k0, q in zip(key, before, query):  # param_k = param_k * m + param_q * (1 - m)
        torch.testing.assert_close(k, k0 * 0.99 + q.detach() * 0.01, rtol=1e-6, atol=1e-7)


def test_keys_carry_no_gradient_and_every_query_parameter_learns(tiny_method):
    method = tiny_method("mocov2")
    method(views(2))[0].backward()
    key = {id(p) for m in (method.key_encoder, method.key_head) for p in m.parameters()}
    assert key.isdisjoint(id(p) for p in method.trainable_parameters())
    for name, p in method.named_parameters():
        if id(p) in key:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_more_views_average_the_losses_of_the_key_views_and_enqueue_the_first(tiny_method):
    method = tiny_method("mocov2")
    vs = views(3)
    queue = method.queue.clone()
    loss, _ = method(vs)
    q = F.normalize(method.head(method.encoder(vs[0])), dim=1)
    expected = (infonce_with_queue(q, keys_of(method, vs[1]), queue, 0.2)
                + infonce_with_queue(q, keys_of(method, vs[2]), queue, 0.2)) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert torch.allclose(method.queue[:8], keys_of(method, vs[1]), atol=1e-6) and method.queue_ptr.item() == 8


def test_the_queue_and_its_pointer_are_in_the_state_dict(tiny_method):
    method = tiny_method("mocov2")
    method(views(2))
    other = tiny_method("mocov2", seed=1)
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.queue, method.queue) and other.queue_ptr.item() == 8


# ---------------------------------------------------------------- shuffled BN on one device

def test_split_batchnorm_normalises_each_group_on_its_own():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
    split = split_batchnorm(nn.Sequential(bn), 2)[0]
    assert isinstance(split, SplitBatchNorm2d) and split.state_dict().keys() == bn.state_dict().keys()
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    start = split.running_mean.clone(), split.running_var.clone()
    out = split(x)
    means, vars_ = [], []
    for g in range(2):  # group g: samples g, g + 2, g + 4, ...
        xg = x[g::2]
        mean, var = xg.mean(dim=(0, 2, 3)), xg.var(dim=(0, 2, 3), unbiased=False)
        expected = (xg - mean.view(1, 3, 1, 1)) / torch.sqrt(var.view(1, 3, 1, 1) + split.eps)
        expected = expected * split.weight.view(1, 3, 1, 1) + split.bias.view(1, 3, 1, 1)
        torch.testing.assert_close(out[g::2], expected, rtol=1e-5, atol=1e-5)
        means.append(0.9 * start[0] + 0.1 * mean)
        vars_.append(0.9 * start[1] + 0.1 * xg.var(dim=(0, 2, 3), unbiased=True))
    torch.testing.assert_close(split.running_mean, sum(means) / 2)
    torch.testing.assert_close(split.running_var, sum(vars_) / 2)
    assert split.num_batches_tracked.item() == 1
    split.eval()
    plain = nn.BatchNorm2d(3).eval()
    plain.load_state_dict(split.state_dict())
    torch.testing.assert_close(split(x), plain(x))


def test_shuffled_keys_come_back_in_the_batch_order(tiny_method):
    method = tiny_method("mocov2", bn_splits=2)
    assert any(isinstance(m, SplitBatchNorm2d) for m in method.encoder.modules())
    assert any(isinstance(m, SplitBatchNorm2d) for m in method.key_encoder.modules())
    v = views(1)[0]
    method.key_encoder.eval()  # running statistics: the grouping no longer matters, the order still does
    torch.testing.assert_close(method._keys(v), keys_of(method, v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bn_splits", [1, 2])
def test_an_interrupted_run_resumes_to_the_same_state(tmp_path, train_tiny, bn_splits):
    straight, result = train_tiny("mocov2", tmp_path / "straight", bn_splits=bn_splits)
    with pytest.raises(RuntimeError, match="stopped after epoch 2"):
        train_tiny("mocov2", tmp_path / "killed", stop_after=2, bn_splits=bn_splits)
    resumed, resumed_result = train_tiny("mocov2", tmp_path / "killed", init_seed=7, bn_splits=bn_splits)
    assert resumed_result.history == result.history and resumed_result.steps == result.steps == 12
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and {"queue", "queue_ptr"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["queue_ptr"].item() == 12 * 8 % 20  # 12 batches of 8 keys into a queue of 20
