"""The two-player trainer: frozen F, gradients per player, simultaneous vs alternating updates by hand, resume."""
import copy

import pytest
import torch
import torch.nn.functional as Fn
from torch import nn

from shared.data import DeviceLoader
from shared.tracking import NullLogger
from shared.trainers.adversarial import (AdversarialConfig, AdversarialMethod, adversarial_step, freeze,
                                         train_adversarial)
from shared.trainers.ssl import NonFiniteLossError

CPU = torch.device("cpu")
SIDE, Z_DIM, FEAT = 6, 3, 5  # 1 x 6 x 6 images, z in [0, 1]^3, F: 5 features


# ---------------------------------------------------------------- a tiny augmentation-generator game

class Augmenter(nn.Module):
    """G_A(x, z): an MLP on [x, z] -> an image in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(SIDE * SIDE + Z_DIM, 16), nn.ReLU(), nn.Linear(16, SIDE * SIDE))

    def forward(self, x, z):
        return torch.sigmoid(self.net(torch.cat([x.flatten(1), z], 1))).view_as(x)


class EliminatorPredictor(nn.Module):
    """G_E and G_L sharing a trunk: x -> (G_E(x) an image, G_L(x) a latent in [0, 1])."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(SIDE * SIDE, 16), nn.ReLU())
        self.eliminate = nn.Linear(16, SIDE * SIDE)
        self.latent = nn.Linear(16, Z_DIM)

    def forward(self, x):
        h = self.trunk(x.flatten(1))
        return torch.sigmoid(self.eliminate(h)).view_as(x), torch.sigmoid(self.latent(h))


def feature_net(seed=0):
    """F: conv + batch norm with non-trivial running statistics, so train and eval modes differ."""
    torch.manual_seed(seed)
    F = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * SIDE * SIDE, FEAT))
    F[1].running_mean.uniform_(-0.5, 0.5)
    F[1].running_var.uniform_(0.5, 2.0)
    return F


def critic():
    return nn.Sequential(nn.Linear(FEAT, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))


def players(seed=0):
    torch.manual_seed(seed)
    generators = {"G_A": Augmenter(), "G_EL": EliminatorPredictor()}
    critics = {"D_f": critic(), "D_p": critic()}
    return generators, critics


def bce(logits, real: bool):
    logits = logits.squeeze(1)
    return Fn.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def forward(generators, batch):
    x_p = batch["p"][0].float() / 255
    x_f = batch["f"][0].float() / 255
    z = torch.rand(x_p.shape[0], Z_DIM)
    return {"x_p": x_p, "x_f": x_f, "z": z, "augmented": generators["G_A"](x_p, z),
            "eliminated": generators["G_EL"](x_f)[0]}


def d_f_loss(D, F, out):  # eq. (8): real = fine-tuning images, fake = augmented pre-training images
    loss = bce(D(F(out["x_f"])), True) + bce(D(F(out["augmented"])), False)
    return loss, {"D_f/loss": loss.item()}


def d_p_loss(D, F, out):  # eq. (9): real = pre-training images, fake = eliminated fine-tuning images
    loss = bce(D(F(out["x_p"])), True) + bce(D(F(out["eliminated"])), False)
    return loss, {"D_p/loss": loss.item()}


def generator_loss(generators, critics, F, out, lam=10.0):  # eqs. (10)-(13)
    G_A, G_EL = generators["G_A"], generators["G_EL"]
    adversarial = bce(critics["D_f"](F(out["augmented"])), True) + bce(critics["D_p"](F(out["eliminated"])), True)
    e_f, l_f = G_EL(out["x_f"])
    e_a, l_a = G_EL(out["augmented"])
    cycle = ((G_A(e_f, l_f) - out["x_f"]).abs().mean() + (e_a - out["x_p"]).abs().mean()
             + (l_a - out["z"]).abs().mean())
    loss = adversarial + lam * cycle
    return loss, {"g/adversarial": adversarial.item(), "g/cycle": cycle.item()}


METHOD = AdversarialMethod(forward=forward, critic_losses={"D_f": d_f_loss, "D_p": d_p_loss},
                           generator_loss=generator_loss, name="auggen")


def loaders(seed=0):
    """Two loaders of (x, y, index) batches with different lengths, so their epochs drift apart."""
    g = torch.Generator().manual_seed(seed)
    x_p = torch.randint(0, 256, (12, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    x_f = torch.randint(0, 256, (8, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    return {"p": DeviceLoader(x_p, torch.zeros(12, dtype=torch.long), batch_size=4, drop_last=True, seed=seed),
            "f": DeviceLoader(x_f, torch.zeros(8, dtype=torch.long), batch_size=4, drop_last=True, seed=seed + 1)}


def one_batch():
    return {name: next(iter(loader)) for name, loader in loaders().items()}


def sgd(modules, lr):
    return {name: torch.optim.SGD(m.parameters(), lr=lr) for name, m in modules.items()}


def tiny_cfg(**kw):
    return AdversarialConfig(**{**dict(steps=3, log_every=1, checkpoint_every=2, eval_every=2), **kw})


# ---------------------------------------------------------------- the feature network and the gradients

def test_loaders_yield_index_triples():
    x, y, index = one_batch()["p"]
    assert x.shape == (4, 1, SIDE, SIDE) and y.shape == index.shape == (4,)


def test_frozen_f_gets_no_gradient_stays_in_eval_mode_and_keeps_its_statistics(tmp_path):
    generators, critics = players()
    F = feature_net().train()  # handed over in train mode: the trainer freezes it
    params = {n: p.detach().clone() for n, p in F.named_parameters()}
    buffers = {n: b.clone() for n, b in F.named_buffers()}
    train_adversarial(tiny_cfg(), generators, critics, F, METHOD, loaders(), out_dir=tmp_path, logger=NullLogger(),
                      device=CPU, progress=False)
    assert not any(m.training for m in F.modules())
    for n, p in F.named_parameters():
        assert not p.requires_grad and p.grad is None and torch.equal(p, params[n]), f"F.{n} was trained"
    for n, b in F.named_buffers():
        assert torch.equal(b, buffers[n]), f"F's buffer {n} changed (batch-norm statistics must stay fixed)"


def test_generator_gradients_reach_every_generator_parameter_through_f_and_critics_get_only_their_own():
    generators, critics = players()
    F = freeze(feature_net())
    batch = one_batch()
    start_generators, start = copy.deepcopy(generators), copy.deepcopy(critics)
    torch.manual_seed(5)
    adversarial_step(generators, critics, F, METHOD, batch, sgd(generators, 0.1), sgd(critics, 0.1),
                     simultaneous=True, device=CPU, step=1)
    for gname, module in generators.items():
        for n, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{gname}.{n} got no gradient"
    # each critic's .grad is the gradient of its own loss at the start parameters, nothing from the generator loss
    torch.manual_seed(5)
    out = {k: v.detach() for k, v in forward(start_generators, batch).items()}
    for name, loss_fn in METHOD.critic_losses.items():
        loss, _ = loss_fn(start[name], F, out)
        expected = torch.autograd.grad(loss, list(start[name].parameters()))
        for (n, p), g in zip(critics[name].named_parameters(), expected):
            torch.testing.assert_close(p.grad, g, msg=f"{name}.{n}: .grad is not its own loss's gradient")
    assert all(p.requires_grad for c in critics.values() for p in c.parameters())  # unfrozen again


def test_critics_take_no_gradient_from_the_generator_loss_even_though_it_depends_on_them():
    generators, critics = players()
    F = freeze(feature_net())
    torch.manual_seed(0)
    out = forward(generators, one_batch())
    loss, _ = generator_loss(generators, critics, F, out)
    # the generator loss does depend on the critics: a trainer that let it backpropagate would move them
    grads = torch.autograd.grad(loss, [p for c in critics.values() for p in c.parameters()])
    assert all(g.abs().sum() > 0 for g in grads)


def _manual_step(generators, critics, F, batch, lr, simultaneous, seed):
    """Algorithm 1 (simultaneous) or D-then-G (alternating) written out with autograd.grad and plain SGD."""
    torch.manual_seed(seed)
    out = forward(generators, batch)
    detached = {k: v.detach() for k, v in out.items()}
    critic_grads = {}
    for name, loss_fn in METHOD.critic_losses.items():
        loss, _ = loss_fn(critics[name], F, detached)
        critic_grads[name] = torch.autograd.grad(loss, list(critics[name].parameters()))
    stepped = copy.deepcopy(critics)
    with torch.no_grad():
        for name, grads in critic_grads.items():
            for p, g in zip(stepped[name].parameters(), grads):
                p -= lr * g
    # simultaneous: the generator gradient at the critics' start parameters; alternating: at the stepped ones
    seen = critics if simultaneous else stepped
    g_params = [p for m in generators.values() for p in m.parameters()]
    loss, _ = generator_loss(generators, seen, F, out)
    g_grads = torch.autograd.grad(loss, g_params)
    new_generators = [(p - lr * g).detach() for p, g in zip(g_params, g_grads)]
    return new_generators, [p.detach() for c in stepped.values() for p in c.parameters()]


@pytest.mark.parametrize("simultaneous", [True, False])
def test_one_step_equals_the_hand_computed_sgd_step(simultaneous):
    generators, critics = players()
    F = freeze(feature_net())
    batch = one_batch()
    lr = 0.5
    expected_g, expected_c = _manual_step(copy.deepcopy(generators), copy.deepcopy(critics), F, batch, lr,
                                          simultaneous, seed=3)
    torch.manual_seed(3)
    adversarial_step(generators, critics, F, METHOD, batch, sgd(generators, lr), sgd(critics, lr),
                     simultaneous=simultaneous, device=CPU, step=1)
    got_g = [p for m in generators.values() for p in m.parameters()]
    got_c = [p for c in critics.values() for p in c.parameters()]
    for got, want in zip(got_g + got_c, expected_g + expected_c, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_simultaneous_and_alternating_differ_in_the_generator_step_only():
    results = {}
    for simultaneous in (True, False):
        generators, critics = players()
        torch.manual_seed(3)
        adversarial_step(generators, critics, freeze(feature_net()), METHOD, one_batch(), sgd(generators, 0.5),
                         sgd(critics, 0.5), simultaneous=simultaneous, device=CPU, step=1)
        results[simultaneous] = generators, critics
    (g_sim, c_sim), (g_alt, c_alt) = results[True], results[False]
    for name in c_sim:  # the critics' own steps are the same
        for p, q in zip(c_sim[name].parameters(), c_alt[name].parameters()):
            torch.testing.assert_close(p, q)
    assert not all(torch.allclose(p, q) for p, q in zip(g_sim["G_A"].parameters(), g_alt["G_A"].parameters()))


# ---------------------------------------------------------------- the loop

def test_train_logs_evaluates_without_touching_the_rng_and_checkpoints(tmp_path):
    calls = []

    def evaluate(generators, step):
        calls.append((step, generators["G_A"].training))
        torch.rand(7)  # must not disturb training's RNG
        return {"l1": float(step)}

    def run(out_dir, evaluate):
        generators, critics = players()
        logger = NullLogger()
        result = train_adversarial(tiny_cfg(), generators, critics, feature_net(), METHOD, loaders(),
                                   out_dir=out_dir, logger=logger, device=CPU, evaluate=evaluate, progress=False)
        return result, generators, logger

    result, with_eval, logger = run(tmp_path / "a", evaluate)
    _, without_eval, _ = run(tmp_path / "b", None)
    assert calls == [(2, False), (3, False)] and result.steps == 3
    assert result.history == [{"step": 2, "l1": 2.0}, {"step": 3, "l1": 3.0}]
    assert [s for s, _ in logger.metric_history("train/g/total")] == [1, 2, 3]
    assert {"train/D_f/total", "train/D_p/total", "train/D_f/loss", "train/g/cycle"} <= set(logger.metrics[0][1])
    assert all(m.training for m in with_eval.values())  # back in train mode after evaluating
    for name in with_eval:
        for p, q in zip(with_eval[name].parameters(), without_eval[name].parameters()):
            assert torch.equal(p, q), "evaluation changed training"
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and set(state["generators"]) == {"G_A", "G_EL"} and set(state["opt_c"]) == {"D_f", "D_p"}
    assert state["positions"] == {"p": (0, 3), "f": (1, 1)}  # 3 batches from each: p has 3 an epoch, f 2


@pytest.mark.parametrize("simultaneous", [True, False])
def test_resumed_training_is_bit_identical(tmp_path, simultaneous):
    def run(out_dir, steps, seed=0):
        generators, critics = players(seed)
        cfg = tiny_cfg(steps=steps, checkpoint_every=2, simultaneous=simultaneous)
        train_adversarial(cfg, generators, critics, feature_net(), METHOD, loaders(), out_dir=out_dir,
                          logger=NullLogger(), device=CPU, progress=False)
        return {**generators, **critics}

    straight = run(tmp_path / "a", 5)  # 5 steps over loaders of 3 and 2 batches an epoch
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 5, seed=1)  # rebuilt from another init: the resume must overwrite it all
    for name in straight:
        for (n, p), q in zip(straight[name].state_dict().items(), resumed[name].state_dict().values()):
            assert torch.equal(p, q), f"{name}.{n} differs after resuming"


def test_non_finite_losses_name_the_loss_and_the_step(tmp_path):
    calls = []

    def nan_after_two(D, F, out):
        calls.append(1)
        loss, logs = d_p_loss(D, F, out)
        return loss * (float("nan") if len(calls) == 3 else 1.0), logs

    method = AdversarialMethod(forward, {"D_f": d_f_loss, "D_p": nan_after_two}, generator_loss, "nan")
    generators, critics = players()
    with pytest.raises(NonFiniteLossError, match="non-finite critic D_p loss nan at step 3"):
        train_adversarial(tiny_cfg(steps=4), generators, critics, feature_net(), method, loaders(),
                          out_dir=tmp_path, logger=NullLogger(), device=CPU, progress=False)


def test_bad_players_and_config_fail_loudly(tmp_path):
    generators, critics = players()
    F = feature_net()
    kw = dict(out_dir=tmp_path, logger=NullLogger(), device=CPU, progress=False)
    with pytest.raises(ValueError, match="one critic loss per critic"):
        train_adversarial(tiny_cfg(), generators, {"D_f": critics["D_f"]}, F, METHOD, loaders(), **kw)
    with pytest.raises(ValueError, match="shares parameters with F"):
        shared = {**generators, "G_F": nn.Sequential(F[0])}
        train_adversarial(tiny_cfg(), shared, critics, F, METHOD, loaders(), **kw)
    with pytest.raises(ValueError, match="optimizer"):
        AdversarialConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="betas"):
        AdversarialConfig(betas=(0.5, 1.0))
