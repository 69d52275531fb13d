"""Conditional GAN networks: conditional batch norm by hand, G depends on c, the projection term by hand, sizes."""
import pytest
import torch
from torch.nn.utils import parametrize

from shared.models.conditional import (ConditionalBatchNorm2d, ConditionalGenerator, ProjectionDiscriminator,
                                       conditional_gan, projection_discriminator)
from shared.models.sngan import SNDCGANDiscriminator

TINY = 1 / 16  # 4 base channels


def test_conditional_batch_norm_matches_the_formula():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(3, cond_dim=5)
    x, e = torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    cbn.double()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)  # training-mode batch statistics
    gain = 1 + e @ cbn.gain.weight.T
    bias = e @ cbn.bias.weight.T
    expected = (x - mean) / torch.sqrt(var + 1e-5) * gain[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(cbn(x, e), expected)
    torch.testing.assert_close(cbn(x, torch.zeros_like(e)), (x - mean) / torch.sqrt(var + 1e-5))  # e = 0: plain BN


@pytest.mark.parametrize("kind", ["class", "instance"])
def test_generator_output_depends_on_the_condition(kind):
    torch.manual_seed(0)
    if kind == "class":
        G = ConditionalGenerator(z_dim=16, n_classes=10, embed_dim=8, width=TINY, resolution=16)
        c1, c2 = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    else:
        G = ConditionalGenerator(z_dim=16, instance_dim=12, embed_dim=8, width=TINY, resolution=16)
        c1, c2 = torch.nn.functional.normalize(torch.randn(2, 4, 12), dim=2)
    z = torch.randn(4, 16)
    G.eval()  # running statistics: each sample's output depends on its own (z, c) only
    with torch.no_grad():
        a, b, again = G(z, c1), G(z, c2), G(z, c1)
    assert a.shape == (4, 3, 16, 16) and a.abs().max() <= 1
    assert torch.equal(a, again)
    for i in range(4):  # a different condition changes every sample with the same z
        assert not torch.allclose(a[i], b[i], atol=1e-6), f"sample {i} ignores its condition"
    G.train()
    G(z, c1).square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"G.{name} got no gradient"


def test_generator_sizes_width_and_64px():
    with torch.device("meta"):
        G = ConditionalGenerator(z_dim=128, instance_dim=512, embed_dim=128, width=0.5, resolution=64)
    assert G.linear.out_features == 256 * 8 * 8 and G.bns[-1].gain.in_features == 128 + 128
    assert G.bns[0].gain.out_features == 128 and G.bns[-1].gain.out_features == 32
    assert parametrize.is_parametrized(G.embed.embed, "weight")  # IC-GAN's SN-Linear on h
    torch.manual_seed(0)
    small = ConditionalGenerator(z_dim=8, n_classes=3, width=TINY, resolution=64)
    assert small(torch.randn(2, 8), torch.tensor([0, 2])).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="exactly one of n_classes"):
        ConditionalGenerator(n_classes=3, instance_dim=4)
    with pytest.raises(ValueError, match="exactly one of n_classes"):
        ConditionalGenerator()
    with pytest.raises(AssertionError, match="class labels"):
        small(torch.randn(2, 8), torch.zeros(2, 3))


@pytest.mark.parametrize("kind", ["class", "instance"])
def test_projection_discriminator_matches_a_hand_computation(kind):
    torch.manual_seed(0)
    if kind == "class":
        D = projection_discriminator("sndcgan", width=TINY, n_classes=5, resolution=16)
        c = torch.tensor([0, 3, 3, 4])
    else:
        D = projection_discriminator("sndcgan", width=TINY, instance_dim=6, resolution=16)
        c = torch.randn(4, 6)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    D.eval()  # spectral norm uses its stored estimate: the same weights in every call below
    with torch.no_grad():
        phi = D.features(x)
        psi_w, psi_b = D.psi.weight, D.psi.bias  # the normalised weight, through the parametrization
        table = D.embed.embed.weight  # (n_classes, feature_dim) or (feature_dim, instance_dim)
        embedded = table[c] if kind == "class" else c @ table.T
        expected = [float(phi[i] @ psi_w[0] + psi_b[0] + embedded[i] @ phi[i]) for i in range(4)]
        logits = D(x, c)
    assert logits.shape == (4,)
    torch.testing.assert_close(logits, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert phi.shape == (4, D.feature_dim) and D.feature_dim == 8 * 4 * 2 * 2


def test_projection_discriminator_is_spectrally_normalised_and_trains_every_parameter():
    torch.manual_seed(0)
    D = projection_discriminator("snresnet18", width=TINY, n_classes=7)
    for m in (D.psi, D.embed.embed):
        assert parametrize.is_parametrized(m, "weight")
        sigma = torch.linalg.matrix_norm(m.weight.detach(), ord=2).item()
        assert sigma == pytest.approx(1.0, rel=0.05)
    x = torch.rand(3, 3, 64, 64) * 2 - 1  # SNResNet-18 pools: any resolution
    D(x, torch.tensor([0, 6, 2])).sum().backward()
    for name, p in D.named_parameters():  # the unseen classes' rows too, through the spectral norm
        assert p.grad is not None and p.grad.abs().sum() > 0, f"D.{name} got no gradient"


def test_projection_discriminator_rejects_bad_backbones_and_conditions():
    with pytest.raises(ValueError, match="linear_head=False"):
        ProjectionDiscriminator(SNDCGANDiscriminator(width=TINY, resolution=16), n_classes=3)
    with pytest.raises(TypeError, match="feature_dim"):
        ProjectionDiscriminator(torch.nn.Linear(3, 3), n_classes=3)
    with pytest.raises(ValueError, match="arch"):
        projection_discriminator("stylegan2", n_classes=3)
    D = projection_discriminator(width=TINY, instance_dim=4, resolution=16)
    with pytest.raises(AssertionError, match="features"):
        D(torch.zeros(2, 3, 16, 16), torch.zeros(2, 5))


def test_conditional_gan_pair_is_small_at_the_mini_width():
    G, D = conditional_gan("sndcgan", width=0.5, instance_dim=128, resolution=32)
    n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    assert n_g < 3_000_000 and n_d < 2_000_000  # a few seconds a step on a CPU
    z, h = torch.randn(2, 128), torch.nn.functional.normalize(torch.randn(2, 128), dim=1)
    assert D(G(z, h), h).shape == (2,)
