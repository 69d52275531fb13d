"""The generator game: losses vs their equations, who gets which gradient, the simultaneous step, F frozen,
generators.pt / latents.pt, and the `game` stage end to end on tiny synthetic data."""
import copy
import json
import math

import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from papers.augmentation_generator import data as ag_data
from papers.augmentation_generator.encoder import save_encoder
from papers.augmentation_generator import game
from papers.augmentation_generator.config import GameConfig
from papers.augmentation_generator.losses import (augmentation_game, balanced_accuracy, critic_loss,
                                                  cycle_losses, generator_objective, generator_terms,
                                                  identity_losses, nonsaturating_loss)
from papers.augmentation_generator.models import (SKIP_EPS, Augmenter, Critic, EliminatorPredictor, GeneratorSpec,
                                                  build_players, load_generators, load_latents, save_generators,
                                                  save_latents)
from shared.data import DeviceLoader
from shared.models import resnet18
from shared.tracking import NullLogger
from shared.trainers.adversarial import AdversarialConfig, adversarial_step, freeze, train_adversarial

CPU = torch.device("cpu")
Z_DIM = 3


def tiny_cfg(**kw) -> GameConfig:
    return GameConfig(**{**dict(hidden=16, z_dim=Z_DIM, critic_hidden=8, batch_size=4, grid_images=2, grid_z=3,
                                eval_images=4, check_images=8), **kw})


def tiny_f(seed=0) -> nn.Module:
    """A width-1/16 one-channel CIFAR-stem ResNet-18 with non-trivial BN statistics (train and eval differ)."""
    torch.manual_seed(seed)
    F = resnet18(width=1 / 16, in_channels=1)
    for m in F.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return F


def players(seed=0, feature_dim=32):
    torch.manual_seed(seed)
    return build_players(tiny_cfg(), feature_dim)


def images(n, seed):
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def loaders(n_p=12, n_f=8, batch=4):
    return {"p": DeviceLoader(images(n_p, 1), torch.zeros(n_p), batch_size=batch, drop_last=True, seed=0),
            "f": DeviceLoader(images(n_f, 2), torch.zeros(n_f), batch_size=batch, drop_last=True, seed=1)}


def one_batch():
    return {name: next(iter(loader)) for name, loader in loaders().items()}


def cached_features(F, loaders_):
    with torch.no_grad():
        return {name: F(loader.x.float() / 255) for name, loader in loaders_.items()}


# ---------------------------------------------------------------- losses vs their equations

def test_losses_match_the_equations_written_out():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(7, generator=g, dtype=torch.float64) * 3
    fake = torch.randn(5, generator=g, dtype=torch.float64) * 3
    D = lambda l: 1 / (1 + torch.exp(-l))  # noqa: E731
    # (8) / (9): -E log D(F(real)) - E log(1 - D(F(fake)))
    want = -torch.log(D(real)).mean() - torch.log(1 - D(fake)).mean()
    torch.testing.assert_close(critic_loss(real, fake).double(), want, rtol=1e-6, atol=1e-6)
    # (11) / (12): non-saturating, -E log D(F(fake))
    torch.testing.assert_close(nonsaturating_loss(fake).double(), -torch.log(D(fake)).mean(), rtol=1e-6, atol=1e-6)
    # (13): three L1 terms, each the mean absolute difference over elements
    a, b = torch.rand(2, 1, 28, 28, generator=g), torch.rand(2, 1, 28, 28, generator=g)
    c, d = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
    z, zh = torch.rand(3, Z_DIM, generator=g), torch.rand(3, Z_DIM, generator=g)
    def naive(u, v):  # a Python loop over the elements
        return sum(abs(p - q) for p, q in zip(u.flatten().tolist(), v.flatten().tolist())) / u.numel()
    terms = cycle_losses(a, b, c, d, z, zh)
    assert terms["f"].item() == pytest.approx(naive(b, a), rel=1e-5)
    assert terms["p"].item() == pytest.approx(naive(d, c), rel=1e-5)
    assert terms["z"].item() == pytest.approx(naive(zh, z), rel=1e-5)
    # (10): l_GA + l_GE + lam * l_r
    total = generator_objective(torch.tensor(0.5), torch.tensor(0.25), terms, lam=10.0)
    assert total.item() == pytest.approx(0.75 + 10 * (naive(b, a) + naive(d, c) + naive(zh, z)), rel=1e-5)
    # a critic that says 1/2 everywhere is at chance; one that is always right has accuracy 1
    assert balanced_accuracy(torch.zeros(3) + 1e-3, torch.zeros(4) + 1e-3).item() == 0.5
    assert balanced_accuracy(torch.ones(3), -torch.ones(4)).item() == 1.0
    with pytest.raises(ValueError, match="one logit per sample"):
        critic_loss(real[:, None], fake)
    # CycleGAN's identity terms (off by default): e = |G_E(x_p) - x_p|, a = |G_A(x~_f, z) - x~_f|, at weight w x lam
    same = identity_losses(a, b, c, d)
    assert same["e"].item() == pytest.approx(naive(b, a), rel=1e-5)
    assert same["a"].item() == pytest.approx(naive(d, c), rel=1e-5)
    with_identity = generator_objective(torch.tensor(0.5), torch.tensor(0.25), terms, 10.0, same, identity_weight=0.5)
    assert with_identity.item() == pytest.approx(total.item() + 0.5 * 10 * (naive(b, a) + naive(d, c)), rel=1e-5)
    assert generator_objective(torch.tensor(0.5), torch.tensor(0.25), terms, 10.0, same).item() == total.item()
    with pytest.raises(ValueError, match="identity terms"):
        generator_objective(torch.tensor(0.5), torch.tensor(0.25), terms, 10.0, None, identity_weight=0.5)


def test_models_have_the_papers_shape():
    spec = GeneratorSpec(z_dim=16)
    G_A, G_EL = Augmenter(spec), EliminatorPredictor(spec)
    linears = lambda m: [l for l in m.modules() if isinstance(l, nn.Linear)]  # noqa: E731
    assert [(l.in_features, l.out_features) for l in linears(G_A)] == [(800, 912), (912, 912), (912, 912), (912, 784)]
    # G_E and G_L: three shared layers, then each its own last layer
    assert [(l.in_features, l.out_features) for l in linears(G_EL.trunk)] == [(784, 912), (912, 912), (912, 912)]
    assert (G_EL.eliminate.out_features, G_EL.latent.out_features) == (784, 16)
    assert sum(isinstance(m, nn.ReLU) for m in G_A.modules()) == 3
    x, z = torch.rand(5, 1, 28, 28), torch.rand(5, 16)
    out = G_A(x, z)
    eliminated, latent = G_EL(x)
    assert out.shape == eliminated.shape == x.shape and latent.shape == (5, 16)
    assert 0 <= out.min() and out.max() <= 1 and 0 <= latent.min() and latent.max() <= 1
    D = Critic(32, 8)
    assert D(torch.randn(5, 32)).shape == (5,) and any(isinstance(m, nn.LeakyReLU) for m in D.modules())
    with pytest.raises(ValueError, match="expected z of shape"):
        G_A(x, torch.rand(5, 3))


def test_skip_generators_start_as_the_identity_and_then_learn_everywhere():
    spec = GeneratorSpec(z_dim=4, hidden=16, skip=True)
    torch.manual_seed(0)
    G_A, G_EL = Augmenter(spec), EliminatorPredictor(spec)
    x = torch.rand(6, 1, 28, 28)
    x[:, :, :3] = 0.0  # black and white pixels, as in the data: clamped before the logit, so finite
    x[:, :, -3:] = 1.0
    z = torch.rand(6, 4)
    expected = x.clamp(SKIP_EPS, 1 - SKIP_EPS)
    torch.testing.assert_close(G_A(x, z), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(G_EL(x)[0], expected, rtol=0, atol=1e-6)
    # the plain perceptron is not the identity
    assert (Augmenter(GeneratorSpec(z_dim=4, hidden=16))(x, z) - x).abs().max() > 0.1
    # zero-initialised last layers: one step moves them, after which every layer gets a gradient
    target = torch.rand_like(x)
    params = list(G_A.parameters()) + list(G_EL.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        ((G_A(x, z) - target).abs().mean() + (G_EL(x)[0] - target).abs().mean() + G_EL(x)[1].mean()).backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


# ---------------------------------------------------------------- gradients

def _grads(loss, params):
    return [None if g is None else g.abs().sum().item() for g in torch.autograd.grad(
        loss, params, retain_graph=True, allow_unused=True)]


def test_g_l_learns_from_the_cycle_loss_only_g_a_and_g_e_from_both():
    generators, critics = players()
    F = freeze(tiny_f())
    method = augmentation_game(F, Z_DIM, lam=10.0)
    torch.manual_seed(0)
    out = method.forward(generators, one_batch())
    terms = generator_terms(generators, critics, out)
    adversarial = terms["adv_a"] + terms["adv_e"]
    cycle = terms["cycle_f"] + terms["cycle_p"] + terms["cycle_z"]
    G_EL = generators["G_EL"]
    groups = {"G_A": list(generators["G_A"].parameters()), "G_E": list(G_EL.eliminate.parameters()),
              "G_L": list(G_EL.latent.parameters()), "trunk": list(G_EL.trunk.parameters())}
    for name, params in groups.items():
        from_adv, from_cycle = _grads(adversarial, params), _grads(cycle, params)
        assert all(g is not None and g > 0 for g in from_cycle), f"{name} gets no gradient from l_r"
        if name == "G_L":
            assert all(g is None or g == 0 for g in from_adv), "G_L's head got a gradient from the adversarial terms"
        else:
            assert all(g is not None and g > 0 for g in from_adv), f"{name} gets no gradient from l_GA + l_GE"
    # the identity terms (not the paper's, off by default) train G_A and G_E, never G_L's head
    same = generator_terms(generators, critics, out, identity=True)
    assert set(same) - set(terms) == {"identity_e", "identity_a"}
    identity_grads = {name: _grads(same["identity_e"] + same["identity_a"], params) for name, params in groups.items()}
    assert all(g is not None and g > 0 for name in ("G_A", "G_E", "trunk") for g in identity_grads[name])
    assert all(g is None or g == 0 for g in identity_grads["G_L"])
    # the generator loss depends on the critics (the trainer must discard that gradient) and never on F
    assert all(g > 0 for g in _grads(adversarial, [p for c in critics.values() for p in c.parameters()]))
    assert not any(p.requires_grad for p in F.parameters())


def test_critics_see_detached_fakes_and_cached_features_equal_f():
    generators, critics = players()
    F = freeze(tiny_f())
    loaders_ = loaders()
    batch = {name: next(iter(loader)) for name, loader in loaders_.items()}
    plain = augmentation_game(F, Z_DIM, 10.0)
    cached = augmentation_game(F, Z_DIM, 10.0, real_features=cached_features(F, loaders_))
    torch.manual_seed(1)
    a = plain.forward(generators, batch)
    torch.manual_seed(1)
    b = cached.forward(generators, batch)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    assert a["h_augmented"].requires_grad and not a["h_p"].requires_grad
    # a critic loss on the trainer's detached outputs reaches the critic and nothing on the generator side
    detached = {k: v.detach() for k, v in a.items()}
    for name, loss_fn in plain.critic_losses.items():
        loss, logs = loss_fn(critics[name], F, detached)
        assert {f"{name}/real", f"{name}/fake", f"{name}/acc"} <= set(logs)
        grads = torch.autograd.grad(loss, list(critics[name].parameters()))
        assert all(g.abs().sum() > 0 for g in grads)
        assert not any(v.requires_grad for v in detached.values())
        # the critic's loss on the detached fake is eq. (8) / (9) on F of the fake
        real_key, fake_key = ("h_f", "augmented") if name == "D_f" else ("h_p", "eliminated")
        want = critic_loss(critics[name](detached[real_key]), critics[name](F(detached[fake_key])))
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_simultaneous_step_equals_the_hand_computed_one():
    """Algorithm 1: critics step on their own loss at the pre-step parameters, generators on theirs; the
    gradient the generator loss sends to the critics is never applied."""
    generators, critics = players()
    F = freeze(tiny_f())
    loaders_ = loaders()
    batch = {name: next(iter(loader)) for name, loader in loaders_.items()}
    method = augmentation_game(F, Z_DIM, 10.0, real_features=cached_features(F, loaders_))
    lr = 0.1
    start_g, start_c = copy.deepcopy(generators), copy.deepcopy(critics)

    torch.manual_seed(7)
    out = method.forward(start_g, batch)
    detached = {k: v.detach() for k, v in out.items()}
    want_c = {}
    for name, loss_fn in method.critic_losses.items():
        grads = torch.autograd.grad(loss_fn(start_c[name], F, detached)[0], list(start_c[name].parameters()))
        want_c[name] = [(p - lr * g).detach() for p, g in zip(start_c[name].parameters(), grads)]
    g_params = [p for m in start_g.values() for p in m.parameters()]
    loss, _ = method.generator_loss(start_g, start_c, F, out)
    g_grads = torch.autograd.grad(loss, g_params)
    want_g = [(p - lr * g).detach() for p, g in zip(g_params, g_grads)]
    want_grads_a = g_grads[:len(list(start_g["G_A"].parameters()))]

    sgd = lambda modules: {k: torch.optim.SGD(m.parameters(), lr=lr) for k, m in modules.items()}  # noqa: E731
    torch.manual_seed(7)
    adversarial_step(generators, critics, F, method, batch, sgd(generators), sgd(critics), simultaneous=True,
                     device=CPU, step=1)
    for name in critics:
        for got, want in zip(critics[name].parameters(), want_c[name], strict=True):
            torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    for got, want in zip([p for m in generators.values() for p in m.parameters()], want_g, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    # the generators' gradients are those at the pre-step critics (alternating updates would differ here)
    for got, want in zip([p.grad for p in generators["G_A"].parameters()], want_grads_a, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_f_stays_frozen_in_eval_mode_through_training(tmp_path):
    generators, critics = players()
    F = tiny_f().train()  # handed over in train mode: freeze() and the trainer keep it in eval mode
    params = {n: p.detach().clone() for n, p in F.named_parameters()}
    buffers = {n: b.clone() for n, b in F.named_buffers()}
    tally = game.Tally()
    method = game.tallied(augmentation_game(freeze(F), Z_DIM, 10.0), tally)
    cfg = AdversarialConfig(steps=3, log_every=1, eval_every=3, checkpoint_every=3, simultaneous=True)
    result = train_adversarial(cfg, generators, critics, F, method, loaders(), out_dir=tmp_path, logger=NullLogger(),
                               device=CPU, evaluate=lambda g, step: tally.means(), progress=False)
    assert not any(m.training for m in F.modules())
    for n, p in F.named_parameters():
        assert not p.requires_grad and p.grad is None and torch.equal(p, params[n]), f"F.{n} changed"
    for n, b in F.named_buffers():
        assert torch.equal(b, buffers[n]), f"F's buffer {n} changed"
    # the curve point holds the means of the three steps' logs
    point = result.history[-1]
    assert point["step"] == 3 and {"train/g/total", "train/D_f/total", "train/g/cycle_z", "train/D_p/acc"} <= set(point)


# ---------------------------------------------------------------- files

def test_generators_and_latents_round_trip_and_refuse_the_wrong_file(tmp_path):
    spec = GeneratorSpec(z_dim=Z_DIM, hidden=16)
    torch.manual_seed(0)
    G_A, G_EL = Augmenter(spec), EliminatorPredictor(spec)
    path = tmp_path / "generators.pt"
    save_generators(path, G_A, G_EL, step=5)
    A, EL, got = load_generators(path, expect=spec)
    assert got == spec and not A.training
    x, z = torch.rand(3, 1, 28, 28), torch.rand(3, Z_DIM)
    torch.testing.assert_close(A(x, z), G_A(x, z))
    torch.testing.assert_close(EL(x)[1], G_EL(x)[1])
    with pytest.raises(ValueError, match=rf"{path}.*another generator config.*z_dim"):
        load_generators(path, expect=GeneratorSpec(z_dim=16, hidden=16))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.pt")):
        load_generators(tmp_path / "missing.pt")
    latents = torch.rand(6, Z_DIM)
    save_latents(tmp_path / "latents.pt", latents)
    torch.testing.assert_close(load_latents(tmp_path / "latents.pt", z_dim=Z_DIM, n=6), latents)
    with pytest.raises(ValueError, match="z_dim 3, expected 16"):
        load_latents(tmp_path / "latents.pt", z_dim=16)
    with pytest.raises(ValueError, match="not an augmentation-generator generators.pt"):
        load_generators(tmp_path / "latents.pt")


# ---------------------------------------------------------------- the stage

def toy_splits(n_p=24, n_f=20, n_t=10):
    """Synthetic Splits: strokes on 0 for X_p / clean Omniglot, plus bright dots on the dotted copies."""
    g = torch.Generator().manual_seed(3)

    def strokes(n):
        x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
        rows = torch.randint(4, 24, (n,), generator=g)
        for i, r in enumerate(rows.tolist()):  # a horizontal bar per image (tiny: n is ~20)
            x[i, 0, r:r + 2, 6:22] = 255
        return x

    def dotted(x):
        dots = torch.rand(x.shape, generator=g) > 0.97
        return torch.where(dots, torch.full_like(x, 255), x)

    fine, test = strokes(n_f), strokes(n_t)
    fine_index, test_index = torch.arange(n_f) * 20 // n_f, torch.arange(n_t) * 20 // n_t + 20
    return ag_data.Splits(xp=strokes(n_p), yp=torch.zeros(n_p, dtype=torch.int64), fine_dotted=dotted(fine),
                          fine_clean=fine, fine_y=fine_index // 20, fine_index=fine_index, test_clean=test,
                          test_dotted=dotted(test), test_y=test_index // 20, test_index=test_index, n_classes=2)


@pytest.fixture
def stage_files(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    splits = toy_splits()
    with open(data_dir / ag_data.SPLITS_FILE, "wb") as f:
        ag_data.save_splits(splits, f)
    encoder = tmp_path / "encoder.pt"
    save_encoder(encoder, tiny_f(), width=1 / 16)  # the pretrain stage's format, read by encoder.load_encoder
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"scale": "smoke", "seed": 0, "device": "cpu", "threads": 1,
                                     "tracking": {"backend": "none", "uri": None}}))
    params = tmp_path / "params.yaml"
    game_section = {"hidden": 16, "z_dim": Z_DIM, "critic_hidden": 8, "batch_size": 4, "grid_images": 2,
                    "grid_z": 3, "eval_images": 4, "check_images": 8,
                    "train": {"steps": 4, "optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999],
                              "simultaneous": True, "log_every": 2, "eval_every": 2, "checkpoint_every": 2}}
    params.write_text(yaml.safe_dump({"runs": {"n_seeds": 1}, "game": game_section}))
    return {"data": data_dir, "encoder": encoder, "suite": suite, "params": params, "splits": splits}


def run_game(files, out, seed=0):
    argv = ["--seed", str(seed), "--data", str(files["data"]), "--encoder", str(files["encoder"]), "--out", str(out),
            "--params", str(files["params"]), "--suite-params", str(files["suite"])]
    return game.main(argv)


def test_the_stage_runs_end_to_end_and_resumes_to_the_same_outputs(stage_files, tmp_path):
    out = tmp_path / "game" / "seed0"
    assert run_game(stage_files, out) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["stage"] == "game" and record["scale"] == "smoke" and record["steps"] == 4
    assert set(record["metrics"]) == {"eliminate_l1", "dotted_l1", "eliminate_closer_frac", "d_p_acc", "d_f_acc",
                                      "latent_l1", "latent_l1_independent", "ink_corr_mean_z", "ink_corr_direction"}
    assert all(math.isfinite(v) for v in record["metrics"].values())
    assert [p["step"] for p in record["curve"]] == [2, 4]
    assert {"train/g/total", "train/D_p/acc", "eliminate_l1", "d_p_acc"} <= set(record["curve"][0])
    assert record["checks"]["a9_eliminator"]["l1_dotted"]["n"] == 20
    assert len(record["checks"]["a8_latent"]["ink_sweep"]) == 3
    # dotted_l1 is the mean |x~ - x| of the toy data, worked out directly
    splits = stage_files["splits"]
    assert record["metrics"]["dotted_l1"] == pytest.approx(
        (splits.fine_dotted.double() - splits.fine_clean.double()).abs().mean().item() / 255, rel=1e-5)

    # latents.pt: G_L of every fine-tuning image in index order, from the saved generators
    G_A, G_EL, spec = load_generators(out / "generators.pt", expect=GeneratorSpec(z_dim=Z_DIM, hidden=16))
    latents = load_latents(out / "latents.pt", z_dim=Z_DIM, n=20)
    with torch.no_grad():
        torch.testing.assert_close(latents, G_EL(splits.fine_dotted.float() / 255)[1], rtol=1e-5, atol=1e-6)
    sweep, eliminate = Image.open(out / "z_sweep.png"), Image.open(out / "eliminate.png")
    assert sweep.size == (28 * 4, 28 * 2) and eliminate.size == (28 * 4, 28 * 2)  # (x + 3 z) x 2; 4 columns x 2

    # a re-run resumes the finished checkpoint and writes the same numbers
    assert run_game(stage_files, out) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["metrics"] == record["metrics"] and again["curve"] == record["curve"]
    torch.testing.assert_close(load_latents(out / "latents.pt"), latents)


def test_a_seed_beyond_n_seeds_writes_a_skip_marker(stage_files, tmp_path):
    out = tmp_path / "game" / "seed1"
    assert run_game(stage_files, out, seed=1) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert "n_seeds=1" in record["skipped"] and not (out / "generators.pt").exists()
