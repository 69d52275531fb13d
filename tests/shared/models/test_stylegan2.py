"""StyleGAN2: shapes, the presets' channel layouts, modulated conv and minibatch-stddev against naive loops."""
import copy

import pytest
import torch
import torch.nn.functional as F

from shared.models.stylegan2 import (PRESETS, Discriminator, Generator, StyleGAN2Config, blur2d, fir_filter,
                                     minibatch_stddev, modulated_conv2d, stylegan2, stylegan2_cifar, upsample2d)


def smoke(resolution=32, **kw):
    torch.manual_seed(0)
    return stylegan2_cifar("smoke", resolution=resolution, **kw)


@pytest.mark.parametrize("scale, resolution", [("smoke", 32), ("smoke", 16), ("mini", 32)])
def test_generator_and_discriminator_shapes(scale, resolution):
    torch.manual_seed(0)
    G, D = stylegan2_cifar(scale, resolution=resolution)
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        x = G(z)
        assert x.shape == (4, 3, resolution, resolution)
        assert D(x).shape == (4,)
        assert D.features(x).shape == (4, D.feature_dim) == (4, PRESETS[scale].channel_max)
    assert G.num_ws == 2 * (resolution.bit_length() - 1) - 2  # 2 log2(res) - 2


def test_preset_channel_layouts_match_the_official_cifar_configs():
    def g_channels(G):
        return [b.conv1.weight.shape[0] for b in G.blocks]
    with torch.device("meta"):  # full-size models without allocating them
        G, D = stylegan2(PRESETS["paper"])  # DiffAugment TF: fmap_base 2048 -> 512, 512, 256, 128
    assert g_channels(G) == [512, 512, 256, 128]
    assert [b.conv0.weight.shape[1] for b in D.blocks] == [128, 256, 512] and D.feature_dim == 512
    assert len(G.mapping.layers) == 8 and G.z_dim == G.w_dim == 512 and D.mbstd_group == 4
    assert all(b.skip is not None for b in D.blocks)
    with torch.device("meta"):
        G, D = stylegan2(PRESETS["ada_cifar"])  # ADA --cfg=cifar: 512 everywhere, map 2, mbstd 32, "orig" D
    assert g_channels(G) == [512] * 4 and len(G.mapping.layers) == 2 and D.mbstd_group == 32
    assert all(b.skip is None for b in D.blocks)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Config(resolution=24)
    with pytest.raises(ValueError, match="unknown StyleGAN2 preset"):
        stylegan2_cifar("huge")


def test_generator_output_is_of_unit_order_and_truncation_to_zero_gives_the_mean_image():
    G, _ = smoke()
    with torch.no_grad():
        x = G(torch.randn(32, G.z_dim))
        # No tanh: StyleGAN2 is only trained towards [-1, 1]; at init it is of that order.
        assert torch.isfinite(x).all() and 0.3 < x.std() < 3 and x.abs().median() < 1.5
        G.train()(torch.randn(64, G.z_dim))  # moves w_avg away from 0
        y = G.eval()(torch.randn(3, G.z_dim), truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(y[0], y[1], atol=1e-5) and torch.allclose(y[0], y[2], atol=1e-5)


def test_w_avg_moves_in_training_mode_only():
    G, _ = smoke()
    with torch.no_grad():
        G.eval()(torch.randn(8, G.z_dim))
        assert torch.count_nonzero(G.w_avg) == 0
        w = G.mapping(z := torch.randn(8, G.z_dim))
        G.train()(z)
    torch.testing.assert_close(G.w_avg, (1 - G.w_avg_beta) * w.mean(0))


def test_style_mixing_switches_to_a_second_w_after_one_crossover():
    G, _ = smoke()
    z = torch.randn(16, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)
        ws = G.eval().ws(z, style_mixing_prob=1.0)
        plain = G.ws(z)
    assert torch.equal(plain, w.unsqueeze(1).expand_as(plain))
    for b in range(16):
        assert torch.equal(ws[b, 0], w[b])  # the crossover is at layer >= 1
        changed = (ws[b] != w[b]).any(dim=1)
        c = int(changed.float().argmax())
        assert c >= 1 and changed[c:].all() and not changed[:c].any()
        assert (ws[b, c:] == ws[b, c]).all()


def naive_modulated_conv(x, weight, styles, demodulate):
    out = []
    for b in range(x.shape[0]):
        w = weight * styles[b].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        out.append(F.conv2d(x[b:b + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate, k", [(True, 3), (False, 1)])
def test_modulated_conv_matches_a_per_sample_loop(fused, demodulate, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 5, k, k, generator=g, dtype=torch.float64)
    styles = torch.rand(3, 5, generator=g, dtype=torch.float64) * 2 + 0.1
    expected = naive_modulated_conv(x, weight, styles, demodulate)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles, demodulate, fused=fused), expected)


def test_demodulation_gives_unit_variance_outputs_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 48, 48, generator=g)
    weight = torch.randn(8, 16, 3, 3, generator=g) * 5  # any scale: demodulation removes it
    styles = torch.rand(2, 16, generator=g) * 3
    y = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # away from the zero padding
    std = y.std(dim=(2, 3))
    assert ((std > 0.9) & (std < 1.1)).all(), std


def naive_mbstd(x, group_size):
    n = x.shape[0]
    g = min(group_size, n)
    m = n // g
    stats = []
    for i in range(n):
        members = x[i % m::m]  # strided groups, as StyleGAN: sample n is in group n mod (N / G)
        assert len(members) == g
        var = ((members - members.mean(0)) ** 2).mean(0)
        stats.append(torch.sqrt(var + 1e-8).mean())
    s = torch.stack(stats).view(n, 1, 1, 1).expand(n, 1, *x.shape[2:])
    return torch.cat([x, s], dim=1)


@pytest.mark.parametrize("n, group", [(8, 4), (6, 2), (3, 4)])
def test_minibatch_stddev_matches_a_naive_loop(n, group):
    x = torch.randn(n, 5, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(minibatch_stddev(x, group), naive_mbstd(x, group))


def test_minibatch_stddev_rejects_an_indivisible_batch():
    with pytest.raises(ValueError, match="not divisible"):
        minibatch_stddev(torch.randn(6, 2, 4, 4), 4)


def test_fir_resampling():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    up = upsample2d(x, fir_filter())
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert up.shape == (2, 3, 16, 16)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1])  # borders: zero vs replicate
    const = torch.ones(1, 1, 8, 8)
    assert torch.allclose(blur2d(const, fir_filter(), padding=2)[..., 2:-2, 2:-2], torch.ones(1, 1, 5, 5))  # gain 1
    D = Discriminator(16, 3, channel_base=64, channel_max=16, mbstd_group=2)  # channels 4, 8, 16 at 16, 8, 4
    assert D.blocks[0](torch.randn(2, 4, 16, 16)).shape == (2, 8, 8, 8)


def test_channels_last_and_cpu_bf16_autocast_run():
    G, D = smoke(16)
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        ref = G.eval()(z, noise_mode="const")
        Gc = copy.deepcopy(G).to(memory_format=torch.channels_last)
        Dc = copy.deepcopy(D).to(memory_format=torch.channels_last)
        torch.testing.assert_close(Gc(z, noise_mode="const"), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(Dc(ref.contiguous(memory_format=torch.channels_last)), D(ref), atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the CUDA path uses bf16 autocast the same way
        x = G.train()(z, style_mixing_prob=0.9)
        logits = D(x)
    assert logits.shape == (4,) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(p.grad is not None for p in G.parameters())


def test_generator_default_arguments_are_the_paper_preset():
    with torch.device("meta"):
        G, D = Generator(), Discriminator()
        Gp, Dp = stylegan2(PRESETS["paper"])
    assert sum(p.numel() for p in G.parameters()) == sum(p.numel() for p in Gp.parameters())
    assert sum(p.numel() for p in D.parameters()) == sum(p.numel() for p in Dp.parameters())


def test_a_headless_discriminator_gives_the_flattened_conv_output_and_has_no_output_layers():
    torch.manual_seed(0)
    _, D = stylegan2_cifar("smoke")
    torch.manual_seed(0)
    _, trunk = stylegan2_cifar("smoke", d_head=False)
    c4 = PRESETS["smoke"].channel_max
    assert (trunk.fc, trunk.out, trunk.feature_dim) == (None, None, c4 * 4 * 4)
    # the same trunk (the shared layers draw the same initial weights): D's features are its FC over the trunk's
    assert {n for n, _ in D.named_parameters()} - {n for n, _ in trunk.named_parameters()} == {
        "fc.weight", "fc.bias", "out.weight", "out.bias"}
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        flat = trunk.features(x)
        assert flat.shape == (4, c4 * 16)
        torch.testing.assert_close(D.fc(flat), D.features(x))
    with pytest.raises(RuntimeError, match="head=False"):
        trunk(x)
