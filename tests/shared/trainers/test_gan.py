"""GAN losses against naive formulas, gradients per step, lazy R1, EMA, the GAN trainer end to end, and
conditional GANs: k-NN neighbourhoods against scikit-learn, what the class / instance providers hand to D and G."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

from shared.data import DeviceLoader
from shared.gan_losses import (GANMethod, hinge, hinge_d_loss, hinge_g_loss, identity, nonsaturating, ns_d_loss,
                               ns_g_loss, r1_penalty)
from shared.models.conditional import conditional_gan
from shared.models.stylegan2 import stylegan2_cifar
from shared.tracking import NullLogger
from shared.trainers.gan import (ClassConditions, GANConfig, InstanceConditions, d_step, ema_beta, fid_evaluate,
                                 g_step, image_grid, knn_neighbourhoods, r1_on_reals, sample_images, to_model_range,
                                 train_gan, update_ema)
from shared.trainers.ssl import NonFiniteLossError

CPU = torch.device("cpu")


def tiny_gan(seed=0):
    torch.manual_seed(seed)
    return stylegan2_cifar("smoke", resolution=16)


def tiny_loader(n=16, seed=0, y=None):
    """(x, y, index) batches of 4 random 16x16 images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.long) if y is None else y
    return DeviceLoader(x, y, batch_size=4, drop_last=True, seed=seed)


def tiny_conditional_gan(seed=0, **condition):
    torch.manual_seed(seed)
    return conditional_gan("sndcgan", width=1 / 16, z_dim=8, embed_dim=4, resolution=16, **condition)


def tiny_cfg(**kw):
    base = dict(steps=3, batch_size=4, r1_interval=2, ema_kimg=0.01, ema_start_kimg=0.0, log_every=1,
                sample_every=2, checkpoint_every=2, eval_every=2, n_sample_grid=6)
    return GANConfig(**{**base, **kw})


# ---------------------------------------------------------------- losses

def test_nonsaturating_losses_match_the_log_sigmoid_form():
    real, fake = [0.3, -1.2, 2.0], [-0.5, 0.8]
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    d = -sum(math.log(sig(r)) for r in real) / 3 - sum(math.log(1 - sig(f)) for f in fake) / 2
    g = -sum(math.log(sig(f)) for f in fake) / 2
    assert ns_d_loss(torch.tensor(real), torch.tensor(fake)).item() == pytest.approx(d, rel=1e-6)
    assert ns_g_loss(torch.tensor(fake)).item() == pytest.approx(g, rel=1e-6)
    # softplus stays finite where log(sigmoid) underflows
    assert math.isfinite(ns_d_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item())


def test_hinge_losses_match_the_formula():
    real, fake = [0.3, -1.2, 2.0, 1.0], [-0.5, 0.8, -1.5]
    d = sum(max(0.0, 1 - r) for r in real) / 4 + sum(max(0.0, 1 + f) for f in fake) / 3
    g = -sum(fake) / 3
    assert hinge_d_loss(torch.tensor(real), torch.tensor(fake)).item() == pytest.approx(d, rel=1e-6)
    assert hinge_g_loss(torch.tensor(fake)).item() == pytest.approx(g, rel=1e-6)
    assert hinge_d_loss(torch.tensor(real, dtype=torch.bfloat16), torch.tensor(fake)).dtype == torch.float32


def test_hinge_method_names_policies_and_conditions():
    assert hinge().name == "hinge" and hinge().augment is identity
    assert hinge("translation, cutout").name == "hinge+diffaugment[translation,cutout]"
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        hinge("rotate")
    a = torch.randn(3, 4, 4)
    seen = []

    def D(x, c=None):  # linear in x, plus a per-condition offset when conditional
        seen.append(c)
        return (x * a).sum(dim=(1, 2, 3)) + (0 if c is None else c.float())

    real, fake = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 4, 4)
    loss, logs = hinge().d_loss(D, real, fake, identity)
    torch.testing.assert_close(loss, hinge_d_loss(D(real), D(fake)))
    assert seen[:2] == [None, None] and logs["d/loss"] == pytest.approx(loss.item())
    c_real, c_fake = torch.tensor([1, 2]), torch.tensor([0, 1, 0, 1, 0])
    loss, _ = hinge().d_loss(D, real, fake, identity, c_real=c_real, c_fake=c_fake)
    torch.testing.assert_close(loss, hinge_d_loss(D(real, c_real), D(fake, c_fake)))
    loss, _ = nonsaturating("").g_loss(D, fake, identity, c_fake=c_fake)
    torch.testing.assert_close(loss, ns_g_loss(D(fake, c_fake)))


def test_r1_matches_the_closed_form_of_a_linear_and_a_quadratic_discriminator():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty((x * a).sum(dim=(1, 2, 3)) + 0.7, x)  # D(x) = <a, x> + b: grad = a for every sample
    torch.testing.assert_close(r1, a.pow(2).sum())
    (grad_a,) = torch.autograd.grad(r1, a)  # create_graph: the penalty trains D's parameters
    torch.testing.assert_close(grad_a, 2 * a)
    c = torch.rand(3, 4, 4, generator=g, dtype=torch.float64)
    x2 = x.detach().requires_grad_(True)  # D(x) = 1/2 sum c x^2: grad = c x, per sample
    expected = (c * x2).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(r1_penalty(0.5 * (c * x2.pow(2)).sum(dim=(1, 2, 3)), x2), expected)


def test_r1_input_convention_augmented_versus_clean():
    a = torch.randn(3, 2, 2, dtype=torch.float64)
    D = lambda x: (x * a).sum(dim=(1, 2, 3))  # noqa: E731
    real = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    double = lambda x: 2 * x  # noqa: E731
    # at the augmented reals the gradient is a; through the augmentation it is 2a
    torch.testing.assert_close(r1_on_reals(D, real, double, "augmented"), a.pow(2).sum())
    torch.testing.assert_close(r1_on_reals(D, real, double, "clean"), 4 * a.pow(2).sum())


def test_nonsaturating_method_names_and_policies():
    base = nonsaturating("")
    assert base.name == "baseline" and base.augment is identity
    da = nonsaturating("color, translation,cutout")
    assert da.name == "diffaugment[color,translation,cutout]"
    x = torch.zeros(2, 3, 8, 8)
    assert not torch.equal(da.augment(x + 0.5), x + 0.5)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        nonsaturating("color,rotate")


# ---------------------------------------------------------------- steps

def test_each_step_trains_only_its_own_network_and_every_parameter_gets_a_gradient():
    G, D = tiny_gan()
    cfg = tiny_cfg(style_mixing_prob=0.9, r1_interval=1)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=1e-3), torch.optim.Adam(D.parameters(), lr=1e-3)
    method = nonsaturating("color,translation,cutout")
    real = torch.rand(4, 3, 16, 16) * 2 - 1

    g_before = {n: p.detach().clone() for n, p in G.named_parameters()}
    logs = d_step(G, D, method, real, opt_d, cfg, 0, G.z_dim, CPU, 1)
    assert {"d/loss", "d/r1", "d/total"} <= logs.keys()
    for name, p in D.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient in the D step"
    for name, p in G.named_parameters():
        assert p.grad is None and torch.equal(p, g_before[name]), f"G.{name} touched by the D step"

    d_before = {n: p.detach().clone() for n, p in D.named_parameters()}
    opt_d.zero_grad(set_to_none=True)
    g_step(G, D, method, opt_g, cfg, 4, G.z_dim, CPU, 1)
    # No known-unused parameters: with random noise every noise strength gets a gradient too.
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"G.{name} got no gradient in the G step"
        assert not torch.equal(p, g_before[name]), f"G.{name} did not move"
    for name, p in D.named_parameters():
        assert p.grad is None and torch.equal(p, d_before[name]), f"D.{name} touched by the G step"
    assert all(p.requires_grad for p in D.parameters())  # D is unfrozen again


def test_lazy_r1_runs_every_r1_interval_d_steps(tmp_path):
    G, D = tiny_gan()
    logger = NullLogger()
    train_gan(tiny_cfg(steps=5, r1_interval=2, checkpoint_every=100, sample_every=100), G, D, nonsaturating(""),
              tiny_loader(), out_dir=tmp_path, logger=logger, device=CPU, z_dim=G.z_dim, progress=False)
    assert [s for s, _ in logger.metric_history("train/d/r1")] == [1, 3, 5]  # D steps 0, 2, 4
    assert len(logger.metric_history("train/d/loss")) == 5


def test_ema_update_and_schedule():
    G, _ = tiny_gan(0)
    G_ema, _ = tiny_gan(1)
    old = {n: p.detach().clone() for n, p in G_ema.named_parameters()}
    G.w_avg.fill_(0.25)
    update_ema(G_ema, G, 0.9)
    for n, p in G.named_parameters():
        torch.testing.assert_close(dict(G_ema.named_parameters())[n], 0.9 * old[n] + 0.1 * p)
    for (n, b_ema), b in zip(G_ema.named_buffers(), G.buffers()):
        assert torch.equal(b_ema, b), f"buffer {n} not copied"
    cfg = GANConfig(batch_size=32, ema_kimg=10, ema_start_kimg=1, ema_rampup=0.0)
    assert ema_beta(cfg, 999) == 0.0  # before the start G_ema copies G
    assert ema_beta(cfg, 1000) ** (10_000 / 32) == pytest.approx(0.5)  # half-life 10 kimg
    ramp = GANConfig(batch_size=32, ema_kimg=10, ema_start_kimg=0, ema_rampup=0.05)
    assert ema_beta(ramp, 3200) == pytest.approx(0.5 ** (32 / 160))  # half-life capped at 5% of images seen


# ---------------------------------------------------------------- sampling

def test_sample_images_is_deterministic_by_seed_and_leaves_the_rng_alone():
    G, _ = tiny_gan()
    state = torch.get_rng_state()
    a = sample_images(G, 6, 4, seed=3, device=CPU)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.dtype == torch.uint8 and a.shape == (6, 3, 16, 16)
    assert torch.equal(a, sample_images(G, 6, 4, seed=3, device=CPU))
    assert not torch.equal(a, sample_images(G, 6, 4, seed=4, device=CPU))
    assert G.training  # mode restored


def test_image_grid_layout():
    x = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    grid = image_grid(x, nrow=3)
    assert grid.shape == (4, 6, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 2, 0] == 1 and grid[0, 5, 1] == 2 and grid[2, 0, 2] == 3
    assert (grid[2:, 4:] == 0).all()  # the missing sixth image is black


# ---------------------------------------------------------------- the trainer

def test_train_gan_logs_samples_evaluates_and_checkpoints(tmp_path):
    G, D = tiny_gan()
    logger = NullLogger()
    calls = []

    def evaluate(G_ema, step):
        calls.append(step)
        torch.rand(10)  # must not disturb training's RNG
        return {"fid": {2: 5.0, 3: 7.0}[step], "is": 1.0}

    result = train_gan(tiny_cfg(), G, D, nonsaturating(), tiny_loader(), out_dir=tmp_path, logger=logger,
                       device=CPU, z_dim=G.z_dim, evaluate=evaluate, progress=False)
    assert result.steps == 3 and calls == [2, 3]
    assert [h["step"] for h in result.history] == [2, 3] and result.best == {"step": 2, "fid": 5.0}
    assert [s for s, _ in logger.metric_history("eval/fid")] == [2, 3]
    losses = [v for _, v in logger.metric_history("train/d/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    png = tmp_path / "samples" / "step_0000003.png"
    assert png.exists() and (tmp_path / "samples" / "step_0000002.png").exists()
    assert np.asarray(Image.open(png)).shape == (2 * 16, 3 * 16, 3)  # 6 images, 3 per row
    assert logger.artifacts["samples/step_0000003.png"].shape == (32, 48, 3)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and {"G", "D", "G_ema", "opt_g", "opt_d", "rng"} <= state.keys()
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["step"] == 2 and best["fid"] == 5.0
    assert not any(torch.equal(a, b) for a, b in zip(result.G_ema.parameters(), G.parameters()))


def test_final_evaluation_runs_once_on_the_best_g_ema_and_a_resumed_finished_run_reads_it_back(tmp_path):
    calls = []

    def evaluate(G_ema, step):  # the cheap one: step 2 is the best
        return {"fid": {2: 5.0, 3: 6.0, 4: 7.0, 5: 6.0}[step]}

    def final_evaluate(G_ema, step):  # the dear one: a fake scorer that counts its calls and what it saw
        calls.append((step, {k: v.clone() for k, v in G_ema.state_dict().items()}))
        torch.rand(10)  # must not disturb anything either
        return {"fid_inception": 42.0}

    def run(steps):
        G, D = tiny_gan()
        return train_gan(tiny_cfg(steps=steps), G, D, nonsaturating(), tiny_loader(), out_dir=tmp_path,
                         logger=NullLogger(), device=CPU, z_dim=G.z_dim, evaluate=evaluate,
                         final_evaluate=final_evaluate, progress=False)

    result = run(5)
    assert [h["step"] for h in result.history] == [2, 4, 5]  # the cheap one at every evaluation
    assert len(calls) == 1 and calls[0][0] == 2  # the dear one once, seeded by the best step
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["step"] == 2
    for name, value in best["G_ema"].items():  # on the best G_ema, not the last one
        assert torch.equal(calls[0][1][name], value), name
    assert not all(torch.equal(calls[0][1][k], v) for k, v in result.G_ema.state_dict().items())
    assert result.final == {"step": 2, "fid_inception": 42.0}
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["final"] == result.final
    again = run(5)  # DVC re-runs a finished stage: the checkpoint's final evaluation is read back
    assert len(calls) == 1 and again.final == result.final
    G, D = tiny_gan()  # and without a final evaluation nothing is added
    plain = train_gan(tiny_cfg(), G, D, nonsaturating(), tiny_loader(), out_dir=tmp_path / "plain",
                      logger=NullLogger(), device=CPU, z_dim=G.z_dim, evaluate=evaluate, progress=False)
    assert plain.final is None and "final" not in torch.load(tmp_path / "plain" / "checkpoint.pt",
                                                             weights_only=False)


def test_resumed_training_is_bit_identical(tmp_path):
    def run(out_dir, steps, seed=0):
        G, D = tiny_gan(seed)
        cfg = tiny_cfg(steps=steps, checkpoint_every=2, r1_interval=3, warmup_steps=4)  # resumes mid-warm-up
        return train_gan(cfg, G, D, nonsaturating(), tiny_loader(n=12), out_dir=out_dir, logger=NullLogger(),
                         device=CPU, z_dim=G.z_dim, evaluate=lambda G, s: {"fid": float(torch.rand(()))},
                         progress=False).G_ema

    straight = run(tmp_path / "a", 5)  # 5 steps over 3 batches an epoch: crosses epochs
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 5, seed=1)  # models rebuilt from another init: the resume must overwrite it all
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), f"G_ema.{name} differs after resuming"


def test_non_finite_loss_names_the_step(tmp_path):
    G, D = tiny_gan()
    base = nonsaturating("")

    def nan_d_loss(D, real, fake, augment):
        loss, logs = base.d_loss(D, real, fake, augment)
        return loss * float("nan"), logs

    with pytest.raises(NonFiniteLossError, match="non-finite D loss nan at step 1"):
        train_gan(tiny_cfg(), G, D, GANMethod(nan_d_loss, base.g_loss, "nan"), tiny_loader(), out_dir=tmp_path,
                  logger=NullLogger(), device=CPU, z_dim=G.z_dim, progress=False)


def test_wrong_batch_size_and_bad_config_fail_loudly(tmp_path):
    G, D = tiny_gan()
    with pytest.raises(ValueError, match="expected batch_size=8"):
        train_gan(tiny_cfg(batch_size=8), G, D, nonsaturating(""), tiny_loader(), out_dir=tmp_path,
                  logger=NullLogger(), device=CPU, z_dim=G.z_dim, progress=False)
    with pytest.raises(ValueError, match="betas"):
        GANConfig(betas=(0.0, 1.0))
    with pytest.raises(ValueError, match="r1_input"):
        GANConfig(r1_input="both")


def test_warmup_ramps_both_learning_rates_linearly_and_resumes(tmp_path):
    from shared.trainers.gan import warmup_factor
    assert [warmup_factor(4)(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0)(0) == 1.0
    G, D = tiny_gan()
    train_gan(tiny_cfg(steps=2, warmup_steps=4, lr_g=0.004, lr_d=0.002), G, D, nonsaturating(), tiny_loader(),
              out_dir=tmp_path, logger=NullLogger(), device=CPU, z_dim=G.z_dim, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    # after 2 steps the next step runs at 3/4 of the base rates
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.004 * 0.75)
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 0.75)
    assert state["sched_g"]["last_epoch"] == 2 and state["sched_d"]["last_epoch"] == 2


# ---------------------------------------------------------------- conditional GANs

def test_knn_neighbourhoods_match_scikit_learn_brute_force():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=g, dtype=torch.float64)
    scaled = features * torch.rand(40, 1, generator=g, dtype=torch.float64) * 10  # cosine ignores the norms
    k = 5
    _, expected = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(
        features.numpy()).kneighbors(features.numpy())
    assert (expected[:, 0] == np.arange(40)).all()  # scikit-learn lists each point first
    ours = knn_neighbourhoods(scaled, k, chunk_size=7)  # chunks that do not divide N
    assert ours.dtype == torch.long and ours.shape == (40, k)
    np.testing.assert_array_equal(ours.numpy(), expected[:, 1:])
    np.testing.assert_array_equal(knn_neighbourhoods(scaled, k, chunk_size=64, include_self=True).numpy(),
                                  expected[:, :k])
    with pytest.raises(ValueError, match="k <= N - 1"):
        knn_neighbourhoods(features, 40)


def _record_calls(module, calls):
    """Record (module, args) of every forward call, for the modules deep-copied from it (G_ema) too."""
    module.register_forward_pre_hook(lambda m, args: calls.append((m, [a.detach().clone() for a in args])))


def test_class_conditions_give_d_and_g_the_batch_labels(tmp_path):
    G, D = tiny_conditional_gan(n_classes=4)
    g_calls, d_calls = [], []
    _record_calls(G, g_calls)
    _record_calls(D, d_calls)
    y = torch.tensor([3, 1, 0, 2, 2, 0, 1, 3])
    loader = tiny_loader(n=8, y=y)
    cfg = tiny_cfg(steps=1, mirror=False, r1_interval=1, style_mixing_prob=0.0, n_sample_grid=6)
    train_gan(cfg, G, D, hinge(), loader, out_dir=tmp_path, logger=NullLogger(), device=CPU, z_dim=G.z_dim,
              condition=ClassConditions(4), progress=False)
    loader.set_epoch(0)
    x0, y0, _ = next(iter(loader))
    # D: the real forward, the fake forward, R1 on the reals, then the G step's fake forward
    assert len(d_calls) == 4 and all(m is D for m, _ in d_calls)
    torch.testing.assert_close(d_calls[0][1][0], to_model_range(x0, CPU))
    for _, (x, c) in d_calls:
        assert torch.equal(c, y0)
    # G: the D step's fakes, the G step's fakes (both with the batch's labels), then the grid from G_ema
    own = [args for m, args in g_calls if m is G]
    assert len(own) == 2 and all(torch.equal(c, y0) for _, c in own)
    grid = [args for m, args in g_calls if m is not G]
    assert torch.equal(torch.cat([c for _, c in grid]), torch.tensor([0, 1, 2, 3, 0, 1]))  # fixed(): cycled classes


def test_instance_conditions_give_d_neighbours_and_both_the_instance_features(tmp_path):
    loader = tiny_loader(n=12)
    images = loader.x
    features = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    provider = InstanceConditions(images, features, k=3, chunk_size=5)
    h = F.normalize(features, dim=1)
    assert torch.equal(provider.neighbours, knn_neighbourhoods(features, 3))
    G, D = tiny_conditional_gan(instance_dim=5)
    g_calls, d_calls = [], []
    _record_calls(G, g_calls)
    _record_calls(D, d_calls)
    cfg = tiny_cfg(steps=1, mirror=False, r1_gamma=0.0, style_mixing_prob=0.0)
    train_gan(cfg, G, D, hinge(), loader, out_dir=tmp_path, logger=NullLogger(), device=CPU, z_dim=G.z_dim,
              condition=provider, progress=False)
    loader.set_epoch(0)
    _, _, index = next(iter(loader))
    reals, c_real = d_calls[0][1]
    flat = to_model_range(images, CPU).flatten(1)
    for b, i in enumerate(index.tolist()):
        j = int((flat == reals[b].flatten()).all(dim=1).nonzero())  # which image D saw as real
        assert j in provider.neighbours[i].tolist() and j != i, f"instance {i}: real {j} is not a neighbour"
    torch.testing.assert_close(c_real, h[index])
    for m, (x, c) in d_calls[1:] + [(m, args) for m, args in g_calls if m is G]:
        torch.testing.assert_close(c, h[index])  # fakes G(z, h_i), judged as D(G(z, h_i), h_i)


def test_instance_conditions_draw_every_neighbour_and_need_indices():
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    provider = InstanceConditions(images, torch.randn(10, 4), k=3)
    index = torch.zeros(600, dtype=torch.long)
    torch.manual_seed(0)
    real, c_real, c_fake = provider.sample((images[index], index, index), CPU)
    picked = [int((images == r).flatten(1).all(dim=1).nonzero()) for r in real]
    counts = np.bincount(picked, minlength=10)
    assert set(np.flatnonzero(counts)) == set(provider.neighbours[0].tolist())
    assert counts.max() < 250  # uniform over 3: ~200 each
    assert torch.equal(c_real, c_fake) and torch.allclose(c_real.norm(dim=1), torch.ones(600))
    with pytest.raises(ValueError, match=r"need \(x, y, index\)"):
        provider.sample((images[:2], torch.zeros(2, dtype=torch.long)), CPU)
    with pytest.raises(ValueError, match="one feature row per image"):
        InstanceConditions(images, torch.randn(9, 4), k=3)
    fixed = provider.fixed(4, seed=7, device=CPU)
    assert torch.equal(fixed, provider.fixed(4, seed=7, device=CPU)) and fixed.shape == (4, 4)


def test_conditional_sampling_and_fid_evaluate_use_the_conditions():
    G, _ = tiny_conditional_gan(n_classes=4)
    provider = ClassConditions(4)
    state = torch.get_rng_state()
    a = sample_images(G, 6, 4, seed=3, device=CPU, c=provider.fixed(6, 3, CPU))
    assert torch.equal(torch.get_rng_state(), state) and a.shape == (6, 3, 16, 16)
    assert torch.equal(a, sample_images(G, 6, 4, seed=3, device=CPU, c=provider.fixed(6, 3, CPU)))
    assert not torch.equal(a, sample_images(G, 6, 4, seed=3, device=CPU, c=torch.tensor([3, 2, 1, 0, 3, 2])))
    with pytest.raises(ValueError, match="one condition per image"):
        sample_images(G, 6, 4, seed=3, device=CPU, c=torch.tensor([0, 1]))

    class Scorer:
        def score(self, images):
            self.images = images
            return {"fid": 1.0}

    scorer = Scorer()
    assert fid_evaluate(scorer, 6, 4, CPU, condition=provider)(G, 3) == {"fid": 1.0}
    assert torch.equal(scorer.images, a)


def test_conditional_resumed_training_is_bit_identical(tmp_path):
    loader = tiny_loader(n=12)
    features = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))

    def run(out_dir, steps, seed=0):
        G, D = tiny_conditional_gan(seed, instance_dim=5)
        cfg = tiny_cfg(steps=steps, checkpoint_every=2, r1_interval=2, style_mixing_prob=0.0)
        result = train_gan(cfg, G, D, hinge(), tiny_loader(n=12), out_dir=out_dir, logger=NullLogger(), device=CPU,
                           z_dim=G.z_dim, condition=InstanceConditions(loader.x, features, k=3), progress=False)
        return {**{f"G_ema.{k}": v for k, v in result.G_ema.state_dict().items()},
                **{f"D.{k}": v for k, v in D.state_dict().items()}}

    straight = run(tmp_path / "a", 5)  # 5 steps over 3 batches an epoch
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 5, seed=1)
    for name, p in straight.items():
        assert torch.equal(p, resumed[name]), f"{name} differs after resuming"
