"""Sample diversity (shared.metrics.diversity_ratio, sample_diversity, is_collapsed) and the scorer's
`diversity_<kind>`: against a naive loop over pairs, on a collapsed batch and on real-like images."""
import numpy as np
import pytest
import torch

from shared.metrics import (FIDScorer, diversity_ratio, feature_stats, is_collapsed, make_scorer,
                            sample_diversity)

THRESHOLD = 0.1  # contrad's train.collapse_threshold


def pairwise_ratio_naive(samples: np.ndarray, reference: np.ndarray) -> float:
    """The mean squared L2 distance over all pairs i < j of the samples, over the same of the reference: two
    plain loops, nothing shared with the library's covariance route."""
    def mean_pair(x):
        total, pairs = 0.0, 0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                total += float(((x[i] - x[j]) ** 2).sum())
                pairs += 1
        return total / pairs
    return mean_pair(samples) / mean_pair(reference)


def test_sample_diversity_is_the_ratio_of_mean_pairwise_squared_distances():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 6)) * [1, 2, 3, 1, 1, 0.5]
    for samples in (rng.normal(size=(25, 6)), rng.normal(size=(30, 6)) * 0.2 + 5, reference[:7]):
        assert sample_diversity(samples, reference) == pytest.approx(pairwise_ratio_naive(samples, reference),
                                                                     rel=1e-10)
    # from the covariances alone (what the scorer holds), the same number
    samples = rng.normal(size=(25, 6))
    assert diversity_ratio(feature_stats(samples)[1], feature_stats(reference)[1]) == pytest.approx(
        sample_diversity(samples, reference), rel=1e-12)
    # scale-equivariant: features twice as spread -> 4x
    assert sample_diversity(2 * samples, reference) == pytest.approx(4 * sample_diversity(samples, reference))


def test_a_collapsed_batch_is_far_below_the_threshold_and_a_second_real_sample_near_one():
    rng = np.random.default_rng(1)
    real = rng.gamma(2.0, 1.0, size=(2000, 32))  # non-negative, like post-ReLU pooled features
    other = rng.gamma(2.0, 1.0, size=(500, 32))
    one = np.repeat(real[:1], 200, axis=0)
    near = one + rng.normal(scale=0.05, size=one.shape)
    assert sample_diversity(one, real) == pytest.approx(0.0, abs=1e-20) and is_collapsed(0.0, THRESHOLD)
    assert sample_diversity(near, real) < 0.01 and is_collapsed(sample_diversity(near, real), THRESHOLD)
    assert sample_diversity(other, real) == pytest.approx(1.0, abs=0.1)
    assert not is_collapsed(sample_diversity(other, real), THRESHOLD)
    assert not is_collapsed(0.0, 0.0)  # threshold 0: never collapsed


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        is_collapsed(0.5, 1.0)
    with pytest.raises(ValueError, match="threshold"):
        is_collapsed(0.5, -0.1)
    with pytest.raises(ValueError, match="finite"):
        is_collapsed(float("nan"), 0.1)
    with pytest.raises(ValueError, match="sigma_reference"):
        diversity_ratio(np.eye(3), np.zeros((3, 3)))  # a reference without spread
    with pytest.raises(ValueError, match="sigma"):
        diversity_ratio(np.eye(3), np.ones((3, 4)))


def test_the_scorer_gives_diversity_from_the_features_it_scores_fid_with(trained_extractor, easy_dataset, tmp_path):
    """Real images through the tiny in-domain extractor: the reference itself scores 1, another real sample near 1,
    one image repeated (with a little pixel noise) far below the threshold; only when asked for."""
    extractor, (x_test, _) = trained_extractor
    scorer = FIDScorer(x_test, extractor, splits=3, diversity=True)
    assert scorer.score(x_test)["diversity_indomain"] == pytest.approx(1.0, rel=1e-9)
    other = scorer.score(easy_dataset(20, seed=3)[0])["diversity_indomain"]
    assert other == pytest.approx(1.0, abs=0.25) and not is_collapsed(other, THRESHOLD)
    noise = torch.randint(-3, 4, (60, *x_test.shape[1:]), generator=torch.Generator().manual_seed(0))
    one = (torch.from_numpy(x_test[:1]).int() + noise).clamp(0, 255).to(torch.uint8)
    collapsed = scorer.score(one)["diversity_indomain"]
    assert collapsed < THRESHOLD / 10 and is_collapsed(collapsed, THRESHOLD)
    # the same number as the features passed through again by hand
    feats = extractor.features(torch.from_numpy(x_test))
    assert collapsed == pytest.approx(sample_diversity(extractor.features(one), feats), rel=1e-6)
    assert "diversity_indomain" not in FIDScorer(x_test, extractor, splits=3).score(x_test)  # off by default
    path = tmp_path / "extractor.pt"
    extractor.save(path)
    assert "diversity_indomain" in make_scorer(x_test, None, path, "cpu", splits=3, diversity=True).score(x_test)
