"""shared.metrics: FID and IS against independent references, the Inception detector and the scorer."""
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from shared.detector import CorruptWeightsError, WeightsNotFoundError
from shared.extractor import INDOMAIN_LABEL, ExtractorConfig, train_extractor
from shared.metrics import FIDScorer, feature_stats, frechet_distance, inception_score, load_inception, make_scorer


# ---------------------------------------------------------------- references written from the formulas

def fd_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's recipe, with scipy's sqrtm of the (non-symmetric) product."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def is_naive(probs, splits):
    """exp(mean_x sum_y p(y|x) log(p(y|x) / p(y))) per split, in plain Python loops."""
    n = len(probs)
    scores = []
    for s in range(splits):
        rows = [list(map(float, probs[i])) for i in range(s * n // splits, (s + 1) * n // splits)]
        k = len(rows[0])
        marginal = [sum(r[j] for r in rows) / len(rows) for j in range(k)]
        kl = 0.0
        for r in rows:
            kl += sum(r[j] * math.log(r[j] / marginal[j]) for j in range(k) if r[j] > 0)
        scores.append(math.exp(kl / len(rows)))
    mean = sum(scores) / splits
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / splits)


def gaussian_features(seed, n, d, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)  # correlated features, as real detectors give
    return rng.normal(size=(n, d)) @ mix * scale + shift


# ---------------------------------------------------------------- Frechet distance

def test_feature_stats_is_mean_and_unbiased_covariance():
    x = gaussian_features(0, 40, 5)
    mu, sigma = feature_stats(torch.as_tensor(x, dtype=torch.float64))
    centred = x - x.sum(0) / len(x)
    naive = sum(np.outer(r, r) for r in centred) / (len(x) - 1)
    np.testing.assert_allclose(mu, x.sum(0) / len(x), rtol=1e-12)
    np.testing.assert_allclose(sigma, naive, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(x[:1])


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_matches_scipy_sqrtm(method):
    a, b = gaussian_features(1, 300, 16), gaussian_features(2, 200, 16, shift=0.3, scale=1.5)
    args = (*feature_stats(a), *feature_stats(b))
    expected = fd_reference(*args)
    assert expected > 1  # the two sets really differ
    assert frechet_distance(*args, method=method) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_singular_covariances():
    # N < D: both covariances have rank 5 of 12, the case pytorch-fid patches with an eps offset
    a, b = gaussian_features(3, 6, 12), gaussian_features(4, 6, 12, shift=0.5)
    args = (*feature_stats(a), *feature_stats(b))
    assert np.linalg.matrix_rank(args[1]) == 5
    fd = frechet_distance(*args)
    assert np.isfinite(fd)
    assert fd == pytest.approx(fd_reference(*args), rel=1e-5)
    assert frechet_distance(*args, method="sqrtm") == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_diagonal_closed_form(method):
    # For diagonal covariances d^2 = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 0.25, 0.0])  # one zero variance
    expected = 1 + 0 + 4 + 6.25 + (1 + 1 + 0 + 9)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_zero_on_identical_symmetric_and_mean_shift():
    a, b = gaussian_features(5, 500, 10), gaussian_features(6, 400, 10, scale=2.0)
    mu_a, sigma_a = feature_stats(a)
    mu_b, sigma_b = feature_stats(b)
    assert frechet_distance(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(
        frechet_distance(mu_b, sigma_b, mu_a, sigma_a), rel=1e-9)
    # same covariance, mean moved by c: d^2 = |c|^2
    c = np.linspace(-1, 1, 10)
    assert frechet_distance(mu_a, sigma_a, mu_a + c, sigma_a) == pytest.approx(c @ c, rel=1e-8)


def test_frechet_distance_rejects_bad_inputs():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(mu, sigma, mu, np.eye(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(mu, sigma, mu, np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(mu, sigma, mu + np.nan, sigma)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(mu, sigma, mu, sigma, method="svd")


# ---------------------------------------------------------------- Inception Score

def test_inception_score_matches_naive_loop():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(7, 0.3), size=53)  # 53 rows: uneven splits of 10 or 11
    probs[0] = np.eye(7)[2]  # exact zeros: 0 log 0 must count as 0
    mean, std = inception_score(torch.as_tensor(probs), splits=5)  # a float64 tensor: no rounding
    ref_mean, ref_std = is_naive(probs, 5)
    assert mean == pytest.approx(ref_mean, rel=1e-10)
    assert std == pytest.approx(ref_std, rel=1e-8)


def test_inception_score_hand_worked_values():
    k = 4
    assert inception_score(np.full((20, k), 1 / k), splits=2) == pytest.approx((1.0, 0.0))
    # one-hot, every class equally often in each split: KL = log K for every row, IS = K
    one_hot = np.eye(k)[np.arange(40) % k]
    assert inception_score(one_hot, splits=2) == pytest.approx((float(k), 0.0))
    # p = [1, 0] and [1/2, 1/2]: p(y) = [3/4, 1/4], KLs log(4/3) and (log(2/3) + log 2) / 2
    expected = math.exp((math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2)
    assert inception_score(np.array([[1.0, 0.0], [0.5, 0.5]]), splits=1) == pytest.approx((expected, 0.0))


def test_inception_score_rejects_logits_and_bad_splits():
    with pytest.raises(ValueError, match="logits"):
        inception_score(np.random.default_rng(0).normal(size=(10, 3)) ** 2, splits=2)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((5, 2), 0.5), splits=6)


# ---------------------------------------------------------------- Inception detector (user-supplied file)

class FakeInception(nn.Module):
    """Same signature and conventions as StyleGAN2-ADA's inception-2015-12-05.pt, tiny and random."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 16)
        self.output = nn.Linear(16, 10)
        with torch.no_grad():  # a bias that dominates: a call without no_output_bias=True is visible
            self.output.bias.zero_()
            self.output.bias[0] = 100.0

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8:
            raise RuntimeError("expects uint8 images")
        if img.shape[1] != 3:
            raise RuntimeError("expects 3 channels")
        x = (img.to(torch.float32) - 128.0) / 128.0
        features = self.proj(F.adaptive_avg_pool2d(x, [4, 4]).flatten(1))
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return F.softmax(logits, dim=1)


class NoKwargsNet(nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.float().flatten(1)


def script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch deprecates TorchScript, but the Inception file is one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


def jit_load(path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


@pytest.fixture(scope="module")
def fake_inception_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt"
    script(FakeInception()).save(str(path))
    return path


@pytest.mark.parametrize("path", [None, "missing/inception-2015-12-05.pt"])
def test_load_inception_missing_file_says_how_to_get_it(path):
    with pytest.raises(WeightsNotFoundError) as info:
        load_inception(path)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for part in ("inception-2015-12-05.pt", "metrics.inception_weights", "params.yaml",
                 "nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch", "in-domain", "fid_indomain"):
        assert part in message
    if path is not None:
        assert path in message


def test_load_inception_rejects_corrupt_or_foreign_files(tmp_path):
    garbage = tmp_path / "inception-2015-12-05.pt"
    garbage.write_bytes(b"not a torchscript archive")
    with pytest.raises(CorruptWeightsError, match=str(garbage)):
        load_inception(garbage)
    foreign = tmp_path / "other.pt"
    script(NoKwargsNet()).save(str(foreign))
    with pytest.raises(CorruptWeightsError, match="call convention"):
        load_inception(foreign)


def test_inception_call_convention(fake_inception_path):
    detector = load_inception(fake_inception_path)
    assert detector.kind == "inception"
    net = jit_load(fake_inception_path)
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    feats, probs = detector.features_and_probs(images, batch_size=2)
    expected_feats = net(images, return_features=True)
    torch.testing.assert_close(feats, expected_feats)
    # probs: softmax of the logits WITHOUT the output bias (StyleGAN2-ADA's IS)
    torch.testing.assert_close(probs, F.softmax(expected_feats @ net.output.weight.T, dim=1))
    assert not torch.allclose(probs, net(images), atol=1e-3)  # with bias: all mass on class 0
    # grayscale is repeated to 3 channels, as StyleGAN2-ADA does
    gray = images[:, :1]
    torch.testing.assert_close(detector.features(gray), net(gray.repeat(1, 3, 1, 1), return_features=True))
    with pytest.raises(ValueError, match="uint8"):
        detector.features(images.float())


# ---------------------------------------------------------------- an in-domain detector to score with

# ---------------------------------------------------------------- scorer

def test_fid_scorer_in_domain(trained_extractor, easy_dataset):
    extractor, (x_test, _) = trained_extractor
    scorer = FIDScorer(x_test, extractor, splits=3)
    same = scorer.score(x_test)
    assert set(same) == {"fid_indomain", "is_indomain", "is_indomain_std"}
    assert same["fid_indomain"] == pytest.approx(0.0, abs=1e-6)
    assert (same["is_indomain"], same["is_indomain_std"]) == pytest.approx(scorer.reference_is)
    other_real = scorer.score(easy_dataset(20, seed=3)[0])
    shifted = scorer.score(np.clip(x_test.astype(int) + 100, 0, 255).astype(np.uint8))
    assert 0 < other_real["fid_indomain"] < shifted["fid_indomain"]
    with pytest.raises(ValueError, match="reference"):
        scorer.score(x_test[:, :, :4, :4])


def test_fid_scorer_is_does_not_depend_on_class_sorted_order(trained_extractor):
    extractor, (x_test, y_test) = trained_extractor
    assert (np.diff(y_test) >= 0).all()  # sorted by class, as prepared splits are
    sorted_is = inception_score(extractor.probs(x_test), splits=3)[0]
    assert sorted_is < 1.3  # one class per consecutive split: p(y|x) = p(y), IS near 1
    scorer = FIDScorer(x_test, extractor, splits=3)
    order = np.random.default_rng(0).permutation(len(x_test))
    assert inception_score(extractor.probs(x_test[order]), splits=3)[0] > 2
    assert scorer.reference_is[0] > 2
    assert scorer.score(x_test)["is_indomain"] > 2


def test_make_scorer_picks_and_names_the_detector(trained_extractor, fake_inception_path, tmp_path):
    extractor, (x_test, _) = trained_extractor
    extractor_path = tmp_path / "extractor.pt"
    extractor.save(extractor_path)
    inception = make_scorer(x_test, str(fake_inception_path), str(extractor_path), "cpu", splits=3)
    assert inception.kind == "inception" and "fid_inception" in inception.score(x_test[:30])
    indomain = make_scorer(x_test, None, extractor_path, "cpu", splits=3)
    assert indomain.kind == "indomain" and indomain.label == INDOMAIN_LABEL
    with pytest.warns(UserWarning, match="in-domain"):
        fallback = make_scorer(x_test, tmp_path / "missing.pt", extractor_path, "cpu", splits=3)
    assert fallback.kind == "indomain"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(WeightsNotFoundError) as info:
            make_scorer(x_test, None, tmp_path / "no_extractor.pt", "cpu")
    assert "metrics.inception_weights" in str(info.value) and "no_extractor.pt" in str(info.value)
