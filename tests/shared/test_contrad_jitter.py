"""The HSV colour jitter (ContraD's own layer, jh-jeong/ContraD augment/color_jitter.py and augment/utils.py)
against a naive per-pixel loop of the official formulas (colorsys for HSV -> RGB), its per-call op order, its
straight-through gradient, and the torchvision jitter's numbers as they were before the option existed."""
import colorsys
import math

import pytest
import torch

from shared import views
from shared.views import (HSV_HUE_TURNS, SimCLRViewConfig, SimCLRViews, color_jitter, hsv_color_jitter,
                          hsv_jitter_params, simclr_view)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b: int = 6, size: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=gen(seed))


# ---------------------------------------------------------------- the naive reference (float64, one pixel at a time)

def ref_hsv_pixel(r: float, g: float, b: float, fh: float, fs: float, fv: float) -> tuple[float, float, float]:
    """ContraD's RandomHSVFunction on one pixel: atan2 hue (augment/utils.py rgb2hsv), s and v as usual,
    hue + fh * 255/360 turns mod 1, s and v scaled and clamped; HSV -> RGB by colorsys (the hexagonal inverse)."""
    h = (math.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) % (2 * math.pi)) / (2 * math.pi)
    _, s, v = colorsys.rgb_to_hsv(r, g, b)  # s = (max - min) / max; the official 1 - min / (max + 1e-8)
    h = (h + fh * 255 / 360) % 1.0
    s = min(max(s * fs, 0.0), 1.0)
    v = min(max(v * fv, 0.0), 1.0)
    return colorsys.hsv_to_rgb(h, s, v)


def ref_hsv_image(img: list, fh: float, fs: float, fv: float) -> list:
    """img[c][i][j] -> the same layout after the HSV op."""
    rows, cols = len(img[0]), len(img[0][0])
    out = [[[0.0] * cols for _ in range(rows)] for _ in range(3)]
    for i in range(rows):
        for j in range(cols):
            rgb = ref_hsv_pixel(img[0][i][j], img[1][i][j], img[2][i][j], fh, fs, fv)
            for c in range(3):
                out[c][i][j] = rgb[c]
    return out


def ref_contrast_image(img: list, f: float) -> list:
    """Each channel around its own mean: (x - mean_c) f + mean_c, clamped to [0, 1]."""
    out = []
    for channel in img:
        pixels = [p for row in channel for p in row]
        mean = sum(pixels) / len(pixels)
        out.append([[min(max((p - mean) * f + mean, 0.0), 1.0) for p in row] for row in channel])
    return out


def ref_jitter(x: torch.Tensor, d: views.HSVJitterParams, contrast_first: bool | None = None) -> torch.Tensor:
    """The jitter of batch `x` with draws `d`, image by image; `contrast_first` overrides the drawn order."""
    first = d.contrast_first if contrast_first is None else contrast_first
    out = []
    for i, img in enumerate(x.double().tolist()):
        if d.apply[i]:
            hsv = lambda im: ref_hsv_image(im, d.hue[i].item(), d.saturation[i].item(), d.value[i].item())  # noqa: E731
            contrast = lambda im: ref_contrast_image(im, d.contrast[i].item())  # noqa: E731
            img = hsv(contrast(img)) if first else contrast(hsv(img))
        out.append(img)
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------- config

def test_jitter_option_defaults_to_torchvision_and_is_checked():
    assert SimCLRViewConfig().jitter == "torchvision" and views.JITTERS == ("torchvision", "hsv")
    assert SimCLRViewConfig(jitter="hsv").jitter == "hsv"
    with pytest.raises(ValueError, match="jitter must be one of"):
        SimCLRViewConfig(jitter="kornia")
    with pytest.raises(ValueError, match="RGB"):
        hsv_color_jitter(torch.rand(2, 1, 4, 4), 0.4, 0.4, 0.4, 0.1, 1.0)
    with pytest.raises(ValueError, match="hue"):
        hsv_color_jitter(torch.rand(2, 3, 4, 4), 0.4, 0.4, 0.4, 0.6, 1.0)


def test_contrad_uses_the_hsv_jitter_for_d_at_every_scale():
    from papers.contrad.config import PARAMS, TrainStageConfig
    from papers.contrad.method import contrad_views
    from shared import config

    assert contrad_views().jitter == "hsv" and TrainStageConfig().views.jitter == "hsv"
    for scale in ("paper", "mini", "smoke"):
        assert config.load_section(TrainStageConfig, PARAMS, "train", scale).views.jitter == "hsv", scale


# ---------------------------------------------------------------- torchvision semantics unchanged

def test_torchvision_jitter_gives_the_numbers_it_gave_before_the_option():
    # Pinned from shared/views.py before the `jitter` option was added (same seeds, same calls).
    x = torch.rand(6, 3, 8, 8, generator=gen(0))
    cfg = SimCLRViewConfig(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.0)
    v = simclr_view(x, cfg, gen(1)).double()
    assert (v.sum().item(), (v ** 2).sum().item()) == pytest.approx((487.8595738466829, 248.75265524746834), rel=1e-6)
    assert v[0, 0, 0, :3].tolist() == pytest.approx([0.5422964692115784, 0.15266671776771545, 0.08850348740816116],
                                                    abs=1e-6)
    j = color_jitter(x, 0.4, 0.4, 0.4, 0.1, 0.8, gen(2)).double()
    assert (j.sum().item(), (j ** 2).sum().item()) == pytest.approx((585.0961186103523, 390.426632995267), rel=1e-6)
    assert j[3, 1, 2, :3].tolist() == pytest.approx([0.5808252096176147, 0.9603779315948486, 0.2612995505332947],
                                                    abs=1e-6)
    both = SimCLRViews(SimCLRViewConfig())(x, generator=gen(3))
    assert [t.double().sum().item() for t in both] == pytest.approx([449.50858987495303, 493.20442159101367], rel=1e-6)


# ---------------------------------------------------------------- the HSV jitter against the naive loop

@pytest.mark.parametrize("seed", range(6))
def test_hsv_jitter_matches_the_naive_per_pixel_loop(seed):
    x = rand_images(seed=seed)
    args = (0.4, 0.4, 0.4, 0.1, 0.7)  # brightness, contrast, saturation, hue, p (p < 1: some samples untouched)
    draws = hsv_jitter_params(x.shape[0], *args, x, gen(100 + seed))
    got = hsv_color_jitter(x, *args, generator=gen(100 + seed))
    torch.testing.assert_close(got.double(), ref_jitter(x, draws), atol=2e-5, rtol=0)
    untouched = ~draws.apply
    assert torch.equal(got[untouched], x[untouched])


def test_every_image_of_a_call_shares_one_op_order_and_calls_differ():
    x = rand_images(b=8)
    args = (0.4, 0.8, 0.4, 0.1, 1.0)
    orders = set()
    for seed in range(8):
        draws = hsv_jitter_params(x.shape[0], *args, x, gen(seed))
        got = hsv_color_jitter(x, *args, generator=gen(seed)).double()
        err = {first: (got - ref_jitter(x, draws, first)).abs().amax(dim=(1, 2, 3)) for first in (True, False)}
        match = {first: err[first] < 2e-5 for first in (True, False)}
        assert bool(match[draws.contrast_first].all()), f"seed {seed}: an image used another order"
        assert not bool(match[not draws.contrast_first].any()), f"seed {seed}: the orders are not told apart"
        orders.add(draws.contrast_first)
    assert orders == {True, False}
    # the order is a fair coin per call: 400 calls
    g = gen(7)
    firsts = sum(hsv_jitter_params(4, *args, x, g).contrast_first for _ in range(400))
    assert abs(firsts / 400 - 0.5) <= 4 * math.sqrt(0.25 / 400)


def test_hue_shift_is_255_over_360_of_the_hue_factor():
    # Pure colours on the hexagon (hue a multiple of 1/12 turn): the atan2 hue is exact there.
    hues = torch.arange(12, dtype=torch.float64) / 12
    pure = torch.tensor([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues.tolist()], dtype=torch.float32)
    x = pure.view(12, 3, 1, 1).repeat(50, 1, 1, 1)  # 600 one-pixel images: contrast is the identity on them
    g = gen(0)
    draws = hsv_jitter_params(x.shape[0], 0.0, 0.0, 0.0, 0.5, 1.0, x, gen(0))
    out = hsv_color_jitter(x, 0.0, 0.0, 0.0, 0.5, 1.0, generator=g)
    recovered = torch.tensor([colorsys.rgb_to_hsv(*p)[0] for p in out.view(-1, 3).double().tolist()],
                             dtype=torch.float64)
    shift = (recovered - hues.repeat(50) + 0.5) % 1.0 - 0.5  # in (-0.5, 0.5]
    torch.testing.assert_close(shift, draws.hue.double() * 255 / 360, atol=1e-5, rtol=0)
    assert shift.abs().max() <= 0.5 * 255 / 360 + 1e-5 and shift.abs().max() > 0.9 * 0.5 * 255 / 360
    # h = 0.1: shifts within +-0.0708 turns (torchvision: +-0.1)
    d = hsv_jitter_params(2000, 0.4, 0.4, 0.4, 0.1, 1.0, x, gen(1))
    assert HSV_HUE_TURNS == 255 / 360
    assert d.hue.min() >= -0.1 and d.hue.max() <= 0.1 and d.hue.min() < -0.099 and d.hue.max() > 0.099
    for factor in (d.contrast, d.saturation, d.value):
        assert factor.min() >= 0.6 and factor.max() <= 1.4 and factor.min() < 0.61 and factor.max() > 1.39


def test_atan2_hue_agrees_with_the_hexagonal_hue_within_1_2_degrees():
    x = rand_images(b=4, size=8)
    ours = views._hue_atan2(x).flatten().double()
    hexagonal = torch.tensor([colorsys.rgb_to_hsv(*p)[0] for p in x.permute(0, 2, 3, 1).reshape(-1, 3).tolist()],
                             dtype=torch.float64)
    gap = ((ours - hexagonal + 0.5) % 1.0 - 0.5).abs() * 360
    assert gap.max() < 1.2 and gap.max() > 0.5  # the official docstring: "at most ~1.2 degrees"


def test_contrast_is_taken_around_each_channels_own_mean():
    x = torch.stack([torch.full((4, 4), 0.2), torch.full((4, 4), 0.5), torch.full((4, 4), 0.8)]).unsqueeze(0)
    x = x + 0.1 * (torch.rand(1, 3, 4, 4, generator=gen(0)) - 0.5)
    f = torch.tensor([1.3])
    ours = views._contrast_per_channel(x, f)
    torch.testing.assert_close(ours.double(), torch.tensor([ref_contrast_image(x[0].double().tolist(), 1.3)],
                                                            dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.mean(dim=(2, 3)), x.mean(dim=(2, 3)))  # channel means stay
    tv = views._adjust_contrast(x, f)  # torchvision: around the grayscale mean, so channel means move
    assert (tv.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs().max() > 0.05


# ---------------------------------------------------------------- gradients

def test_the_hsv_op_passes_gradients_straight_through():
    x = rand_images(b=3).requires_grad_(True)
    factors = [torch.tensor([0.1, -0.05, 0.0], requires_grad=True), torch.tensor([0.7, 1.3, 1.0], requires_grad=True),
               torch.tensor([1.2, 0.8, 1.0], requires_grad=True)]
    y = views._hsv_shift(x, *factors)
    upstream = torch.randn(y.shape, generator=gen(1))
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)
    assert all(f.grad is None for f in factors)
    ref = torch.tensor([ref_hsv_image(img, *(f[i].item() for f in factors))
                        for i, img in enumerate(x.detach().double().tolist())], dtype=torch.float64)
    torch.testing.assert_close(y.detach().double(), ref, atol=2e-5, rtol=0)  # and the value is the round trip's


def test_the_contrast_op_has_its_true_gradient():
    x = (0.3 + 0.4 * torch.rand(2, 3, 4, 4, generator=gen(0), dtype=torch.float64)).requires_grad_(True)
    f = torch.tensor([0.8, 1.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: views._contrast_per_channel(t, f), (x,))  # finite differences


def _contrast_vjp(x_in: torch.Tensor, f: float, w: torch.Tensor) -> torch.Tensor:
    """d/dx of sum(w * clamp((x - m) f + m, 0, 1)) per channel, m the channel mean: written out by hand."""
    mean = x_in.mean(dim=(1, 2), keepdim=True)
    pre = (x_in - mean) * f + mean
    g = w * ((pre >= 0) & (pre <= 1)).to(w.dtype)
    return f * g + (1 - f) * g.mean(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("seed", range(4))
def test_the_jitter_gradient_is_contrast_through_a_straight_through_hsv(seed):
    x = rand_images(b=6, seed=seed).requires_grad_(True)
    args = (0.4, 0.4, 0.4, 0.1, 0.5)
    draws = hsv_jitter_params(x.shape[0], *args, x, gen(seed))
    y = hsv_color_jitter(x, *args, generator=gen(seed))
    w = torch.randn(y.shape, generator=gen(50 + seed))
    y.backward(w)
    for i in range(x.shape[0]):
        if not draws.apply[i]:
            expected = w[i]  # not jittered: the identity
        else:
            # the contrast op sees x itself (contrast first) or the HSV op's output (HSV first)
            x_in = x[i] if draws.contrast_first else views._hsv_shift(
                x[i:i + 1], draws.hue[i:i + 1], draws.saturation[i:i + 1], draws.value[i:i + 1])[0]
            expected = _contrast_vjp(x_in.detach(), draws.contrast[i].item(), w[i])
        torch.testing.assert_close(x.grad[i], expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- in the views

def test_hsv_views_stay_in_range_are_seeded_and_differ_from_torchvision():
    x = rand_images(b=8, size=16).requires_grad_(True)
    cfg = SimCLRViewConfig(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.0,
                           jitter="hsv")
    a = simclr_view(x, cfg, gen(0))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, simclr_view(x, cfg, gen(0)))
    tv = simclr_view(x, SimCLRViewConfig(**{**cfg.__dict__, "jitter": "torchvision"}), gen(0))
    assert not torch.allclose(a, tv)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    both = SimCLRViews(cfg)(x.detach(), generator=gen(1))
    assert len(both) == 2 and not torch.equal(both[0], both[1])


def test_half_precision_images_are_jittered_in_float32():
    x = rand_images(b=16, size=8)
    x[0], x[1] = 0.0, 1.0  # black and white: no 0 / 0 in the saturation
    half = x.bfloat16().requires_grad_(True)
    y = hsv_color_jitter(half, 0.4, 0.4, 0.4, 0.1, 1.0, generator=gen(0))
    assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
    full = hsv_color_jitter(half.detach().float(), 0.4, 0.4, 0.4, 0.1, 1.0, generator=gen(0))
    torch.testing.assert_close(y.float(), full.bfloat16().float())  # the same draws, rounded once at the end
    y.float().sum().backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16
    assert hsv_color_jitter(x.double(), 0.4, 0.4, 0.4, 0.1, 1.0, generator=gen(0)).dtype == torch.float64
