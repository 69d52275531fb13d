"""SNDCGAN / SNResNet-18: shapes, paper-size layout, spectral norm against the exact top singular value, gradients."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from shared.models.sngan import SNDCGANDiscriminator, SNDCGANGenerator, SNResNetDiscriminator, sngan

TINY = 1 / 16  # 4 base channels: seconds on the CPU


def sn_layers(module):
    return [m for m in module.modules() if parametrize.is_parametrized(m, "weight")]


def largest_singular_value(w):
    return torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), ord=2).item()


def test_generator_output_shape_and_range():
    torch.manual_seed(0)
    G = SNDCGANGenerator(width=TINY)
    assert G.z_dim == 128
    x = G(torch.randn(4, 128))
    assert x.shape == (4, 3, 32, 32) and x.std() > 0
    with torch.no_grad():
        G.main[-2].weight.mul_(1e3)  # pre-activations far outside [-1, 1]: tanh must bound them
    x = G(torch.randn(4, 128))
    assert x.abs().max() <= 1 and x.abs().max() > 0.99
    with pytest.raises(AssertionError, match="expected z"):
        G(torch.randn(4, 64))


def test_paper_size_layout_on_the_meta_device():
    with torch.device("meta"):
        G, D = sngan("sndcgan")
        _, R = sngan("snresnet18")
    assert (G.linear.in_features, G.linear.out_features) == (128, 512 * 4 * 4)
    assert [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)] == [256, 128, 64, 3]
    assert D.feature_dim == 512 * 4 * 4 and R.feature_dim == 512
    assert [m.out_channels for m in D.main if isinstance(m, nn.Conv2d)] == [64, 128, 128, 256, 256, 512, 512]
    assert [len(s) for s in (R.layer1, R.layer2, R.layer3, R.layer4)] == [2, 2, 2, 2]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) for m in [*D.modules(), *R.modules()])
    slopes = {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


@pytest.mark.parametrize("arch, feature_dim", [("sndcgan", 8 * 4 * 4 * 4), ("snresnet18", 32)])
def test_discriminator_shapes(arch, feature_dim):
    torch.manual_seed(0)
    _, D = sngan(arch, width=TINY)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert D.feature_dim == feature_dim
    assert D.features(x).shape == (3, feature_dim)
    assert D(x).shape == (3,)
    headless = sngan(arch, width=TINY, linear_head=False)[1]
    assert headless.linear is None and headless.features(x).shape == (3, feature_dim)
    with pytest.raises(RuntimeError, match="linear_head=False"):
        headless(x)


@pytest.mark.parametrize("arch, n_sn", [("sndcgan", 7 + 1), ("snresnet18", 1 + 16 + 3 + 1)])
def test_spectral_norm_keeps_the_largest_singular_value_near_one(arch, n_sn):
    torch.manual_seed(0)
    _, D = sngan(arch, width=TINY)
    layers = sn_layers(D)
    # every conv and linear, the 1x1 shortcuts and the output layer included
    assert len(layers) == n_sn == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in D.modules())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    opt = torch.optim.Adam(D.parameters(), lr=1e-4)
    for _ in range(3):  # the weights move; each training forward runs one power iteration
        opt.zero_grad()
        D(x).mean().backward()
        opt.step()
    with torch.no_grad():
        for _ in range(5):
            D(x)
    D.eval()  # reading .weight in eval mode uses the stored u, v without another iteration
    raw = [largest_singular_value(m.parametrizations.weight.original) for m in layers]
    normalised = [largest_singular_value(m.weight) for m in layers]
    assert any(abs(s - 1) > 0.1 for s in raw), raw  # without SN the weights are not unit-norm
    # The power-iteration estimate never exceeds sigma_max, so W / estimate has norm >= 1.
    assert all(0.999 <= s <= 1.05 for s in normalised), normalised


@pytest.mark.parametrize("arch", ["sndcgan", "snresnet18"])
def test_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    G, D = sngan(arch, width=TINY)
    D(G(torch.randn(4, G.z_dim))).mean().backward()
    for net, name_ in ((G, "G"), (D, "D")):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name_}.{name} got no gradient"


def test_init_and_width_validation():
    torch.manual_seed(0)
    D = SNDCGANDiscriminator(width=0.5)  # N(0, 0.02) weights before SN, zero biases, as the official SNDCGAN
    w = D.main[6].parametrizations.weight.original
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and (D.main[6].bias == 0).all()
    assert SNResNetDiscriminator(width=1e-3).feature_dim == 1  # widths never round to 0
    with pytest.raises(ValueError, match="width"):
        SNDCGANGenerator(width=0)
    with pytest.raises(ValueError, match="resolution"):
        SNDCGANDiscriminator(resolution=20)
    with pytest.raises(ValueError, match="discriminator"):
        sngan("resnet50")
