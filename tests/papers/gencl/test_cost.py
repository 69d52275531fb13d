"""Table 4's cost stage: SSIM against scikit-image, timing at batch 1, parameter counts, and the stage end to
end on tiny stand-in models (its FID keys and labels name the detector)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from skimage.metrics import structural_similarity
from torch import nn

from papers.gencl import cost
from shared.comparison import compare
from shared.extractor import INDOMAIN_LABEL, ExtractorConfig, FeatureExtractor
from shared.view_sources import PrecomputedViews, write_precomputed


def skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=1.0, channel_axis=0)
                     for a, b in zip(x.double(), y.double())])


def structured_pair(n: int = 3, side: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth gradients and stripes, and a shifted, contrast-changed, noisy copy of them."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    base = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(12 * xx + 5 * yy)])
    x = torch.stack([base.roll(k, dims=-1) for k in range(n)])
    y = (0.8 * x.roll(2, dims=-2) + 0.1 + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("kind", ["random", "structured", "uint8"])
def test_ssim_matches_scikit_image(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "random":
        x = torch.rand(4, 3, 16, 19, generator=g)
        y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    elif kind == "structured":
        x, y = structured_pair()
    else:  # how the stage calls it: uint8 images / 255, a single channel too
        x = torch.randint(0, 256, (3, 1, 20, 20), generator=g).double() / 255
        y = torch.randint(0, 256, (3, 1, 20, 20), generator=g).double() / 255
    ours = cost.ssim(x, y).numpy()
    assert ours.shape == (x.shape[0],)
    np.testing.assert_allclose(ours, skimage_ssim(x, y), atol=1e-4, rtol=0)
    assert float(np.ptp(ours)) > 1e-3 or kind == "uint8"  # the cases differ: a mean over them would hide errors


def test_ssim_of_an_image_with_itself_is_one_and_falls_with_distortion():
    x, y = structured_pair()
    assert torch.allclose(cost.ssim(x, x), torch.ones(len(x), dtype=torch.float64), atol=1e-12)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    mild, strong = cost.ssim(x, (x + 0.05 * noise).clamp(0, 1)), cost.ssim(x, (x + 0.3 * noise).clamp(0, 1))
    assert bool((strong < mild).all()) and bool((mild < 1).all())


def test_ssim_refuses_mismatched_or_too_small_images():
    with pytest.raises(ValueError, match="one shape"):
        cost.ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        cost.ssim(torch.rand(1, 3, 10, 16), torch.rand(1, 3, 10, 16))


def test_timing_calls_the_op_on_one_image_at_a_time_the_given_number_of_times():
    calls = []

    def op(x):
        calls.append(x.clone())
        return x * 2

    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    out = cost.time_per_image(op, images, n=7, warmup=2, progress=False)
    assert len(calls) == 7 + 2 and all(c.shape == (1, 3, 2, 2) for c in calls)
    # the timed calls walk the images in order, wrapping around
    assert [int(c[0, 0, 0, 0]) for c in calls[2:]] == [0, 1, 2, 3, 0, 1, 2]
    assert out["time_n"] == 7 and out["time_ms"] >= 0 and out["time_ms_median"] >= 0


def test_parameter_counts():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(5, 2))
    # by hand: conv 3*4*9 + 4, batch norm 4 + 4 (running stats are buffers), linear 5*2 + 2
    assert cost.count_parameters(net) == 108 + 4 + 8 + 12
    net[0].requires_grad_(False)  # frozen parameters still count
    assert cost.count_parameters(net) == sum(p.numel() for p in net.parameters()) == 132


def test_the_classic_rows_are_vicregs_op_alone_with_p_1():
    for row, op in cost.OPS.items():
        cfg = cost.vicreg_op(row)
        assert cfg.enabled_ops() == [op] and getattr(cfg, op).p == 1.0
    assert cost.vicreg_op("jitter").jitter.brightness == 0.4 and cost.vicreg_op("blur").blur.sigma == (0.1, 2.0)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    aug = cost.classic_augmentation("jitter", torch.device("cpu"), seed=0)
    out = aug.batch((x * 255).round().to(torch.uint8), torch.arange(6))
    changed = (out.float() - (x * 255).round()).abs().flatten(1).amax(1) > 0
    assert out.dtype == torch.uint8 and bool(changed.all())  # p = 1: every image is jittered


def test_time_ratios():
    r = cost.time_ratios({"noise": 2.0, "mask": 10.0, "crop": 0.5})
    assert r == {"time_ratio_mask_noise": 5.0, "time_ratio_mask_crop": 20.0}


# ---------------------------------------------------------------- the stage on tiny stand-ins

SIDE = 16  # SSIM's window is 11; the tokenizer's f = 4 makes 4 x 4 maps, the border mask a 2 x 2 interior


class TinyEncoder(nn.Module):
    """Stands in for the VICReg baseline's encoder (papers.gencl.encoder.load_encoder)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture
def project(tmp_path, suite_params, restore_threads, monkeypatch):
    from papers.gencl.inpainter import InpainterConfig, MaskedTokenTransformer, save_inpainter
    from papers.gencl.vq import VQAutoencoder, VQConfig, save_tokenizer
    from shared.models.conditional import ConditionalGenerator

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_train, rows = 40, np.arange(0, 40, 2)  # the SSL set: every other train row
    x = rng.integers(0, 256, (n_train, 3, SIDE, SIDE), dtype=np.uint8)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.savez(prepared / "train.npz", x=x, y=np.repeat(np.arange(4), 10).astype(np.int64))
    np.save(tmp_path / "ssl.npy", rows)
    sources = x[rows]
    write_precomputed(tmp_path / "noise.npy", rng.integers(0, 256, sources.shape, dtype=np.uint8), sources,
                      meta={"generator": "test"})
    blurred = (0.5 * sources + 0.5 * np.roll(sources, 1, axis=-1)).astype(np.uint8)
    write_precomputed(tmp_path / "mask.npy", blurred, sources,
                      meta={"generator": "test", "border": 1, "iterations": 3, "choice_temperature": 4.5})

    tokenizer = VQAutoencoder(VQConfig(channels=(8, 8), res_blocks=1, embed_dim=4, codebook_size=16))
    save_tokenizer(tmp_path / "tokenizer.pt", tokenizer)
    inpainter = MaskedTokenTransformer(InpainterConfig(d_model=16, layers=1, heads=2, mlp=32, codebook_size=16,
                                                       grid=(4, 4)))
    save_inpainter(tmp_path / "inpainter.pt", inpainter, steps=0)
    # the IC-GAN's G and the instance-feature encoder through their loaders' names (their file formats are
    # the IC-GAN stage's and encoder.py's business, tested there)
    G = ConditionalGenerator(z_dim=8, instance_dim=8, embed_dim=8, width=0.125, resolution=SIDE).eval()
    monkeypatch.setattr(cost, "load_generator", lambda path, device: G.to(device))
    encoder = TinyEncoder()
    monkeypatch.setattr(cost, "load_encoder", lambda path, device: encoder.to(device))

    extractor = FeatureExtractor(ExtractorConfig(width=0.125, eval_batch_size=64), 3, 4, (SIDE, SIDE))
    extractor.save(tmp_path / "extractor.pt")
    params = tmp_path / "gencl_params.yaml"
    params.write_text(yaml.safe_dump({"cost": {
        "fid_n": 12, "ssim_n": 15, "time_n": 4, "time_warmup": 1, "batch_size": 8,
        # a missing Inception file: the stage falls back to the in-domain extractor and must say so
        "metrics": {"inception_weights": str(tmp_path / "no_inception.pt"),
                    "extractor": str(tmp_path / "extractor.pt")},
    }}))
    args = ["--params", str(params), "--suite-params", str(suite_params()), "--prepared", str(prepared),
            "--indices", str(tmp_path / "ssl.npy"), "--noise", str(tmp_path / "noise.npy"),
            "--mask", str(tmp_path / "mask.npy"), "--tokenizer", str(tmp_path / "tokenizer.pt"),
            "--inpainter", str(tmp_path / "inpainter.pt"), "--icgan", str(tmp_path / "icgan"),
            "--encoder", str(tmp_path / "encoder.pt"), "--out", str(tmp_path / "out"),
            "--metrics", str(tmp_path / "flat.json")]
    counts = {"noise": sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in G.parameters()),
              "mask": (sum(p.numel() for p in tokenizer.parameters()) + tokenizer.quantizer.embedding.numel()
                       + sum(p.numel() for p in inpainter.parameters()))}
    return tmp_path, args, counts


def test_the_stage_writes_table4_records_naming_the_detector(project):
    tmp_path, args, counts = project
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the missing Inception file's warning
        assert cost.main(args) == 0
    out = tmp_path / "out"
    for row in cost.ROWS:
        fid = json.loads((out / "rows" / row / "table4_fid.json").read_text())
        assert fid["table"] == "table4_fid" and fid["row"] == row
        assert list(fid["metrics"]) == ["fid_indomain"]  # the key names the detector ...
        assert fid["fid_label"] == INDOMAIN_LABEL and fid["fid_n_generated"] == 12  # ... and so does the label
        assert all(k in fid for k in ("fid_n_reference", "fid_reference", "fid_detector"))
        ssim = json.loads((out / "rows" / row / "table4_ssim.json").read_text())
        assert -1 <= ssim["metrics"]["ssim"] <= 1 and ssim["ssim_n"] == 15
        timed = json.loads((out / "rows" / row / "table4_time_ms.json").read_text())
        assert timed["metrics"]["time_ms"] > 0 and timed["time_n"] == 4 and timed["batch_size"] == 1
        has_params = (out / "rows" / row / "table4_params_m.json").exists()
        assert has_params == (row in cost.GENERATORS)  # crop / jitter / blur print N/A
    for row, expected in counts.items():
        params = json.loads((out / "rows" / row / "table4_params_m.json").read_text())
        assert params["parameters_total"] == expected
        assert params["metrics"]["params_m"] == pytest.approx(expected / 1e6)
    summary = json.loads((out / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["fid_label"] == INDOMAIN_LABEL and "fid_indomain_mask" in m and "fid_inception_mask" not in m
    assert m["time_ratio_mask_noise"] == pytest.approx(m["time_ms_mask"] / m["time_ms_noise"])
    assert m["time_ratio_mask_crop"] == pytest.approx(m["time_ms_mask"] / m["time_ms_crop"])
    # the mask stand-in is a mild blur of the originals, the noise stand-in unrelated noise
    assert m["ssim_mask"] > m["ssim_noise"]
    assert json.loads((tmp_path / "flat.json").read_text()) == pytest.approx(m)
    assert (out / "cost.png").stat().st_size > 0

    # the records load into the comparison with reported.yaml (rows and tables as printed)
    reported = cost.PARAMS.parent / "reported.yaml"
    from shared.config import REPO_ROOT
    files = sorted(out.glob("rows/*/table4_*.json"))
    ssim_table = compare(REPO_ROOT / reported, files, "table4_ssim", "smoke", tmp_path / "cmp")
    assert all(r.status == "ok" for r in ssim_table.rows)
    fid_table = compare(REPO_ROOT / reported, files, "table4_fid", "smoke", tmp_path / "cmp", metric="fid_indomain")
    assert all(r.status == "ok" and r.delta is None for r in fid_table.rows)  # another detector: no delta
    params_table = compare(REPO_ROOT / reported, files, "table4_params_m", "smoke", tmp_path / "cmp")
    assert [r.id for r in params_table.rows if r.status == "ok"] == ["noise", "mask"]


def _without(args: list[str], *names: str) -> list[str]:
    """``args`` without the options ``names`` and their values."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in names:
            skip = True
        else:
            out.append(a)
    return out


def test_a_subset_of_rows_needs_only_its_inputs(project, capsys):
    tmp_path, args, _ = project
    no_icgan = _without(args, "--noise", "--icgan", "--encoder")
    assert cost.main(no_icgan) == 2
    assert "--rows includes noise: --noise, --icgan, --encoder required" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the missing Inception file's warning
        assert cost.main(no_icgan + ["--rows", "mask", "crop"]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "rows").iterdir()) == ["crop", "mask"]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["rows"] == ["mask", "crop"] and list(summary["parameters"]) == ["mask"]
    assert set(k for k in summary["metrics"] if k.startswith("time_ratio")) == {"time_ratio_mask_crop"}


def test_the_mask_settings_come_from_the_mask_file(project):
    tmp_path, _, _ = project
    assert cost.mask_settings(PrecomputedViews(tmp_path / "mask.npy")) == {"border": 1, "iterations": 3,
                                                                          "choice_temperature": 4.5}
    with pytest.raises(ValueError, match="border"):
        cost.mask_settings(PrecomputedViews(tmp_path / "noise.npy"))
