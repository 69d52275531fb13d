"""The image statistics of papers/contrad/diagnose.py against a naive per-pixel reference (colorsys, numpy)."""
import colorsys

import numpy as np
import pytest
import torch

from papers.contrad.diagnose import STATS, checkerboard_in_view, image_stats
from shared.views import SimCLRViewConfig


def naive_stats(x: np.ndarray) -> dict[str, float]:
    f = x.astype(np.float64) / 255
    n, _, h, w = f.shape
    saturation = [colorsys.rgb_to_hsv(*f[i, :, r, c])[1] for i in range(n) for r in range(h) for c in range(w)]
    diffs = []
    for i in range(n):
        for ch in range(3):
            for r in range(h):
                for c in range(w):
                    if r + 1 < h:
                        diffs.append(abs(f[i, ch, r + 1, c] - f[i, ch, r, c]))
                    if c + 1 < w:
                        diffs.append(abs(f[i, ch, r, c + 1] - f[i, ch, r, c]))
    checker = [abs(f[i, ch, r, c] - f[i, ch, r, c + 1] - f[i, ch, r + 1, c] + f[i, ch, r + 1, c + 1]) / 4
               for i in range(n) for ch in range(3) for r in range(h - 1) for c in range(w - 1)]
    return {"checkerboard": float(np.mean(checker)),
            "mean_r": f[:, 0].mean(), "mean_g": f[:, 1].mean(), "mean_b": f[:, 2].mean(),
            "std_r": f[:, 0].std(ddof=1), "std_g": f[:, 1].std(ddof=1), "std_b": f[:, 2].std(ddof=1),
            "saturation": float(np.mean(saturation)),
            "contrast": float(np.mean([f[i].std(ddof=1) for i in range(n)])), "sharpness": float(np.mean(diffs))}


def test_image_stats_match_a_per_pixel_reference():
    x = np.random.default_rng(0).integers(0, 256, size=(3, 3, 5, 4), dtype=np.uint8)
    x[0, :, 0, 0] = 0  # a black pixel: saturation 0, as colorsys has it
    got, want = image_stats(torch.from_numpy(x)), naive_stats(x)
    assert list(got) == list(STATS)
    for key in STATS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_image_stats_see_a_colour_shift_and_a_blur():
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 200, size=(4, 3, 8, 8), dtype=np.uint8))
    shifted = x.clone()
    shifted[:, 0] += 50
    assert image_stats(shifted)["mean_r"] - image_stats(x)["mean_r"] == pytest.approx(50 / 255)
    flat = x.float().mean(dim=(2, 3), keepdim=True).expand_as(x).round().to(torch.uint8)
    assert image_stats(flat)["sharpness"] == 0 and image_stats(x)["sharpness"] > 0.1
    with pytest.raises(ValueError, match="uint8"):
        image_stats(x.float())


def test_checkerboard_sees_the_pixel_period_pattern_and_not_edges():
    r, c = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    ramp = (r * 10 + c * 20).expand(2, 3, 8, 8).to(torch.uint8)          # sharp, but no checkerboard
    edge = ((c >= 4) * 200).expand(2, 3, 8, 8).to(torch.uint8)
    checker = (100 + 51 * (1 - 2 * ((r + c) % 2))).expand(2, 3, 8, 8).to(torch.uint8)  # 100 +- 51
    assert image_stats(ramp)["checkerboard"] == pytest.approx(0, abs=1e-12) and image_stats(ramp)["sharpness"] > 0.05
    assert image_stats(edge)["checkerboard"] == pytest.approx(0, abs=1e-12)
    assert image_stats(checker)["checkerboard"] == pytest.approx(51 / 255)


def test_checkerboard_in_view_is_the_statistic_of_the_view():
    r, c = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = (100 + 51 * (1 - 2 * ((r + c) % 2))).expand(8, 3, 16, 16).to(torch.uint8).contiguous()
    identity = SimCLRViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                                grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    assert checkerboard_in_view(checker, identity) == pytest.approx(image_stats(checker)["checkerboard"], abs=1e-3)
    crops = SimCLRViewConfig(crop_scale=(0.2, 0.5), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                             solarize_p=0.0)  # upsampled crops: bilinear interpolation smooths the pattern
    seen = checkerboard_in_view(checker, crops)
    assert seen < 0.5 * image_stats(checker)["checkerboard"]
    assert checkerboard_in_view(checker, crops, seed=0) == seen != checkerboard_in_view(checker, crops, seed=1)
