"""GAN losses against naive formulas, gradients per step, lazy R1, EMA, and the GAN trainer end to end."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from shared.data import DeviceLoader
from shared.gan_losses import GANMethod, identity, nonsaturating, ns_d_loss, ns_g_loss, r1_penalty
from shared.models.stylegan2 import stylegan2_cifar
from shared.tracking import NullLogger
from shared.trainers.gan import (GANConfig, d_step, ema_beta, g_step, image_grid, r1_on_reals, sample_images,
                                 train_gan, update_ema)
from shared.trainers.ssl import NonFiniteLossError

CPU = torch.device("cpu")


def tiny_gan(seed=0):
    torch.manual_seed(seed)
    return stylegan2_cifar("smoke", resolution=16)


def tiny_loader(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    return DeviceLoader(x, torch.zeros(n, dtype=torch.long), batch_size=4, drop_last=True, seed=seed)


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
