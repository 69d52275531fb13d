"""generative_prior's SSL losses: the Langevin auxiliary view and the discriminator view on SimCLR and BYOL.

References: the suite's SimCLR / BYOL / nt_xent where a term must reduce to them, and naive per-sample loops of
the formulas (NT-Xent, 2 - 2 cos) in float64 elsewhere. The frozen discriminator: no gradient, not trained,
never in training mode, its spectral-norm vectors unchanged by training steps.
"""
import math

import pytest
import torch

from papers.generative_prior.config import DiscUse, LangevinUse, RunSpec
from papers.generative_prior.methods import (MethodConfig, PriorBYOL, PriorSimCLR, build_method, frozen,
                                             langevin_lam)
from shared.data import DeviceLoader
from shared.losses import nt_xent
from shared.methods.byol import BYOL, target_ema
from shared.methods.simclr import SimCLR
from shared.models import resnet18
from shared.models.sngan import SNDCGANDiscriminator, SNResNetDiscriminator
from shared.tracking import NullLogger
from shared.trainers.ssl import SSLConfig, train_ssl

CFG = MethodConfig(embedding_dim=8, projector_hidden=16, predictor_hidden=16, disc_hidden=16)


def views(n, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 32, 32, generator=g) for _ in range(n)]


def method(spec, seed=0, cfg=CFG, disc_width=1 / 16):
    torch.manual_seed(seed)
    encoder = resnet18(width=1 / 16)
    with torch.random.fork_rng(devices=[]):  # as the stage loads D: without shifting the heads' init
        D = SNDCGANDiscriminator(width=disc_width) if spec.disc is not None else None
    return build_method(spec, cfg, encoder, D)


def naive_nt_xent(a, b, tau):
    """NT-Xent from the formula, one anchor at a time (float64): -log softmax of the positive over the 2N - 1 others."""
    z = torch.cat([a, b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        pos = i + n if i < n else i - n
        sims = [float(z[i] @ z[k]) / tau for k in range(2 * n) if k != i]
        denom = sum(math.exp(s) for s in sims)
        total += -(float(z[i] @ z[pos]) / tau - math.log(denom))
    return total / (2 * n)


def naive_byol(p, z):
    """mean over rows of 2 - 2 cos(p_n, z_n), by hand."""
    out = 0.0
    for pn, zn in zip(p.double().tolist(), z.double().tolist()):
        dot = sum(x * y for x, y in zip(pn, zn))
        out += 2 - 2 * dot / (math.sqrt(sum(x * x for x in pn)) * math.sqrt(sum(y * y for y in zn)))
    return out / len(p)


# ---------------------------------------------------------------- idea #1: SimCLR + Langevin view

def test_two_view_simclr_is_the_suites_simclr_exactly():
    cfg = MethodConfig(embedding_dim=8, projector_hidden=16, projector_batch_norm=False)  # the suite's head
    ours = method(RunSpec("simclr"), cfg=cfg)
    torch.manual_seed(0)
    suite = SimCLR(resnet18(width=1 / 16), projection_dim=8, hidden_dim=16, temperature=0.5)
    v = views(2)
    assert torch.equal(ours(v)[0], suite(v)[0])


@pytest.mark.parametrize("batch_norm", [True, False])
def test_at_lambda_0_the_three_view_loss_is_nt_xent_of_the_first_two(batch_norm):
    cfg = MethodConfig(embedding_dim=8, projector_hidden=16, projector_batch_norm=batch_norm)
    m = method(RunSpec("simclr", langevin=LangevinUse(lam=0.0)), cfg=cfg)
    v = views(3)
    z1, z2 = (m.projector(m.encoder(x)) for x in v[:2])
    assert torch.equal(m(v)[0], nt_xent(z1, z2, 0.5))
    assert torch.equal(m(v)[0], m.__class__.forward(method(RunSpec("simclr"), cfg=cfg), v[:2])[0])


def test_the_simclr_langevin_loss_is_the_formula_by_a_naive_loop():
    lam = 0.3  # large, so a wrong auxiliary term shows
    m = method(RunSpec("simclr", langevin=LangevinUse(lam=lam)))
    v = views(3, b=6)
    loss, logs = m(v)
    with torch.no_grad():
        z1, z2, zl = (m.projector(m.encoder(x)) for x in v)  # each view through BN on its own, as the method does
    aux = 0.5 * (naive_nt_xent(z1, zl, 0.5) + naive_nt_xent(z2, zl, 0.5))
    expected = naive_nt_xent(z1, z2, 0.5) + lam * aux
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["loss_langevin"].item() == pytest.approx(aux, rel=1e-5) and logs["loss_langevin"].dim() == 0


def test_the_method_refuses_a_view_count_that_does_not_match_its_run():
    with pytest.raises(ValueError, match="expects 3 views"):
        method(RunSpec("simclr", langevin=LangevinUse()))(views(2))
    with pytest.raises(ValueError, match="expects 2 views"):
        method(RunSpec("byol"))(views(3))


def test_add_to_dataset_is_a_two_view_method_and_both_a_three_view_one():
    assert langevin_lam(RunSpec("simclr", langevin=LangevinUse(mode="add_to_dataset", lam=0.1))) is None
    assert langevin_lam(RunSpec("simclr", langevin=LangevinUse(mode="both", lam=0.1))) == 0.1
    assert method(RunSpec("byol", langevin=LangevinUse(mode="add_to_dataset"))).n_views == 2
    assert method(RunSpec("byol", langevin=LangevinUse(mode="both"))).n_views == 3


# ---------------------------------------------------------------- idea #1: BYOL + Langevin view

def online_and_target(m, v):
    p = [m.predictor(m.projector(m.encoder(x))) for x in v]
    with torch.no_grad():
        t = [m.target_projector(m.target_encoder(x)) for x in v]
    return p, t


def test_two_view_byol_is_the_suites_byol_exactly():
    ours = method(RunSpec("byol"))
    torch.manual_seed(0)
    suite = BYOL(resnet18(width=1 / 16), projector_hidden_size=16, projector_output_size=8, predictor_hidden_size=16)
    v = views(2)
    assert torch.equal(ours(v)[0], suite(v)[0])


def test_the_byol_langevin_loss_is_2_minus_2_cos_by_hand():
    lam = 0.4
    m = method(RunSpec("byol", langevin=LangevinUse(lam=lam)))
    # make the target differ from the online network, so that swapping them in a term would show
    with torch.no_grad():
        for p in m.target_projector.parameters():
            p.add_(0.3 * torch.randn_like(p))
    v = views(3, b=6)
    loss, logs = m(v)
    p, t = online_and_target(m, v)

    def sym(i, j):
        return naive_byol(p[i], t[j]) + naive_byol(p[j], t[i])
    expected = sym(0, 1) + lam * 0.5 * (sym(0, 2) + sym(1, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["loss_ssl"].item() == pytest.approx(sym(0, 1), rel=1e-5)


def test_the_ema_uses_the_cosine_tau_of_the_step_and_the_runs_total_steps():
    cfg = MethodConfig(embedding_dim=8, projector_hidden=16, predictor_hidden=16, base_target_ema=0.9)
    m = method(RunSpec("byol", langevin=LangevinUse()), cfg=cfg)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in m.target_encoder.parameters()]
    online = [p.clone() for p in m.encoder.parameters()]
    m.after_step(3, 10)
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * 3 / 10) + 1) / 2
    for t, b, o in zip(m.target_encoder.parameters(), before, online, strict=True):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o)


def test_the_trainer_hands_after_step_every_step_index_and_the_runs_total(tmp_path):
    m = method(RunSpec("byol", disc=DiscUse(0.1)))
    seen = []
    original = m.after_step
    m.after_step = lambda step, total: (seen.append((step, total)), original(step, total))
    x, y = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8), torch.zeros(20, dtype=torch.int64)
    loader = DeviceLoader(x, y, batch_size=8, drop_last=True)
    train_ssl(SSLConfig(epochs=3, batch_size=8, lr=1e-3), m, lambda xb, idx: [xb.float() / 255] * 2, loader,
              out_dir=tmp_path, logger=NullLogger(), device=torch.device("cpu"), progress=False)
    assert seen == [(k, 6) for k in range(6)]  # 3 epochs x floor(20 / 8) = 6 steps
    assert target_ema(5, 6, 0.996) > target_ema(0, 6, 0.996) == pytest.approx(0.996)


# ---------------------------------------------------------------- idea #2: the discriminator view

def test_the_simclr_disc_loss_is_nt_xent_against_the_head_of_ds_features_of_view_2():
    coeff = 0.5
    m = method(RunSpec("simclr", disc=DiscUse(coeff)))
    v = views(2, b=6)
    loss, logs = m(v)
    D = m.disc_view.discriminator
    with torch.no_grad():
        z1, z2 = (m.projector(m.encoder(x)) for x in v)
        hd = m.disc_view.head(D.features(v[1] * 2 - 1))
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, 0.5) + coeff * naive_nt_xent(z1, hd, 0.5), rel=1e-5)


def test_the_byol_disc_loss_is_the_asymmetric_form_by_hand():
    coeff = 0.7
    m = method(RunSpec("byol", disc=DiscUse(coeff)))
    with torch.no_grad():
        for p in m.target_projector.parameters():
            p.add_(0.3 * torch.randn_like(p))
    v = views(2, b=6)
    loss, logs = m(v)
    p, t = online_and_target(m, v)
    with torch.no_grad():
        hd = m.disc_view.head(m.disc_view.discriminator.features(v[1] * 2 - 1))
        qd = m.disc_predictor(hd)
    main = naive_byol(p[0], t[1]) + naive_byol(p[1], t[0])
    term = 0.5 * (naive_byol(p[0], hd) + naive_byol(qd, t[0]))  # q(z1) -> sg(h_D), q_D(h_D) -> sg(zbar1)
    assert loss.item() == pytest.approx(main + coeff * term, rel=1e-5)
    assert logs["loss_disc"].item() == pytest.approx(term, rel=1e-5)


def trainable_ids(m):
    return {id(p) for p in m.trainable_parameters()}


@pytest.mark.parametrize("name", ["simclr", "byol"])
@pytest.mark.parametrize("head", ["trainable", "fixed_random"])
def test_gradients_reach_exactly_the_parameters_that_learn(name, head):
    m = method(RunSpec(name, disc=DiscUse(0.5, head=head)))
    m.train()
    m(views(2))[0].backward()
    D = m.disc_view.discriminator
    frozen_params = {id(p) for p in D.parameters()}
    if name == "byol":
        frozen_params |= {id(p) for mod in (m.target_encoder, m.target_projector) for p in mod.parameters()}
    if head == "fixed_random":
        frozen_params |= {id(p) for p in m.disc_view.head.parameters()}
    assert frozen_params.isdisjoint(trainable_ids(m))
    for pname, p in m.named_parameters():
        if id(p) in frozen_params:
            assert not p.requires_grad and p.grad is None, pname
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    learners = ["disc_view.head"] if head == "trainable" else []
    learners += ["disc_predictor"] if name == "byol" else []
    for prefix in learners:  # h_D and q_D learn
        assert any(n.startswith(prefix) for n, p in m.named_parameters() if id(p) in trainable_ids(m)), prefix
    assert not any(n.startswith("disc_view.discriminator") for n, p in m.named_parameters()
                   if id(p) in trainable_ids(m))


def discriminator_state(D):
    return {k: v.clone() for k, v in D.state_dict().items()}


@pytest.mark.parametrize("name", ["simclr", "byol"])
@pytest.mark.parametrize("D_cls", [SNDCGANDiscriminator, SNResNetDiscriminator])
def test_the_frozen_d_stays_eval_and_unchanged_through_training_steps(name, D_cls):
    torch.manual_seed(0)
    D = D_cls(width=1 / 16)
    D.train()  # handed over in training mode on purpose: the method must freeze it
    m = build_method(RunSpec(name, disc=DiscUse(0.5)), CFG, resnet18(width=1 / 16), D)
    before = discriminator_state(D)
    assert any(k.endswith("_u") for k in before)  # the power-iteration vectors are in the state
    assert not D.training and not any(p.requires_grad for p in D.parameters())
    m.train()
    assert m.training and m.disc_view.head.training and not D.training
    assert all(not sub.training for sub in D.modules())
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.5)
    for step in range(3):
        loss, _ = m(views(2, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(step, 3)
    after = discriminator_state(D)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the control: the same forwards in training mode do move the u vectors (what the freezing prevents)
    D.train()
    with torch.no_grad():
        D.features(views(1)[0] * 2 - 1)
    assert any(not torch.equal(before[k], v) for k, v in D.state_dict().items() if k.endswith("_u"))


def test_the_fixed_random_head_is_a_fixed_linear_map_and_cannot_collapse_by_training():
    m = method(RunSpec("byol", disc=DiscUse(0.5, head="fixed_random")))
    head = m.disc_view.head
    assert isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad
    w = head.weight.clone()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.5)
    loss, _ = m(views(2))
    loss.backward()
    opt.step()
    assert torch.equal(head.weight, w)
    assert head.weight.std().item() == pytest.approx(1 / math.sqrt(head.in_features), rel=0.1)


def test_the_state_dict_holds_the_heads_and_the_frozen_d_and_reloads_exactly():
    a = method(RunSpec("byol", disc=DiscUse(0.5)), seed=0)
    b = method(RunSpec("byol", disc=DiscUse(0.5)), seed=1)
    b.load_state_dict(a.state_dict())
    v = views(2)
    a.eval(), b.eval()
    assert torch.equal(a(v)[0], b(v)[0])


def test_a_run_and_its_discriminator_must_agree():
    with pytest.raises(ValueError, match="no discriminator was given"):
        build_method(RunSpec("simclr", disc=DiscUse()), CFG, resnet18(width=1 / 16))
    with pytest.raises(ValueError, match="without a discriminator view"):
        build_method(RunSpec("simclr"), CFG, resnet18(width=1 / 16), frozen(SNDCGANDiscriminator(width=1 / 16)))
    with pytest.raises(ValueError, match="features"):
        build_method(RunSpec("byol", disc=DiscUse()), CFG, resnet18(width=1 / 16), torch.nn.Linear(3, 3))


def test_priors_do_not_change_the_initial_encoder_and_projector_under_one_seed():
    base = method(RunSpec("byol"))
    disc = method(RunSpec("byol", disc=DiscUse(0.1)))
    langevin = method(RunSpec("byol", langevin=LangevinUse()))
    for other in (disc, langevin):
        for (n, p), (_, q) in zip(base.named_parameters(), other.named_parameters()):
            if n.startswith(("encoder", "projector", "predictor")):
                assert torch.equal(p, q), n
    assert isinstance(disc, PriorBYOL) and isinstance(method(RunSpec("simclr")), PriorSimCLR)
