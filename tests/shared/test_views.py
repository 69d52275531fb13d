"""shared.views: statistics, torchvision equivalence, independence, determinism, DiffAugment references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from shared import views
from shared.views import SimCLRViewConfig, SimCLRViews


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b: int = 16, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=gen(seed))


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-9


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


# ---------------------------------------------------------------- config

def test_config_defaults_are_simclr_and_from_strength_scales_jitter():
    cfg = SimCLRViewConfig()
    assert (cfg.crop_scale, cfg.flip_p, cfg.jitter_p, cfg.grayscale_p, cfg.blur_p) == ((0.08, 1.0), 0.5, 0.8, 0.2, 0.5)
    assert (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) == (0.8, 0.8, 0.8, 0.2)
    half = SimCLRViewConfig.from_strength(0.5, blur=False, grayscale_p=0.1)
    assert half.brightness == half.contrast == half.saturation == pytest.approx(0.4)
    assert half.hue == pytest.approx(0.1) and half.blur_p == 0.0 and half.grayscale_p == 0.1
    assert SimCLRViewConfig(crop_scale=[0.2, 1]).crop_scale == (0.2, 1.0)  # YAML lists become tuples


@pytest.mark.parametrize("field, value", [
    ("flip_p", 1.5), ("jitter_p", -0.1), ("hue", 0.6), ("brightness", -1.0), ("crop_scale", (0.9, 0.1)),
    ("crop_scale", (0.1, 1.5)), ("crop_ratio", (0.0, 1.0)), ("blur_sigma", (1.0,)), ("blur_kernel_frac", 0.0),
    ("solarize_threshold", 2.0), ("grayscale_p", "0.2"),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SimCLRViewConfig(**{field: value})


def test_blur_kernel_size_is_odd_tenth_of_side():
    assert [views.blur_kernel_size(0.1, s) for s in (32, 64, 96, 224)] == [3, 7, 9, 23]


# ---------------------------------------------------------------- crop and flip

def test_crop_boxes_respect_scale_and_ratio():
    # A large virtual image keeps torchvision's rounding of the sides below 1% of the area.
    n, side, scale, ratio = 4000, 1000, (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = views.sample_crop_boxes(n, side, side, scale, ratio, gen(0)).T.double()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= side).all() and (left + w <= side).all()
    area = h * w / side**2
    assert (area >= scale[0] - 0.01).all() and (area <= scale[1]).all()
    assert (w / h >= ratio[0] - 0.01).all() and (w / h <= ratio[1] + 0.01).all()
    assert area.min() < 0.1 and area.max() > 0.9  # spread over the range, not stuck at one size


def test_crop_boxes_fall_back_to_torchvision_central_crop():
    # No box of area >= 90% with aspect 3-4 fits a square image, so every sample falls back.
    boxes = views.sample_crop_boxes(8, 40, 40, (0.9, 1.0), (3.0, 4.0), gen(0))
    expected = RandomResizedCrop.get_params(torch.zeros(1, 40, 40), [0.9, 1.0], [3.0, 4.0])
    assert (boxes == torch.tensor(expected)).all()


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_random_resized_crop_samples_its_box(flip_p):
    # Channel 0 holds each pixel's column index / (W - 1), channel 1 its row / (H - 1): bilinear
    # sampling of a ramp returns the sampled coordinate, so the output says exactly which box was read.
    b, height, width, (oh, ow) = 32, 20, 28, (12, 16)
    rows, cols = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    x = torch.stack([cols / (width - 1), rows / (height - 1)]).expand(b, 2, height, width).contiguous()
    out = views.random_resized_crop(x, (0.1, 1.0), (0.5, 2.0), flip_p, (oh, ow), gen(3))
    top, left, h, w = views.sample_crop_boxes(b, height, width, (0.1, 1.0), (0.5, 2.0), gen(3)).T.float()
    j = torch.arange(ow).float()
    j = ow - 1 - j if flip_p else j
    want_cols = (left[:, None] + (j + 0.5) * w[:, None] / ow - 0.5).clamp(0, width - 1)
    want_rows = (top[:, None] + (torch.arange(oh) + 0.5) * h[:, None] / oh - 0.5).clamp(0, height - 1)
    assert torch.allclose(out[:, 0] * (width - 1), want_cols[:, None, :].expand(b, oh, ow), atol=1e-4)
    assert torch.allclose(out[:, 1] * (height - 1), want_rows[:, :, None].expand(b, oh, ow), atol=1e-4)


def test_flip_rate_matches_flip_p():
    n, p = 400, 0.3
    x = rand_images(n, 3, 8)  # random images are left/right asymmetric
    out = views.random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), flip_p=p, generator=gen(1))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same ^ flipped).all()  # a full-image crop is the image or its mirror, nothing else
    assert within_binomial(int(flipped.sum()), n, p)


# ---------------------------------------------------------------- colour

@pytest.mark.parametrize("name, factors, atol", [
    ("brightness", [0.2, 0.9, 1.0, 1.7], 1e-6),
    # torchvision's luma weighs red 0.2989, ours 0.299: results differ by up to 1e-4 * |1 - factor|.
    ("contrast", [0.2, 0.9, 1.0, 1.7], 2e-4),
    ("saturation", [0.0, 0.6, 1.0, 1.8], 2e-4),
    ("hue", [-0.5, -0.13, 0.0, 0.31], 1e-5),
])
def test_adjust_ops_match_torchvision(name, factors, atol):
    x = rand_images(4, 3, 16)
    ours = getattr(views, f"_adjust_{name}")(x, torch.tensor(factors))
    tv = getattr(TF, f"adjust_{name}")
    want = torch.stack([tv(img, f) for img, f in zip(x, factors)])
    assert (ours - want).abs().max() <= atol


def test_color_jitter_matches_torchvision_per_sample_order():
    x, args = rand_images(64, 3, 12), (0.8, 0.8, 0.8, 0.2, 0.7)
    out = views.color_jitter(x, *args, generator=gen(5))
    factors, position = views._jitter_params(64, *args, x, gen(5))  # the same draws as the call above
    tv_ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)

    def reference(order):
        return torch.stack([_apply(img, f, order(pos)) for img, f, pos in zip(x, factors.tolist(), position)])

    def _apply(img, f, op_order):
        for j in op_order:
            img = tv_ops[j](img, f[j])
        return img

    want = reference(lambda pos: pos.argsort().tolist())
    assert (out - want).abs().max() < 2e-3
    untouched = (factors == torch.tensor([1.0, 1.0, 1.0, 0.0])).all(dim=1)
    assert (out[untouched] == x[untouched]).all() and within_binomial(int((~untouched).sum()), 64, 0.7)
    # The order matters for these factors, so a fixed-order implementation would fail above.
    fixed = reference(lambda pos: [0, 1, 2, 3])
    assert (out - fixed).abs().max() > 0.05


def test_brightness_jitter_factors_cover_range():
    n, b, p = 512, 0.5, 0.6
    x = torch.full((n, 3, 4, 4), 0.4)
    out = views.color_jitter(x, b, 0.0, 0.0, 0.0, p, generator=gen(2))
    factor = out[:, 0, 0, 0] / 0.4
    assert torch.allclose(out, factor.view(-1, 1, 1, 1) * x)  # one factor per image
    assert factor.min() >= 1 - b - 1e-6 and factor.max() <= 1 + b + 1e-6
    assert factor.min() < 1 - 0.9 * b and factor.max() > 1 + 0.9 * b
    assert within_binomial(int((factor != 1).sum()), n, p)


def test_grayscale_rate_and_values():
    n, p = 400, 0.25
    x = rand_images(n, 3, 4)
    out = views.random_grayscale(x, p, gen(4))
    gray = (out.amax(dim=1) == out.amin(dim=1)).flatten(1).all(dim=1)
    assert within_binomial(int(gray.sum()), n, p)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(out[gray, 0], luma[gray], atol=1e-6) and (out[~gray] == x[~gray]).all()
    one = rand_images(8, 1, 4)
    assert (views.random_grayscale(one, 1.0) == one).all()


def test_solarize_rate_and_threshold():
    n, p = 400, 0.4
    x = torch.cat([torch.full((n, 1, 2, 2), 0.8), torch.full((n, 1, 2, 2), 0.3)], dim=1)
    out = views.solarize(x, p, 0.5, gen(6))
    hit = torch.isclose(out[:, 0, 0, 0], torch.tensor(0.2))
    assert within_binomial(int(hit.sum()), n, p)
    assert (out[:, 1] == 0.3).all() and (out[~hit] == x[~hit]).all()


def test_gaussian_blur_matches_torchvision_and_varies_sigma():
    x = rand_images(4, 3, 16)
    out = views.gaussian_blur(x, 1.0, (1.3, 1.3), 5, gen(0))
    assert torch.allclose(out, TF.gaussian_blur(x, [5, 5], [1.3, 1.3]), atol=1e-6)
    assert (views.gaussian_blur(x, 0.0, (0.1, 2.0), 5) == x).all()
    # Per-sample sigma: sigma ~ U(0.1, 2.0) is the call's first draw.
    blurred = views.gaussian_blur(x, 1.0, (0.1, 2.0), 5, gen(1))
    sigmas = (0.1 + 1.9 * torch.rand(4, generator=gen(1))).tolist()
    want = torch.stack([TF.gaussian_blur(img, [5, 5], [s, s]) for img, s in zip(x, sigmas)])
    assert torch.allclose(blurred, want, atol=1e-6) and len(set(sigmas)) == 4
    assert views.gaussian_blur(torch.ones(64, 3, 8, 8), 1.0, (0.1, 2.0), 3, gen(2)).max() <= 1  # no rounding past 1
    with pytest.raises(ValueError, match="kernel_size"):
        views.gaussian_blur(x, 1.0, (1.0, 1.0), 4)


# ---------------------------------------------------------------- SimCLR views

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("uint8", [False, True])
def test_views_dtype_range_shape(channels, uint8):
    x = rand_images(16, channels, 32)
    if uint8:
        x = (x * 255).round().to(torch.uint8)
    cfg = SimCLRViewConfig(solarize_p=0.5)
    out = SimCLRViews(cfg, n_views=3)(x, gen(0))
    assert len(out) == 3
    for v in out:
        assert v.dtype == torch.float32 and v.shape == (16, channels, 32, 32)
        assert v.min() >= 0 and v.max() <= 1
    crop = views.random_resized_crop(x.float() / 255 if uint8 else x, (0.08, 1.0), (0.75, 4 / 3), 0.5, 24)
    assert crop.shape == (16, channels, 24, 24) and crop.min() >= 0 and crop.max() <= 1
    with pytest.raises(ValueError, match="float images"):
        views.simclr_view(x.to(torch.uint8), cfg)


def test_identical_images_get_different_views():
    x = rand_images(1, 3, 32).expand(32, -1, -1, -1)
    v = views.simclr_view(x, SimCLRViewConfig(), gen(0)).flatten(1)
    assert torch.cdist(v, v).add(torch.eye(32)).min() > 1e-3  # no two samples augmented alike


def test_per_sample_parameters_are_uncorrelated():
    n = 2000
    bound = 4 / math.sqrt(n)
    # Brightness-only views of a constant image: each view's value is its brightness factor.
    cfg = SimCLRViewConfig(contrast=0.0, saturation=0.0, hue=0.0, jitter_p=1.0, grayscale_p=0.0, blur_p=0.0)
    v1, v2 = SimCLRViews(cfg)(torch.full((n, 3, 4, 4), 0.5), gen(0))
    f1, f2 = v1[:, 0, 0, 0], v2[:, 0, 0, 0]
    assert abs(corr(f1, f2)) < bound and abs(corr(f1[1:], f1[:-1])) < bound
    _, _, h, w = views.sample_crop_boxes(n, 32, 32, (0.08, 1.0), (0.75, 4 / 3), gen(1)).T.float()
    area = h * w
    assert abs(corr(area[1:], area[:-1])) < bound


def test_same_seed_same_views_different_seed_different():
    x, cfg = rand_images(16, 3, 32), SimCLRViewConfig(solarize_p=0.2)
    a, b = SimCLRViews(cfg)(x, gen(7)), SimCLRViews(cfg)(x, gen(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])  # the two views of one call differ
    assert not torch.equal(a[0], SimCLRViews(cfg)(x, gen(8))[0])
    torch.manual_seed(3)
    g1 = views.simclr_view(x, cfg)
    torch.manual_seed(3)
    assert torch.equal(g1, views.simclr_view(x, cfg))  # the global RNG is reproducible too


def test_simclr_view_gradients_reach_images():
    x = rand_images(8, 3, 32).requires_grad_()
    cfg = SimCLRViewConfig(jitter_p=1.0, grayscale_p=0.5, blur_p=1.0, solarize_p=0.5)
    views.simclr_view(x, cfg, gen(0)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().flatten(1).sum(1) > 0).all()


# ---------------------------------------------------------------- DiffAugment

def test_diff_color_matches_official_formula():
    x = rand_images(8, 3, 8) * 2 - 1
    out = views.diff_augment(x, "color", gen(0))
    g = gen(0)
    want = []
    u_b, u_s, u_c = (torch.rand(8, generator=g) for _ in range(3))  # brightness, saturation, contrast draws
    for i, img in enumerate(x):
        img = img + (u_b[i] - 0.5)
        img = (img - img.mean(0, keepdim=True)) * (2 * u_s[i]) + img.mean(0, keepdim=True)
        want.append((img - img.mean()) * (u_c[i] + 0.5) + img.mean())
    assert torch.allclose(out, torch.stack(want), atol=1e-5)


def test_diff_translation_is_a_zero_filled_shift():
    b, size = 64, 16
    x = 0.5 + 0.5 * rand_images(b, 3, size)  # no zeros in the input, so zeros mark the fill
    out = views.rand_translation(x, 0.125, gen(1))
    g, s = gen(1), 2  # s = round(0.125 * 16)
    dy, dx = (torch.randint(-s, s + 1, (b, 1), generator=g).squeeze(1) for _ in range(2))
    assert dy.abs().max() == s and dx.abs().max() == s and (dy != dx).any()
    pad = F.pad(x, (s, s, s, s))
    for i in range(b):
        r, c = s + int(dy[i]), s + int(dx[i])
        assert torch.equal(out[i], pad[i, :, r:r + size, c:c + size])  # out(i, j) = x(i + dy, j + dx)
        zeros = (out[i, 0] == 0).sum().item()
        assert zeros == size * size - (size - abs(int(dy[i]))) * (size - abs(int(dx[i])))


def test_translation_reflect_fill_is_numpy_symmetric_padding():
    b, height, width = 64, 8, 12  # non-square: the row and column shifts use their own sides
    x = rand_images(b, 3, 12)[:, :, :height]
    out = views.rand_translation(x, 0.5, gen(3), fill="reflect")
    g, sy, sx = gen(3), 4, 6  # s = round(0.5 * side): shifts up to half the side, both ways
    dy = torch.randint(-sy, sy + 1, (b,), generator=g)
    dx = torch.randint(-sx, sx + 1, (b,), generator=g)
    assert dy.abs().max() == sy and dx.abs().max() == sx
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (sy, sy), (sx, sx)), mode="symmetric")  # the edge repeated
    for i in range(b):
        r, c = sy + int(dy[i]), sx + int(dx[i])
        np.testing.assert_array_equal(out[i].numpy(), padded[i, :, r:r + height, c:c + width])
    # the same shifts as the zero fill, which differs only outside the image
    zero = views.rand_translation(x, 0.5, gen(3))
    for i in range(b):
        rows = slice(max(-int(dy[i]), 0), height - max(int(dy[i]), 0))
        cols = slice(max(-int(dx[i]), 0), width - max(int(dx[i]), 0))
        assert torch.equal(out[i, :, rows, cols], zero[i, :, rows, cols])
    # a full-side shift still reads the mirrored image; a longer one, or an unknown fill, fails loudly
    full = views.rand_translation(x[:, :, :, :height], 1.0, gen(4), fill="reflect")
    assert full.shape == (b, 3, height, height)
    with pytest.raises(ValueError, match="fill 'reflect'"):
        views.rand_translation(x, 1.5, fill="reflect")
    with pytest.raises(ValueError, match="fill must be"):
        views.rand_translation(x, fill="wrap")


def test_translation_reflect_of_a_known_row():
    x = torch.arange(1.0, 9.0).view(1, 1, 1, 8).expand(16, 1, 8, 8).contiguous()  # every row 1..8
    out = views.rand_translation(x, 0.25, gen(0), fill="reflect")
    g = gen(0)
    torch.randint(-2, 3, (16, 1), generator=g)  # dy is drawn first
    dx = torch.randint(-2, 3, (16, 1), generator=g).squeeze(1)
    rows = {-2: [2, 1, 1, 2, 3, 4, 5, 6], -1: [1, 1, 2, 3, 4, 5, 6, 7], 0: list(range(1, 9)),
            1: [2, 3, 4, 5, 6, 7, 8, 8], 2: [3, 4, 5, 6, 7, 8, 8, 7]}
    assert set(dx.tolist()) == set(rows)
    for i in range(16):
        assert out[i, 0, 0].tolist() == rows[int(dx[i])]  # rows are all alike: dy moves nothing


def test_diff_cutout_zeroes_one_square():
    b, size, ratio = 64, 16, 0.5
    x = 0.5 + 0.5 * rand_images(b, 3, size)
    out = views.rand_cutout(x, ratio, gen(2))
    g, cut = gen(2), 8
    cy, cx = (torch.randint(0, size + 1 - cut % 2, (b, 1), generator=g).squeeze(1) for _ in range(2))
    over_edge = 0
    for i in range(b):
        top, left = int(cy[i]) - cut // 2, int(cx[i]) - cut // 2
        mask = torch.ones(size, size)
        mask[max(top, 0):top + cut, max(left, 0):left + cut] = 0
        assert torch.equal(out[i], x[i] * mask)
        over_edge += int(mask.sum() > size * size - cut * cut)
        assert (out[i] == 0).all(0).sum() == (mask == 0).sum() > 0
    assert 0 < over_edge < b  # both inside and clipped squares were exercised


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diff_augment_gradients_reach_images(policy):
    x = (rand_images(8, 3, 16) * 2 - 1).requires_grad_()
    weights = torch.rand(8, 3, 16, 16, generator=gen(9))
    (views.diff_augment(x, policy, gen(0)) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().flatten(1).sum(1) > 0).all()


def test_diff_augment_policy_parsing():
    x = rand_images(4, 3, 8) * 2 - 1
    with pytest.raises(ValueError, match="color.*cutout.*translation"):
        views.diff_augment(x, "color,rotate")
    assert torch.equal(views.diff_augment(x, ""), x)
    g = gen(4)
    chained = views.rand_cutout(views.rand_translation(views.rand_contrast(views.rand_saturation(
        views.rand_brightness(x, g), g), g), generator=g), generator=g)
    assert torch.equal(views.diff_augment(x, "color, translation, cutout", gen(4)), chained)
