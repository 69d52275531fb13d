"""CR and bCR (shared.gan_losses.cr / bcr): the penalties against hand-worked values and a naive loop, T =
HFlip + translation (reflection fill) drawn per image against hand-made shifted images, where the gradients
go, and that a zero weight is the baseline exactly."""
import copy
import itertools

import numpy as np
import pytest
import torch

from shared.gan_losses import (balanced_consistency_penalty, bcr, consistency_penalty, cr, hflip_translation, hinge,
                               hinge_d_loss, identity, nonsaturating, ns_d_loss)
from shared.models.sngan import sngan
from shared.trainers.gan import GANConfig, d_step

CPU = torch.device("cpu")


def linear_d(seed=0, shape=(3, 4, 4)):
    """D(x) = <a, x> + b, its parameters a and b (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    return (lambda x, c=None: (x * a).sum(dim=(1, 2, 3)) + b + (0 if c is None else c.double())), a, b


def images(n, seed, shape=(3, 4, 4)):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def flip(x):  # a deterministic T for the algebra
    return x.flip(-1)


def tiny_sndcgan(seed=0):
    torch.manual_seed(seed)
    return sngan("sndcgan", width=1 / 16, z_dim=8)


# ---------------------------------------------------------------- the pure penalties

def test_consistency_penalty_matches_hand_worked_values_and_a_naive_loop():
    logits, transformed = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, -0.5, 3.5])
    # differences 0.5, -0.5, -1.5: squares 0.25, 0.25, 2.25, mean 2.75 / 3
    assert consistency_penalty(logits, transformed).item() == pytest.approx(2.75 / 3, rel=1e-7)
    u, v = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    naive = sum((float(u[i]) - float(v[i])) ** 2 for i in range(7)) / 7
    assert consistency_penalty(u, v).item() == pytest.approx(naive, rel=1e-12)
    assert consistency_penalty(u, u).item() == 0.0
    assert consistency_penalty(logits.bfloat16(), transformed.bfloat16()).dtype == torch.float32
    with pytest.raises(AssertionError, match="consistency_penalty"):
        consistency_penalty(logits, transformed[:2])
    with pytest.raises(AssertionError, match="consistency_penalty"):
        consistency_penalty(logits.view(3, 1), transformed.view(3, 1))  # (N, 1) logits: squeeze them first


def test_balanced_penalty_is_the_real_term_plus_the_fake_term():
    real, real_t = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.5])  # CR(real) = (1 + 0.25) / 2 = 0.625
    fake, fake_t = torch.tensor([-1.0, 0.0, 3.0]), torch.tensor([-3.0, 0.0, 2.0])  # CR(fake) = (4 + 0 + 1) / 3
    assert balanced_consistency_penalty(real, real_t, fake, fake_t).item() == pytest.approx(
        10 * 0.625 + 10 * 5 / 3, rel=1e-7)
    assert balanced_consistency_penalty(real, real_t, fake, fake_t, lambda_real=2.0, lambda_fake=0.5).item() == \
        pytest.approx(2 * 0.625 + 0.5 * 5 / 3, rel=1e-7)
    assert balanced_consistency_penalty(real, real_t, fake, fake_t, lambda_fake=0.0).item() == \
        pytest.approx(10 * consistency_penalty(real, real_t).item(), rel=1e-7)


# ---------------------------------------------------------------- the methods' D and G losses

def test_cr_d_loss_is_the_baseline_loss_on_clean_images_plus_lambda_times_the_penalty():
    D, _, _ = linear_d()
    real, fake = images(5, 1), images(4, 2)
    loss, logs = cr(transform=flip).d_loss(D, real, fake, identity)
    naive = sum((D(real[i:i + 1]).item() - D(flip(real[i:i + 1])).item()) ** 2 for i in range(5)) / 5
    expected = ns_d_loss(D(real), D(fake)).item() + 10 * naive
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert logs["d/cr_real"] == pytest.approx(naive, rel=1e-10) and "d/cr_fake" not in logs
    assert logs["d/loss"] == pytest.approx(ns_d_loss(D(real), D(fake)).item(), rel=1e-10)  # the adversarial part
    loss, _ = cr(lambda_real=2.5, loss="hinge", transform=flip).d_loss(D, real, fake, identity)
    assert loss.item() == pytest.approx(hinge_d_loss(D(real), D(fake)).item() + 2.5 * naive, rel=1e-10)


def test_bcr_is_cr_plus_the_fake_term():
    D, _, _ = linear_d()
    real, fake = images(5, 1), images(4, 2)
    cr_loss, _ = cr(transform=flip).d_loss(D, real, fake, identity)
    bcr_loss, logs = bcr(transform=flip).d_loss(D, real, fake, identity)
    fake_term = sum((D(fake[i:i + 1]).item() - D(flip(fake[i:i + 1])).item()) ** 2 for i in range(4)) / 4
    assert bcr_loss.item() - cr_loss.item() == pytest.approx(10 * fake_term, rel=1e-9)
    assert logs["d/cr_fake"] == pytest.approx(fake_term, rel=1e-10)
    loss, _ = bcr(lambda_real=1.0, lambda_fake=3.0, transform=flip).d_loss(D, real, fake, identity)
    assert loss.item() == pytest.approx(ns_d_loss(D(real), D(fake)).item() + logs["d/cr_real"] + 3 * fake_term,
                                        rel=1e-10)
    # with the default random T: the reals' draws come first, so under one seed CR's real term is bCR's
    torch.manual_seed(3)
    _, cr_logs = cr().d_loss(D, real, fake, identity)
    torch.manual_seed(3)
    total, logs = bcr().d_loss(D, real, fake, identity)
    assert logs["d/cr_real"] == cr_logs["d/cr_real"] and logs["d/cr_fake"] > 0
    assert total.item() == pytest.approx(logs["d/loss"] + 10 * logs["d/cr_real"] + 10 * logs["d/cr_fake"], rel=1e-10)


def test_the_penalty_uses_hflip_translation_of_each_real_under_the_global_rng():
    D, _, _ = linear_d(shape=(3, 32, 32))
    real, fake = images(6, 1, (3, 32, 32)), images(6, 2, (3, 32, 32))
    torch.manual_seed(11)
    _, logs = cr().d_loss(D, real, fake, identity)
    torch.manual_seed(11)
    expected = ((D(real) - D(hflip_translation(real))) ** 2).mean().item()
    assert logs["d/cr_real"] == pytest.approx(expected, rel=1e-10)
    torch.manual_seed(11)
    _, logs = bcr().d_loss(D, real, fake, identity)
    torch.manual_seed(11)
    t_real = hflip_translation(real)
    expected_fake = ((D(fake) - D(hflip_translation(fake))) ** 2).mean().item()  # drawn after the reals'
    assert logs["d/cr_real"] == pytest.approx(((D(real) - D(t_real)) ** 2).mean().item(), rel=1e-10)
    assert logs["d/cr_fake"] == pytest.approx(expected_fake, rel=1e-10)


def test_g_loss_augment_and_names_are_the_baselines():
    base, hinge_base = nonsaturating(""), hinge()
    for method, reference, name in ((cr(), base, "cr"), (bcr(), base, "bcr"), (cr(loss="hinge"), hinge_base,
                                                                                 "hinge+cr"),
                                    (bcr(loss="hinge"), hinge_base, "hinge+bcr")):
        assert method.name == name and method.augment is identity  # D's loss sees clean images
        assert method.g_loss is reference.g_loss
    D, _, _ = linear_d()
    fake = images(4, 2)
    torch.testing.assert_close(cr().g_loss(D, fake, identity)[0], base.g_loss(D, fake, identity)[0])


def test_bad_weights_and_losses_fail_loudly():
    with pytest.raises(ValueError, match="lambda_real"):
        cr(-1.0)
    with pytest.raises(ValueError, match="lambda_fake"):
        bcr(lambda_fake=float("nan"))
    with pytest.raises(ValueError, match="lambda_real"):
        cr(True)
    with pytest.raises(ValueError, match="unknown loss 'wgan'"):
        bcr(loss="wgan")


def test_conditional_runs_score_both_sides_with_the_images_conditions():
    D, _, _ = linear_d()
    real, fake = images(2, 1), images(3, 2)
    c_real, c_fake = torch.tensor([1, 2]), torch.tensor([0, 1, 5])
    loss, _ = bcr(transform=flip).d_loss(D, real, fake, identity, c_real=c_real, c_fake=c_fake)
    # the condition's offset cancels inside each difference only when both sides get the same c
    expected = (ns_d_loss(D(real, c_real), D(fake, c_fake))
                + 10 * consistency_penalty(D(real, c_real), D(flip(real), c_real))
                + 10 * consistency_penalty(D(fake, c_fake), D(flip(fake), c_fake)))
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------- T: HFlip + translation per image

def shifted(x, dy, dx):
    """Hand-made translation: out[i, j] = x[i + dy, j + dx], outside the image the image mirrored at its edge
    with the edge pixel repeated (numpy's symmetric padding by 4, then slice; the official reflection fill)."""
    h, w = x.shape[-2:]
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0)] * (x.ndim - 2) + [(4, 4), (4, 4)], mode="symmetric"))
    return padded[..., 4 + dy:4 + dy + h, 4 + dx:4 + dx + w]


def test_hand_made_shift_of_a_known_image():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)  # rows 1-4, 5-8, 9-12, 13-16
    expected = torch.tensor([[8.0, 8, 7, 6],  # mirrored rows read one row down and one column left:
                             [12.0, 12, 11, 10],  # column -1 is column 0 again,
                             [16.0, 16, 15, 14],
                             [16.0, 16, 15, 14]]).view(1, 1, 4, 4)  # row 4 is row 3 again
    assert torch.equal(shifted(x.flip(-1), 1, -1), expected)


def test_hflip_translation_flips_and_shifts_each_image_by_its_own_draw():
    known = torch.randperm(3 * 32 * 32, generator=torch.Generator().manual_seed(0)).float().view(1, 3, 32, 32) + 1
    candidates = {(f, dy, dx): shifted(known.flip(-1) if f else known, dy, dx)[0]
                  for f, dy, dx in itertools.product((False, True), range(-4, 5), range(-4, 5))}
    out = hflip_translation(known.expand(400, -1, -1, -1), generator=torch.Generator().manual_seed(1))
    drawn = []
    for image in out:
        hits = [key for key, candidate in candidates.items() if torch.equal(image, candidate)]
        assert len(hits) == 1, f"an output is not exactly one flip + shift of the image: {hits}"
        drawn.append(hits[0])
    flips = [f for f, _, _ in drawn]
    dys, dxs = [dy for _, dy, _ in drawn], [dx for _, _, dx in drawn]
    assert 0.4 < sum(flips) / 400 < 0.6  # p = 1/2 per image (4.0 standard deviations)
    assert set(dys) == set(dxs) == set(range(-4, 5))  # up to round(32 / 8) = 4 pixels, both ways
    assert sum(dy == dx for dy, dx in zip(dys, dxs)) < 100  # the axes are drawn independently (1/9 expected)
    assert len(set(drawn)) > 100  # one draw per image, not one per batch


def test_hflip_translation_is_deterministic_under_a_seed():
    x = torch.randn(8, 3, 32, 32)
    a = hflip_translation(x, generator=torch.Generator().manual_seed(5))
    b = hflip_translation(x, generator=torch.Generator().manual_seed(5))
    c = hflip_translation(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = hflip_translation(x)
    torch.manual_seed(5)
    assert torch.equal(d, hflip_translation(x))  # the global RNG, as the trainer seeds it
    assert hflip_translation(torch.zeros(2, 3, 16, 16), ratio=0.25).shape == (2, 3, 16, 16)


# ---------------------------------------------------------------- gradients

def test_the_penalty_trains_d_through_both_sides():
    D, a, b = linear_d()
    real, fake = images(5, 1), images(4, 2)
    loss, _ = cr(transform=flip).d_loss(D, real, fake, identity)
    adversarial = ns_d_loss(D(real), D(fake))
    grad_a, grad_b = torch.autograd.grad(loss - adversarial, (a, b))
    # d/da of 10 mean(<a, x - T(x)>^2) = 20 mean(<a, x - T(x)> (x - T(x))): both sides carry the gradient
    delta = real - flip(real)
    inner = (delta * a).sum(dim=(1, 2, 3)).detach()
    torch.testing.assert_close(grad_a, 20 * (inner.view(-1, 1, 1, 1) * delta).mean(dim=0))
    torch.testing.assert_close(grad_b, torch.zeros_like(b))  # the bias cancels in D(x) - D(T(x))


def test_the_penalty_reaches_every_parameter_of_d_and_none_of_g():
    G, D = tiny_sndcgan()
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    fake = G(torch.randn(4, 8))  # carries G's graph: the method must not pass it on
    for method in (cr(), bcr()):
        torch.manual_seed(0)
        loss, _ = method.d_loss(D, real, fake, identity)
        torch.manual_seed(0)
        penalty = loss - nonsaturating("").d_loss(D, real, fake.detach(), identity)[0]
        grads = torch.autograd.grad(penalty, list(D.parameters()))
        for (name, _), grad in zip(D.named_parameters(), grads):
            assert grad.abs().sum() > 0, f"the {method.name} penalty gives D.{name} no gradient"
        assert not loss.requires_grad or all(
            g is None for g in torch.autograd.grad(loss, list(G.parameters()), allow_unused=True)), \
            f"{method.name}'s D loss reaches G"


def test_d_step_with_bcr_trains_only_d():
    G, D = tiny_sndcgan()
    cfg = GANConfig(steps=1, batch_size=4, r1_interval=0, style_mixing_prob=0.0, mirror=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    g_before = {n: p.detach().clone() for n, p in G.named_parameters()}
    logs = d_step(G, D, bcr(), torch.rand(4, 3, 32, 32) * 2 - 1, opt_d, cfg, 0, 8, CPU, 1)
    assert {"d/loss", "d/cr_real", "d/cr_fake", "d/total"} <= logs.keys()
    assert logs["d/total"] == pytest.approx(logs["d/loss"] + 10 * logs["d/cr_real"] + 10 * logs["d/cr_fake"],
                                            rel=1e-5)
    for name, p in D.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient in the D step"
    for name, p in G.named_parameters():
        assert p.grad is None and torch.equal(p, g_before[name]), f"G.{name} touched by the D step"


# ---------------------------------------------------------------- weight 0 is the baseline

@pytest.mark.parametrize("method", [cr(0.0), bcr(0.0, 0.0), cr(0, loss="hinge")], ids=lambda m: m.name)
def test_zero_weights_give_the_baseline_exactly(method):
    """Same loss, logs, gradients, spectral-norm state and random draws as the baseline, on SNDCGAN."""
    baseline = hinge() if method.name.startswith("hinge") else nonsaturating("")
    G, D = tiny_sndcgan()
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        fake = G(torch.randn(4, 8))  # detached, as the trainer makes them
    results = []
    for m in (method, baseline):
        d = copy.deepcopy(D)
        torch.manual_seed(7)
        loss, logs = m.d_loss(d, real, fake, m.augment)
        loss.backward()
        results.append((loss, logs, [p.grad for p in d.parameters()], d.state_dict(), torch.rand(3)))
    (loss, logs, grads, state, after), (loss0, logs0, grads0, state0, after0) = results
    assert torch.equal(loss, loss0) and logs == logs0 and torch.equal(after, after0)
    assert all(torch.equal(g, g0) for g, g0 in zip(grads, grads0, strict=True))
    assert all(torch.equal(state[k], state0[k]) for k in state0)


def test_only_the_fake_term_with_a_zero_real_weight():
    D, _, _ = linear_d()
    real, fake = images(5, 1), images(4, 2)
    loss, logs = bcr(lambda_real=0.0, transform=flip).d_loss(D, real, fake, identity)
    assert "d/cr_real" not in logs
    torch.testing.assert_close(loss, ns_d_loss(D(real), D(fake)) + 10 * consistency_penalty(D(fake), D(flip(fake))))
