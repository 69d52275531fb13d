"""The suite's verdict rules (shared.claims) on numbers worked by hand."""
import math

import pytest

from shared.claims import FAILS, HOLDS, INCONCLUSIVE, combined_std, is_best, seed_stats


def s(mean, std, n=2):
    return {"mean": mean, "std": std, "n": n}


def test_seed_stats_uses_the_sample_std():
    assert seed_stats([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert seed_stats([5.0]) == {"mean": 5.0, "std": None, "n": 1}
    assert seed_stats([]) is None


def test_combined_std():
    assert combined_std(s(0, 3), s(0, 4)) == 5.0
    assert combined_std(s(0, None, 1), s(0, 4)) is None


@pytest.mark.parametrize("stats, higher, verdict", [
    ({"a": s(10, 0.3), "b": s(9, 0.4)}, True, HOLDS),  # +1.0 > 0.5
    ({"a": s(10, 0.3), "b": s(9.8, 0.4)}, True, INCONCLUSIVE),  # +0.2 < 0.5
    ({"a": s(10, 0.3), "b": s(11, 0.4)}, True, FAILS),  # b beats it by 1.0 > 0.5
    ({"a": s(10, 0.3), "b": s(11, 0.4)}, False, HOLDS),  # lower is better: a wins by 1.0
    ({"a": s(10, None, 1), "b": s(5, None, 1)}, True, INCONCLUSIVE),  # one seed: std unknown
    ({"a": s(10, 0.3), "b": None}, True, INCONCLUSIVE),  # b not run
    ({"a": None, "b": s(5, 0.1)}, True, INCONCLUSIVE),  # a not run
])
def test_is_best(stats, higher, verdict):
    out = is_best(stats, "a", higher_is_better=higher)
    assert out["verdict"] == verdict, out["reason"]
    assert "rule" in out and out["numbers"] == stats


def test_is_best_reports_margin_and_runner_up():
    out = is_best({"a": s(10, 0.3), "b": s(9, 0.4), "c": s(8, 0.1)}, "a")
    assert out["runner_up"] == "b" and out["difference"] == pytest.approx(1.0)
    assert out["combined_std"] == pytest.approx(0.5)
