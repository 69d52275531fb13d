"""shared.view_sources: pipeline switches and equivalence with shared.views, precomputed lookup and its
alignment check, atomic writer, online generator, the gamma rate and branch routing."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from shared import view_sources as vs
from shared import views
from shared.config import ConfigError, build
from shared.view_sources import (OPS, ClassicViews, GammaMix, GammaMixConfig, GeneratorViews, PipelineConfig,
                                 PrecomputedViews, SolarizeOp, classic_view, write_precomputed)
from shared.views import SimCLRViewConfig, SimCLRViews

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def u8(n: int = 8, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=gen(seed), dtype=torch.uint8)


class Inverted:
    """A generated source whose image is 1 - x; counts its calls and rows."""

    def __init__(self):
        self.rows = 0

    def generated(self, x, index, generator=None):
        self.rows += x.shape[0]
        return 1 - vs.as_float_images(x)


IDENTITY = PipelineConfig.identity()


# ---------------------------------------------------------------- pipeline config

def test_pipeline_config_builds_from_params_and_rejects_bad_keys():
    cfg = build(PipelineConfig, {"order": ["flip", "crop"], "crop": {"scale": [0.2, 1], "size": 8},
                                 "jitter": {"enabled": False}, "grayscale": {"enabled": False},
                                 "blur": {"enabled": False}, "solarize": {"enabled": False}})
    assert cfg.enabled_ops() == ["flip", "crop"] and cfg.crop.scale == (0.2, 1.0)
    with pytest.raises(ConfigError, match="crop.bogus"):
        build(PipelineConfig, {"crop": {"bogus": 1}})
    with pytest.raises(ConfigError, match="'blur' is enabled but not in order"):
        build(PipelineConfig, {"order": ["crop", "flip", "jitter", "grayscale", "solarize"]})
    with pytest.raises(ConfigError, match="unknown op 'cutout'"):
        build(PipelineConfig, {"order": ["cutout"]})
    with pytest.raises(ValueError, match="flip.p"):
        vs.FlipOp(p=1.5)
    with pytest.raises(ValueError, match="unknown op"):
        PipelineConfig().only("crop", "rotate")
    with pytest.raises(ValueError, match="branch"):
        GammaMixConfig(branch="last")


def test_only_and_without_switch_families():
    cfg = PipelineConfig(solarize=SolarizeOp(p=0.2))
    assert cfg.only("flip").enabled_ops() == ["flip"]
    assert cfg.only("solarize").solarize.p == 0.2  # parameters kept
    assert cfg.without("grayscale", "blur").enabled_ops() == ["crop", "flip", "jitter", "solarize"]
    assert IDENTITY.enabled_ops() == []
    v1, v2 = vs.vicreg_pipelines()
    assert (v1.blur.p, v1.solarize.p, v2.blur.p, v2.solarize.p) == (1.0, 0.0, 0.1, 0.2)


# ---------------------------------------------------------------- classic views

@pytest.mark.parametrize("cfg", [SimCLRViewConfig(), SimCLRViewConfig(solarize_p=0.4, blur_p=1.0, crop_scale=(0.3, 1)),
                                 SimCLRViewConfig(jitter="hsv", blur_p=0.0)])
def test_pipeline_equals_simclr_view_under_the_same_seed(cfg):
    x = u8(16).float() / 255
    expected = views.simclr_view(x, cfg, gen(3))
    assert torch.equal(classic_view(x, PipelineConfig.from_simclr(cfg), gen(3)), expected)
    if cfg == SimCLRViewConfig():
        assert torch.equal(classic_view(x, PipelineConfig(), gen(3)), expected)


def test_the_jitter_kind_is_carried_and_runs_its_own_function():
    assert PipelineConfig.from_simclr(SimCLRViewConfig(jitter="hsv")).jitter.kind == "hsv"
    assert PipelineConfig.from_simclr(SimCLRViewConfig()).jitter.kind == "torchvision" == vs.JitterOp().kind
    x = u8(16).float() / 255
    op = dict(p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    hsv = PipelineConfig(jitter=vs.JitterOp(kind="hsv", **op)).only("jitter")
    expected = views.hsv_color_jitter(x, 0.4, 0.4, 0.4, 0.1, 1.0, gen(6))
    assert torch.equal(classic_view(x, hsv, gen(6)), expected)
    torchvision = classic_view(x, PipelineConfig(jitter=vs.JitterOp(**op)).only("jitter"), gen(6))
    assert torch.equal(torchvision, views.color_jitter(x, 0.4, 0.4, 0.4, 0.1, 1.0, gen(6)))
    assert not torch.equal(torchvision, expected)  # the kind is not ignored
    with pytest.raises(ValueError, match="jitter.kind must be one of"):
        vs.JitterOp(kind="pil")
    cfg = build(PipelineConfig, {"jitter": {"kind": "hsv", "p": 0.5}})  # from a params file
    assert cfg.jitter.kind == "hsv" and cfg.jitter.p == 0.5


def test_classic_views_wrapping_simclr_views_gives_its_output():
    cfg, x, index = SimCLRViewConfig(), u8(16), torch.arange(16)
    expected = SimCLRViews(cfg)(x, generator=gen(5))
    for source in (ClassicViews.wrap(SimCLRViews(cfg)), ClassicViews.symmetric(PipelineConfig.from_simclr(cfg), 2)):
        got = source(x, index, generator=gen(5))
        assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, expected))
    torch.manual_seed(9)  # the global RNG when no generator is given
    a = ClassicViews.wrap(SimCLRViews(cfg))(x, index)
    torch.manual_seed(9)
    assert all(torch.equal(p, q) for p, q in zip(a, SimCLRViews(cfg)(x)))


def _manual(x, cfg, skip, g):
    """The pipeline written out by hand from shared.views, without op `skip`."""
    if skip != "crop":
        x = views.random_resized_crop(x, cfg.crop.scale, cfg.crop.ratio, cfg.flip.p if skip != "flip" else 0.0,
                                      generator=g)
    else:
        x = views.random_horizontal_flip(x, cfg.flip.p, g)
    j = cfg.jitter
    if skip != "jitter":
        x = views.color_jitter(x, j.brightness, j.contrast, j.saturation, j.hue, j.p, g)
    if skip != "grayscale":
        x = views.random_grayscale(x, cfg.grayscale.p, g)
    if skip != "blur":
        x = views.gaussian_blur(x, cfg.blur.p, cfg.blur.sigma, 3, g)
    if skip != "solarize":
        x = views.solarize(x, cfg.solarize.p, cfg.solarize.threshold, g)
    return x


@pytest.mark.parametrize("op", OPS)
def test_pipeline_without_an_op_is_the_rest_composed(op):
    cfg = PipelineConfig(solarize=SolarizeOp(p=0.5))
    x = u8(16).float() / 255
    assert torch.equal(classic_view(x, cfg.without(op), gen(1)), _manual(x, cfg, op, gen(1)))


def test_single_op_pipelines_show_only_their_effect():
    x = u8(64).float() / 255
    assert torch.equal(classic_view(x, IDENTITY, gen(0)), x)
    flipped = classic_view(x, PipelineConfig().only("flip"), gen(0))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()
    gray = classic_view(x, PipelineConfig().only("grayscale"), gen(0))
    luma = views._grayscale(x).expand_as(x)
    is_gray, kept = (gray == luma).flatten(1).all(1), (gray == x).flatten(1).all(1)
    assert bool((is_gray | kept).all()) and is_gray.any() and kept.any()
    solar = classic_view(x, PipelineConfig(solarize=SolarizeOp(p=0.5)).only("solarize"), gen(0))
    inverted = (solar == torch.where(x >= 0.5, 1 - x, x)).flatten(1).all(1)
    kept = (solar == x).flatten(1).all(1)
    assert bool((inverted | kept).all()) and inverted.any() and kept.any()


def test_crop_probability_and_output_size():
    x = u8(64, size=16).float() / 255
    assert torch.equal(classic_view(x, PipelineConfig(crop=vs.CropOp(p=0.0)).only("crop"), gen(0)), x)
    half = classic_view(x, PipelineConfig(crop=vs.CropOp(p=0.5, scale=(0.1, 0.2))).only("crop"), gen(0))
    whole = (half == x).flatten(1).all(1)
    assert whole.any() and (~whole).any()
    assert classic_view(x, PipelineConfig(crop=vs.CropOp(size=8)), gen(0)).shape == (64, 3, 8, 8)


def test_asymmetric_branches_use_their_own_pipelines():
    x = u8(8)
    invert = PipelineConfig(solarize=SolarizeOp(p=1.0, threshold=0.0)).only("solarize")
    v1, v2 = ClassicViews([invert, IDENTITY])(x, torch.arange(8))
    xf = x.float() / 255
    assert torch.equal(v1, 1 - xf) and torch.equal(v2, xf)


def test_pipeline_is_differentiable():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=gen(0)) * 0.6 + 0.2
    cfg = PipelineConfig(blur=vs.BlurOp(p=1.0, kernel_size=3), solarize=SolarizeOp(p=0.5, threshold=0.9),
                         jitter=vs.JitterOp(p=1.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1))
    assert torch.autograd.gradcheck(lambda t: classic_view(t, cfg, gen(4)), (x.requires_grad_(),), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
def test_views_stay_on_the_device_as_float_in_unit_range(device, tmp_path):
    x, index = u8(16).to(device), torch.arange(16, device=device)
    write_precomputed(tmp_path / "g.npy", 255 - u8(16), u8(16))
    sources = [ClassicViews.symmetric(PipelineConfig(solarize=SolarizeOp(p=0.5))), ClassicViews(vs.vicreg_pipelines()),
               PrecomputedViews(tmp_path / "g.npy"), GeneratorViews(lambda t: t.flip(-1)),
               GammaMix(GammaMixConfig(gamma=0.5, branch="random"), vs.vicreg_pipelines(),
                        PrecomputedViews(tmp_path / "g.npy"))]
    for source in sources:
        for v in source(x, index):
            assert v.device == x.device and v.dtype == torch.float32 and v.shape == (16, 3, 16, 16)
            assert 0 <= v.min() and v.max() <= 1


# ---------------------------------------------------------------- precomputed views

@pytest.fixture
def stored(tmp_path):
    """A precomputed set of 50 rows: (path, sources, generated)."""
    sources, generated = u8(50, size=8, seed=1), u8(50, size=8, seed=2)
    path = tmp_path / "aug" / "noise.npy"
    write_precomputed(path, generated, sources, {"generator": "toy", "seed": 0})
    return path, sources, generated


def test_precomputed_lookup_returns_the_rows_of_a_non_contiguous_index(stored):
    path, sources, generated = stored
    source = PrecomputedViews(path, stage="papers/gencl:augment")
    assert isinstance(source.images, np.memmap) and len(source) == 50
    assert source.meta["meta"] == {"generator": "toy", "seed": 0}
    index = torch.tensor([41, 3, 7, 3, 0, 49])
    (got,) = source(sources[index], index)
    assert torch.equal(got, generated[index].float() / 255)


def test_precomputed_catches_a_shuffled_index_or_reordered_dataset(stored):
    path, sources, _ = stored
    source = PrecomputedViews(path)
    index = torch.arange(10, 26)
    swapped = index.clone()
    swapped[[3, 4]] = swapped[[4, 3]]  # one swapped pair is enough
    with pytest.raises(ValueError, match=f"{path}.*2 of 16 .*misaligned or shuffled"):
        source.generated(sources[index], swapped)
    reordered = sources[torch.randperm(50, generator=gen(0))]  # the dataset's order changed since the stage ran
    with pytest.raises(ValueError, match="row order changed"):
        source.generated(reordered[index], index)
    with pytest.raises(ValueError, match="source images of shape"):
        source.generated(u8(4, size=16), torch.arange(4))
    with pytest.raises(IndexError, match="rows 0..49"):
        source.generated(sources[:2], torch.tensor([0, 50]))
    unchecked = PrecomputedViews(path, verify=False)
    unchecked.generated(sources[index], swapped)  # the check is what catches it


def test_precomputed_missing_or_mismatched_files_are_clear_errors(stored, tmp_path):
    path, sources, generated = stored
    with pytest.raises(FileNotFoundError, match=r"missing\.npy.*'papers/gencl:augment'.*dvc repro"):
        PrecomputedViews(tmp_path / "missing.npy", stage="papers/gencl:augment")
    other = tmp_path / "other.npy"
    write_precomputed(other, 255 - generated, sources)
    path.write_bytes(other.read_bytes())  # images of one run beside the sidecars of another
    with pytest.raises(ValueError, match="does not match"):
        PrecomputedViews(path)
    with pytest.raises(ValueError, match="uint8"):
        write_precomputed(tmp_path / "f.npy", generated.float(), sources)
    with pytest.raises(ValueError, match="one generated image per source row"):
        write_precomputed(tmp_path / "f.npy", generated[:10], sources)
    with pytest.raises(ValueError, match=".npy"):
        write_precomputed(tmp_path / "f.npz", generated, sources)


def test_writer_is_atomic(stored, monkeypatch):
    path, sources, generated = stored
    folder = path.parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_save = np.save

    def failing_save(f, array):
        if array.dtype == np.uint8:  # the images: the last file written
            f.write(b"partial")
            raise OSError("disk full")
        real_save(f, array)

    monkeypatch.setattr(vs.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_precomputed(path, 255 - generated, sources)  # over an existing set: it survives unchanged
    with pytest.raises(OSError, match="disk full"):
        write_precomputed(folder / "new.npy", generated, sources)  # a new set: nothing appears
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    PrecomputedViews(path)


def test_fingerprints_are_exact_and_distinguish_rows():
    x = u8(64, size=32)
    fp = vs.row_fingerprints(x)
    assert fp.shape == (64, 2) and fp.dtype == torch.int64
    assert len({tuple(r) for r in fp.tolist()}) == 64
    assert torch.equal(vs.row_fingerprints(x.float() / 255), fp)  # float batches round back
    w = torch.randint(0, 2 ** 16, (3 * 32 * 32, 2), generator=gen(vs.FINGERPRINT_SEED))
    naive = [[sum(int(a) * int(b) for a, b in zip(x[i].flatten().tolist(), w[:, k].tolist())) for k in range(2)]
             for i in range(2)]
    assert fp[:2].tolist() == naive
    y = x.clone()
    y[5, 0, 0, 0] ^= 1  # one pixel, one level
    assert (vs.row_fingerprints(y) != fp).any(1).nonzero().flatten().tolist() == [5]


# ---------------------------------------------------------------- online generator

class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, z=None):
        self.calls.append((torch.is_grad_enabled(), self.training, x.min().item(), None if z is None else z.shape))
        return x * self.scale


@pytest.mark.parametrize("training", [True, False])
def test_generator_views_call_without_grad_and_keep_the_mode(training):
    g = Recorder().train(training)
    x = u8(4)
    (v,) = GeneratorViews(g, latent=vs.uniform_latent(5), in_range=(-1.0, 1.0), out_range=(-1.0, 1.0))(
        x, torch.arange(4))
    assert g.calls == [(False, training, pytest.approx(x.min().item() / 127.5 - 1), (4, 5))]
    assert g.training == training and not v.requires_grad
    assert torch.allclose(v, ((x.float() / 127.5 - 1) * 0.5 + 1) / 2)


def test_generator_views_with_grad_train_the_generator_through_gamma_mix():
    g = Recorder()
    mix = GammaMix(GammaMixConfig(gamma=0.5, branch="both"), [IDENTITY, IDENTITY], GeneratorViews(g, grad=True))
    x, index = u8(32), torch.arange(32)
    torch.manual_seed(0)
    out = mix.views_and_mask(x, index)
    (out.views[0].sum() + out.views[1].sum()).backward()
    assert g.calls[0][0] and g.scale.grad == pytest.approx(2 * (x[out.mask[:, 0]].float() / 255).sum().item())


def test_generator_views_pass_the_generator_for_reproducible_sampling():
    def sample(x, generator=None):
        return (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    source = GeneratorViews(sample, pass_generator=True)
    x = u8(4)
    assert torch.equal(source(x, None, gen(2))[0], source(x, None, gen(2))[0])


# ---------------------------------------------------------------- gamma mix

@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_gamma_rate_is_bernoulli_per_sample(gamma):
    source = Inverted()
    mix = GammaMix(GammaMixConfig(gamma=gamma, branch="second"), [IDENTITY, IDENTITY], source)
    g, n, batches, hits = gen(0), 64, 200, 0
    for b in range(batches):
        x = u8(n, size=4, seed=b)
        v1, v2 = mix(x, torch.arange(n), g)
        mask = mix.last_mask
        xf = x.float() / 255
        assert not mask[:, 0].any() and torch.equal(v1, xf)
        assert torch.equal(v2, torch.where(mask[:, 1].view(-1, 1, 1, 1), 1 - xf, xf))
        hits += int(mask[:, 1].sum())
    total = n * batches
    assert source.rows == hits  # generated images only for the selected rows
    if gamma in (0.0, 1.0):
        assert hits == gamma * total
    else:  # two-sided 99.9% binomial interval
        assert abs(hits / total - gamma) <= 3.29 * math.sqrt(gamma * (1 - gamma) / total)


@pytest.mark.parametrize("branch, n_views", [("first", 2), ("second", 2), ("both", 2), ("random", 2), ("extra", 3)])
def test_gamma_branch_routes_the_generated_image(branch, n_views):
    mix = GammaMix(GammaMixConfig(gamma=0.5, branch=branch), [IDENTITY, IDENTITY], Inverted())
    x = u8(256, size=4)
    out = mix.views_and_mask(x, torch.arange(256), gen(0))
    mask, xf = out.mask, x.float() / 255
    assert len(out.views) == n_views and mask.shape == (256, n_views)
    for v, view in enumerate(out.views):
        assert torch.equal(view, torch.where(mask[:, v].view(-1, 1, 1, 1), 1 - xf, xf))
    target = {"first": [0], "second": [1], "both": [0, 1], "random": [0, 1], "extra": [2]}[branch]
    assert not mask[:, [c for c in range(n_views) if c not in target]].any()
    assert mask[:, target].any(0).all()
    if branch == "both":
        assert torch.equal(mask[:, 0], mask[:, 1])
    if branch == "random":
        assert not (mask[:, 0] & mask[:, 1]).any()


def test_generated_pipeline_runs_after_the_generated_image(stored):
    path, sources, generated = stored
    mirror = PipelineConfig(flip=vs.FlipOp(p=1.0)).only("flip")
    t_g = GammaMixConfig(gamma=1.0, branch="second", generated_pipeline=mirror)
    index = torch.tensor([5, 9, 1, 33])
    v1, v2 = GammaMix(t_g, [IDENTITY, IDENTITY], PrecomputedViews(path))(sources[index], index)
    assert torch.equal(v1, sources[index].float() / 255)
    assert torch.equal(v2, generated[index].flip(-1).float() / 255)
    own = GammaMix(GammaMixConfig(gamma=1.0, branch="first"), [mirror, IDENTITY], PrecomputedViews(path))
    assert torch.equal(own(sources[index], index)[0], generated[index].flip(-1).float() / 255)
