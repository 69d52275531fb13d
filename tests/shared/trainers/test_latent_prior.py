"""The GAN trainer's latent prior: N(0, I) or U(-1, 1)^z_dim (ContraD's SNDCGAN G), its distribution by KS
tests, and one sampler behind every z the trainer draws (D step, G step, sample grid, FID samples)."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from shared.data import DeviceLoader
from shared.gan_losses import nonsaturating
from shared.tracking import NullLogger
from shared.trainers import gan
from shared.trainers.gan import LATENT_PRIORS, GANConfig, fid_evaluate, sample_images, sample_latent, train_gan

CPU = torch.device("cpu")


# ---------------------------------------------------------------- the sampler

def test_uniform_prior_is_u_minus_one_one():
    z = sample_latent(4000, 16, "uniform", CPU, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 16) and z.dtype == torch.float32
    assert z.min() >= -1 and z.max() < 1 and z.min() < -0.999 and z.max() > 0.999
    flat = z.flatten().double().numpy()
    assert stats.kstest(flat, "uniform", args=(-1, 2)).pvalue > 1e-3  # U(loc=-1, scale=2)
    assert stats.kstest(flat, "norm").pvalue < 1e-12  # and the test can tell it from N(0, 1)
    n = flat.size  # moments: mean 0, variance 1/3, within 5 standard errors
    assert abs(flat.mean()) < 5 * (1 / 3 / n) ** 0.5
    assert abs(flat.var() - 1 / 3) < 5 * (1 / 5 - 1 / 9) ** 0.5 / n ** 0.5  # Var(z^2) = E z^4 - (E z^2)^2


def test_normal_prior_is_n_zero_one_and_draws_what_randn_draws():
    z = sample_latent(4000, 16, "normal", CPU, torch.Generator().manual_seed(0))
    flat = z.flatten().double().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert stats.kstest(flat, "uniform", args=(-1, 2)).pvalue < 1e-12
    # the default prior keeps every earlier run's numbers: the same draws as torch.randn
    assert torch.equal(z, torch.randn(4000, 16, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(3)
    a = sample_latent(5, 7, "normal", CPU)
    torch.manual_seed(3)
    assert torch.equal(a, torch.randn(5, 7))


def test_an_unknown_prior_is_an_error_naming_the_key():
    assert LATENT_PRIORS == ("normal", "uniform")
    with pytest.raises(ValueError, match="latent_prior must be one of"):
        sample_latent(2, 3, "gaussian", CPU)
    with pytest.raises(ValueError, match="latent_prior"):
        fid_evaluate(None, 4, 2, CPU, 4, latent_prior="laplace")


# ---------------------------------------------------------------- every z of the trainer comes from it

class TinyG(nn.Module):
    """z -> tanh(Linear(z)) as 3 x 8 x 8 images."""
    z_dim = 6

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3 * 8 * 8)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x):
        return self.fc(F.leaky_relu(self.conv(x), 0.2).flatten(1)).squeeze(1)


class MeanScorer:
    def score(self, images):
        return {"fid": float(images.float().mean())}


@pytest.mark.parametrize("prior", LATENT_PRIORS)
def test_training_grids_and_fid_all_draw_z_from_the_configured_prior(prior, tmp_path, monkeypatch):
    calls = []  # (who asked, prior) for every sample_latent call
    real_sampler = gan.sample_latent

    def spy(n, z_dim, prior_, device, generator=None):
        names = [frame.function for frame in inspect.stack()[1:4]]
        caller = names[0]
        if caller == "sample_images":  # who sampled images: the grid (train_gan) or an evaluation
            caller += "<-" + next(n for n in names[1:] if n != "decorate_context")  # torch.no_grad's wrapper
        calls.append((caller, prior_))
        return real_sampler(n, z_dim, prior_, device, generator)

    monkeypatch.setattr(gan, "sample_latent", spy)
    torch.manual_seed(0)
    G, D = TinyG(), TinyD()
    seen = []  # every z that reaches G or G_ema (deepcopy keeps the hook)
    G.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.zeros(16, dtype=torch.long), batch_size=8, drop_last=True, seed=0)
    cfg = GANConfig(steps=2, batch_size=8, r1_interval=0, style_mixing_prob=0.0, ema_kimg=0.01, ema_start_kimg=0.0,
                    log_every=1, sample_every=1, checkpoint_every=2, eval_every=2, n_sample_grid=4)
    evaluate = fid_evaluate(MeanScorer(), 10, 5, CPU, TinyG.z_dim, latent_prior=prior)
    result = train_gan(cfg, G, D, nonsaturating(""), loader, out_dir=tmp_path, logger=NullLogger(), device=CPU,
                       z_dim=TinyG.z_dim, evaluate=evaluate, final_evaluate=evaluate, latent_prior=prior,
                       progress=False)
    assert result.steps == 2 and result.final is not None

    callers = {c for c, _ in calls}
    assert callers == {"d_step", "g_step", "sample_images<-train_gan", "sample_images<-evaluate"}, callers
    assert {p for _, p in calls} == {prior}
    z = torch.cat(seen)
    # 2 D + 2 G batches of 8, 2 grids of 4, FID at step 2 and the final one: 10 each
    assert z.shape == (2 * 8 + 2 * 8 + 2 * 4 + 2 * 10, TinyG.z_dim)
    inside = (z.abs() <= 1).all().item()
    assert inside if prior == "uniform" else not inside  # N(0, I): |z| > 1 for about 1 in 3 coordinates


def test_sample_images_uses_the_prior_and_stays_seeded():
    torch.manual_seed(0)
    G = TinyG()
    seen = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    a = sample_images(G, 6, 4, seed=5, device=CPU, latent_prior="uniform")
    assert torch.equal(a, sample_images(G, 6, 4, seed=5, device=CPU, latent_prior="uniform"))
    z = torch.cat(seen[:2])
    torch.manual_seed(5)
    assert torch.equal(z, torch.rand(6, TinyG.z_dim) * 2 - 1)
    assert not torch.equal(a, sample_images(G, 6, 4, seed=5, device=CPU))  # the default is N(0, I)


# ---------------------------------------------------------------- ContraD's rows use U(-1, 1)

def test_contrad_rows_use_the_official_uniform_prior_at_every_scale():
    from papers.contrad.config import PARAMS, ArchitectureConfig, TrainStageConfig
    from shared import config

    assert ArchitectureConfig().latent_prior == "uniform"
    for scale in ("paper", "mini", "smoke"):
        cfg = config.load_section(TrainStageConfig, PARAMS, "train", scale)
        assert {a: c.latent_prior for a, c in cfg.architectures.items()} == {
            "sndcgan": "uniform", "snresnet18": "uniform", "stylegan2": "normal"}, scale  # rosinality's randn
    with pytest.raises(ValueError, match="latent_prior"):
        ArchitectureConfig(latent_prior="gaussian")
