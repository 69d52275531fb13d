"""LARS against a per-parameter Python reference; the warm-up + cosine schedule against its closed form."""
import math

import pytest
import torch

from shared.optim import LARS, simclr_lars_lr, vicreg_lr, warmup_cosine


# ---------------------------------------------------------------- LARS

def reference_lars(params, grads_per_step, lr, momentum, weight_decay, eta, exclude_1d=True):
    """Plain-Python LARS on flat lists: params[k] = (values, ndim); grads_per_step[t][k] = values."""
    ws = [list(v) for v, _ in params]
    mus = [[0.0] * len(v) for v, _ in params]
    for grads in grads_per_step:
        for k, (w, g, (_, ndim)) in enumerate(zip(ws, grads, params)):
            if exclude_1d and ndim == 1:
                u = list(g)
            else:
                u = [gi + weight_decay * wi for gi, wi in zip(g, w)]
                w_norm = math.sqrt(sum(x * x for x in w))
                u_norm = math.sqrt(sum(x * x for x in u))
                trust = eta * w_norm / u_norm if (w_norm > 0 and u_norm > 0) else 1.0
                u = [trust * x for x in u]
            mus[k] = [momentum * m + x for m, x in zip(mus[k], u)]
            ws[k] = [wi - lr * m for wi, m in zip(w, mus[k])]
    return ws


def _make_params(gen):
    return [
        torch.randn(3, 4, generator=gen, dtype=torch.float64),      # Linear weight
        torch.randn(3, generator=gen, dtype=torch.float64),         # bias
        torch.randn(2, 1, 2, 2, generator=gen, dtype=torch.float64),  # conv weight
    ]


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lars_matches_reference(steps, exclude_1d):
    gen = torch.Generator().manual_seed(steps)
    init = _make_params(gen)
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in init] for _ in range(steps)]
    hyper = dict(lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02)

    params = [p.clone().requires_grad_() for p in init]
    opt = LARS(params, exclude_1d=exclude_1d, **hyper)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()

    expected = reference_lars(
        [(p.flatten().tolist(), p.ndim) for p in init],
        [[g.flatten().tolist() for g in step_grads] for step_grads in grads],
        exclude_1d=exclude_1d,
        **hyper,
    )
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().flatten(), torch.tensor(e, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_lars_1d_params_are_plain_momentum_sgd():
    bias = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = LARS([bias], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.001)
    g = torch.tensor([0.5, 0.5, -1.0])
    for _ in range(2):
        bias.grad = g.clone()
        opt.step()
    # mu1 = g, mu2 = 0.9 g + g: no decay, no trust ratio.
    expected = torch.tensor([1.0, -2.0, 3.0]) - 0.1 * g - 0.1 * 1.9 * g
    torch.testing.assert_close(bias.detach(), expected)


def test_lars_param_group_overrides():
    gen = torch.Generator().manual_seed(7)
    w0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    b0 = torch.randn(4, generator=gen, dtype=torch.float64)
    gw = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    gb = torch.randn(4, generator=gen, dtype=torch.float64)
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = LARS(
        [{"params": [w], "eta": 0.05, "weight_decay": 0.2}, {"params": [b], "exclude_1d": False}],
        lr=0.3, momentum=0.0, weight_decay=0.0, eta=0.001,
    )
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    exp_w = reference_lars([(w0.flatten().tolist(), 2)], [[gw.flatten().tolist()]], 0.3, 0.0, 0.2, 0.05)[0]
    exp_b = reference_lars([(b0.tolist(), 1)], [[gb.tolist()]], 0.3, 0.0, 0.0, 0.001, exclude_1d=False)[0]
    torch.testing.assert_close(w.detach().flatten(), torch.tensor(exp_w, dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor(exp_b, dtype=torch.float64))


def test_lars_zero_initialised_weight_moves():
    # ||w|| = 0 -> trust 1 (the unofficial SimCLR LARS's `>= 0` guard gives trust 0 here).
    w = torch.zeros(3, 4, requires_grad=True)
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=1e-6, eta=0.001)
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    w.grad = g.clone()
    opt.step()
    assert w.abs().sum() > 0
    torch.testing.assert_close(w.detach(), -0.1 * g)


@pytest.mark.parametrize("zero_weight", [False, True])
def test_lars_zero_grad_gives_no_nan(zero_weight):
    w0 = torch.zeros(3, 4) if zero_weight else torch.randn(3, 4)
    w = w0.clone().requires_grad_()
    opt = LARS([w], lr=0.1, weight_decay=0.0)
    w.grad = torch.zeros(3, 4)
    opt.step()
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.detach(), w0)


def test_lars_skips_params_without_grad_and_lowers_a_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    frozen = torch.nn.Parameter(torch.ones(2, 2))
    opt = LARS([*model.parameters(), frozen], lr=1.0, eta=0.02)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert frozen not in opt.state and torch.all(frozen == 1)


def test_lars_rejects_bad_hyperparameters():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, name in [({"lr": -1.0}, "lr"), ({"lr": 0.1, "momentum": 1.0}, "momentum"),
                         ({"lr": 0.1, "weight_decay": -1e-6}, "weight_decay"), ({"lr": 0.1, "eta": 0.0}, "eta")]:
        with pytest.raises(ValueError, match=name):
            LARS(p, **kwargs)


# ---------------------------------------------------------------- schedule

def closed_form(step, warmup, total, final):
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def test_warmup_cosine_values():
    base, warmup, total, final = 0.8, 10, 110, 0.1
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = warmup_cosine(opt, warmup, total, final_lr_scale=final)
    lrs = []
    for _ in range(total + 3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(base / warmup)                 # step 0: ~0, not 0
    assert lrs[warmup - 1] == pytest.approx(base)                 # end of warm-up
    assert lrs[warmup] == pytest.approx(base)                     # cosine starts at the base lr
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx(base * (final + (1 - final) / 2))  # midpoint
    assert lrs[total] == pytest.approx(base * final)              # end
    assert lrs[total + 2] == pytest.approx(base * final)          # held after the end
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(base * closed_form(s, warmup, total, final)), s
    assert all(a <= b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup:total], lrs[warmup + 1:total + 1]))


def test_warmup_cosine_without_warmup_starts_at_base():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    warmup_cosine(opt, 0, 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "args, name",
    [
        ((-1, 10), "warmup_steps"),
        ((2.5, 10), "warmup_steps"),
        ((0, 0), "total_steps"),
        ((10, 10), "warmup_steps"),
        ((0, 10.0), "total_steps"),
        ((0, 10, -0.1), "final_lr_scale"),
        ((0, 10, 1.5), "final_lr_scale"),
    ],
)
def test_warmup_cosine_rejects_bad_args(args, name):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=name):
        warmup_cosine(opt, *args)


def test_lr_scaling_rules():
    assert simclr_lars_lr(256) == pytest.approx(0.3)
    assert simclr_lars_lr(128) == pytest.approx(0.15)
    assert vicreg_lr(2048) == pytest.approx(1.6)
    assert vicreg_lr(800, base=0.3) == pytest.approx(0.3 * 800 / 256)
    with pytest.raises(ValueError, match="batch_size"):
        vicreg_lr(0)
