"""ContraD: the loss terms against naive loops, the heads, each loss term's gradients, and one trainer step."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from papers.contrad.losses import con_neg, con_pos, dis_loss
from papers.contrad.method import (ContraDDiscriminator, ContraDHeads, contrad, contrad_augment, contrad_d_loss,
                                   contrad_views, simclr_d_loss, simclr_only)
from shared.data import DeviceLoader
from shared.gan_losses import identity
from shared.models.sngan import sngan
from shared.tracking import NullLogger
from shared.trainers.gan import GANConfig, d_step, g_step, train_gan

CPU = torch.device("cpu")


# ---------------------------------------------------------------- naive references, from the formulas

def _unit(rows):
    return [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]


def _sim(a, b, tau):
    return sum(x * y for x, y in zip(a, b)) / tau


def naive_con_pos(z1, z2, tau):
    z, n = _unit(z1 + z2), len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(_sim(z[i], z[k], tau)) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(_sim(z[i], z[positive], tau)) / denominator)
    return total / (2 * n)


def naive_con_neg(real1, real2, fake, tau):
    z, n = _unit(real1 + real2 + fake), len(fake)
    total = 0.0
    for i in range(2 * n, 3 * n):  # fake anchors only
        denominator = sum(math.exp(_sim(z[i], z[k], tau)) for k in range(3 * n) if k != i)
        terms = [math.log(math.exp(_sim(z[i], z[j], tau)) / denominator) for j in range(2 * n, 3 * n) if j != i]
        total += -sum(terms) / (n - 1)
    return total / n


def naive_dis(real, fake):
    return (sum(math.log(1 + math.exp(-r)) for r in real) / len(real)
            + sum(math.log(1 + math.exp(f)) for f in fake) / len(fake))


def _rows(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * 3  # not unit-norm: the losses normalise


# ---------------------------------------------------------------- the loss terms

@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_con_pos_matches_a_naive_loop(n, tau):
    z1, z2 = _rows(n, 5, 0), _rows(n, 5, 1)
    assert con_pos(z1, z2, tau).item() == pytest.approx(naive_con_pos(z1.tolist(), z2.tolist(), tau), rel=1e-9)


@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_con_neg_matches_a_naive_loop(n, tau):
    r1, r2, f = _rows(n, 5, 2), _rows(n, 5, 3), _rows(n, 5, 4)
    expected = naive_con_neg(r1.tolist(), r2.tolist(), f.tolist(), tau)
    loss = con_neg(r1, r2, f, tau)
    assert loss.shape == () and loss.item() == pytest.approx(expected, rel=1e-9)


def test_con_neg_reals_are_only_negatives():
    # Fakes all equal and reals orthogonal to them: every fake's softmax mass sits on the
    # other fakes, so the loss is its floor log(N - 1); the reals' mutual similarity is irrelevant.
    n, tau = 4, 0.05
    fake = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    real1 = torch.tensor([[0.0, 1.0, 0.0]]).repeat(n, 1)
    real2 = torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    assert con_neg(real1, real2, fake, tau).item() == pytest.approx(math.log(n - 1), abs=1e-6)
    assert con_neg(real1, real1, fake, tau).item() == pytest.approx(math.log(n - 1), abs=1e-6)


def test_dis_loss_matches_the_formula():
    real, fake = [0.3, -1.2, 2.0], [-0.5, 0.8, 4.0]
    assert dis_loss(torch.tensor(real, dtype=torch.float64),
                    torch.tensor(fake, dtype=torch.float64)).item() == pytest.approx(naive_dis(real, fake), rel=1e-12)


def test_shapes_are_asserted_and_half_precision_is_promoted():
    z = torch.randn(4, 8)
    with pytest.raises(AssertionError, match="same shape"):
        con_pos(z, torch.randn(3, 8))
    with pytest.raises(AssertionError, match="one shape"):
        con_neg(z, z, torch.randn(4, 7))
    with pytest.raises(AssertionError, match="at least 2 fakes"):
        con_neg(z[:1], z[:1], z[:1])
    with pytest.raises(AssertionError, match="1-D"):
        dis_loss(torch.randn(4, 1), torch.randn(4))
    assert con_neg(z.bfloat16(), z.bfloat16(), z.bfloat16()).dtype == torch.float32
    assert con_pos(z.bfloat16(), z.bfloat16()).dtype == torch.float32


# ---------------------------------------------------------------- heads and discriminator

def tiny_contrad(seed=0):
    torch.manual_seed(seed)
    G, backbone = sngan("sndcgan", width=1 / 16, linear_head=False)
    return G, ContraDDiscriminator(backbone, proj_dim=8, score_hidden=16, init_std=0.02)


def test_heads_layout():
    heads = ContraDHeads(24)  # defaults: proj_dim 128, hidden 512 for every head, SN on
    for head, out in ((heads.proj_pos, 128), (heads.proj_neg, 128), (heads.score, 1)):
        assert len(head) == 3 and isinstance(head[0], nn.Linear) and isinstance(head[2], nn.Linear)
        assert (head[0].in_features, head[0].out_features, head[2].out_features) == (24, 512, out)
        assert isinstance(head[1], nn.LeakyReLU) and head[1].negative_slope == 0.1
        assert all(torch.nn.utils.parametrize.is_parametrized(head[i], "weight") for i in (0, 2))
    plain = ContraDHeads(24, score_hidden=1024, proj_hidden=64, spectral_norm=False)
    assert plain.score[0].out_features == 1024 and plain.proj_pos[0].out_features == 64
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in plain.modules())


def test_dis_loss_trains_only_the_score_head():
    _, D = tiny_contrad()
    out = D.forward_heads(torch.rand(12, 3, 32, 32) * 2 - 1)  # [real 1; real 2; fake], N = 4
    dis_loss(out.score[:4], out.score[8:]).backward()
    for name, p in D.named_parameters():
        if name.startswith("heads.score."):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient from L_dis"
        else:
            assert p.grad is None, f"L_dis reached {name} through the stop-gradient"


def test_full_d_loss_gives_every_d_parameter_a_gradient_and_none_to_g():
    G, D = tiny_contrad()
    method = contrad()
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    fake = G(torch.randn(4, G.z_dim))  # carries G's graph: the D loss must detach it
    loss, logs = method.d_loss(D, real, fake, method.augment)
    assert set(logs) == {"d/loss", "d/con_pos", "d/con_neg", "d/dis", "d/logits_real", "d/logits_fake"}
    assert logs["d/loss"] == pytest.approx(logs["d/con_pos"] + logs["d/con_neg"] + logs["d/dis"], rel=1e-5)
    loss.backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient from the D loss"
    assert all(p.grad is None for p in G.parameters())


def test_d_loss_layout_real_real_fake_and_lambda_a():
    _, D = tiny_contrad()
    D.eval()  # no power-iteration update between the two passes below
    n = 3
    real, fake = torch.rand(n, 3, 32, 32) * 2 - 1, torch.rand(n, 3, 32, 32) * 2 - 1
    ramp = torch.linspace(0.5, 1.0, 3 * n).view(-1, 1, 1, 1)  # a deterministic "augmentation" unique per row
    augment = lambda x: x * ramp  # noqa: E731
    with torch.no_grad():
        loss, logs = contrad_d_loss(D, real, fake, augment, temperature=0.2, lambda_a=0.5)
        out = D.forward_heads(torch.cat([real, real, fake]) * ramp)
        expected = (con_pos(out.z_pos[:n], out.z_pos[n:2 * n], 0.2)
                    + 0.5 * con_neg(out.z_neg[:n], out.z_neg[n:2 * n], out.z_neg[2 * n:], 0.2)
                    + dis_loss(out.score[:n], out.score[2 * n:]))  # d_real from the first real view
    torch.testing.assert_close(loss, expected)
    assert logs["d/logits_real"] == pytest.approx(out.score[:n].mean().item(), rel=1e-5)


def test_g_loss_flows_through_the_features_of_d():
    G, D = tiny_contrad()
    method = contrad()
    loss, logs = method.g_loss(D, G(torch.randn(4, G.z_dim)), method.augment)
    assert set(logs) == {"g/loss"}
    loss.backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"G.{name} got no gradient"
    for name, p in D.named_parameters():
        if name.startswith(("backbone.", "heads.score.")):  # features are not detached in the G step
            assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient in the G step"
        else:  # the projection heads play no part in L_G
            assert p.grad is None, f"D.{name} is not in L_G's graph"
    with torch.no_grad():  # L_G = softplus(-h_d(D(x))) on the whole network
        x = torch.rand(4, 3, 32, 32) * 2 - 1
        D.eval()
        torch.testing.assert_close(method.g_loss(D, x, identity)[0], F.softplus(-D(x)).mean())


def test_one_d_step_and_one_g_step_in_the_gan_trainer():
    G, D = tiny_contrad()
    method = contrad()
    cfg = GANConfig(batch_size=4, r1_gamma=0.0, style_mixing_prob=0.0)  # ContraD's SNDCGAN runs: no R1
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=1e-3), torch.optim.Adam(D.parameters(), lr=1e-3)
    g_before = {n: p.detach().clone() for n, p in G.named_parameters()}
    d_before = {n: p.detach().clone() for n, p in D.named_parameters()}

    logs = d_step(G, D, method, torch.rand(4, 3, 32, 32) * 2 - 1, opt_d, cfg, 0, G.z_dim, CPU, 1)
    assert {"d/con_pos", "d/con_neg", "d/dis", "d/total"} <= logs.keys()
    assert all(math.isfinite(v) for v in logs.values())
    for name, p in D.named_parameters():
        assert not torch.equal(p, d_before[name]), f"D.{name} did not move in the D step"
    for name, p in G.named_parameters():
        assert p.grad is None and torch.equal(p, g_before[name]), f"G.{name} touched by the D step"

    d_after = {n: p.detach().clone() for n, p in D.named_parameters()}
    opt_d.zero_grad(set_to_none=True)
    logs = g_step(G, D, method, opt_g, cfg, 4, G.z_dim, CPU, 1)
    assert math.isfinite(logs["g/total"])
    for name, p in G.named_parameters():
        assert not torch.equal(p, g_before[name]), f"G.{name} did not move in the G step"
    for name, p in D.named_parameters():  # the trainer freezes D in its G step
        assert p.grad is None and torch.equal(p, d_after[name]), f"D.{name} touched by the G step"


# ---------------------------------------------------------------- augmentation and arguments

def test_contrad_views_are_the_official_recipe_and_stay_in_range():
    cfg = contrad_views()
    assert (cfg.crop_scale, cfg.crop_ratio, cfg.flip_p) == ((0.2, 1.0), (0.75, 4 / 3), 0.5)
    assert (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p) == (0.4, 0.4, 0.4, 0.1, 0.8)
    assert (cfg.grayscale_p, cfg.blur_p, cfg.solarize_p) == (0.2, 0.0, 0.0)
    x = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = contrad_augment(x, cfg)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    y.sum().backward()  # differentiable: the G step needs gradients through it
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_contrad_rejects_a_plain_discriminator_and_bad_arguments():
    G, D = sngan("sndcgan", width=1 / 16)
    method = contrad()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with pytest.raises(TypeError, match="ContraDDiscriminator"):
        method.d_loss(D, x, x, identity)
    with pytest.raises(TypeError, match="feature_dim"):
        ContraDDiscriminator(G)
    with pytest.raises(ValueError, match="temperature"):
        contrad(temperature=0.0)
    with pytest.raises(ValueError, match="lambda_a"):
        contrad(lambda_a=-1.0)


# ---------------------------------------------------------------- the SimCLR-only reference (Table 3)

def test_simclr_only_trains_backbone_and_h_r_only_and_is_l_con_plus():
    _, D = tiny_contrad()
    method = simclr_only(temperature=0.2)
    assert method.g_loss is None and method.name == "simclr"
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    loss, logs = method.d_loss(D, real, torch.full_like(real, float("nan")), method.augment)  # fakes unused
    loss.backward()
    for name, p in D.named_parameters():
        if name.startswith(("backbone.", "heads.proj_pos.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient from L_con+"
        else:
            assert p.grad is None, f"L_con+ alone reached D.{name}"
    D.eval()
    ramp = torch.linspace(0.5, 1.0, 8).view(-1, 1, 1, 1)
    with torch.no_grad():
        loss, _ = simclr_d_loss(D, real, real, lambda x: x * ramp, temperature=0.2)
        z = D.forward_heads(torch.cat([real, real]) * ramp).z_pos
        torch.testing.assert_close(loss, con_pos(z[:4], z[4:], 0.2))


def test_a_d_only_method_never_moves_g_in_the_trainer(tmp_path):
    G, D = tiny_contrad()
    g_before = [p.detach().clone() for p in G.parameters()]
    d_before = [p.detach().clone() for p in D.parameters()]
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.zeros(8, dtype=torch.long), batch_size=4, drop_last=True, seed=0)
    cfg = GANConfig(steps=2, batch_size=4, r1_gamma=0.0, style_mixing_prob=0.0, ema_kimg=0.0, ema_start_kimg=0.0,
                    warmup_steps=2, log_every=1, sample_every=2, checkpoint_every=2, eval_every=2, n_sample_grid=4)
    train_gan(cfg, G, D, simclr_only(), loader, out_dir=tmp_path, logger=NullLogger(), device=CPU, z_dim=G.z_dim,
              progress=False)
    assert all(torch.equal(p, q) for p, q in zip(G.parameters(), g_before))
    assert any(not torch.equal(p, q) for p, q in zip(D.parameters(), d_before))
