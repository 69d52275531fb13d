"""shared.claims: Welch, Holm and the slope test against scipy and hand formulas, and every verdict branch."""
import math

import numpy as np
import pytest
from scipy import stats

from shared.claims import (ALPHA, FAILS, HOLDS, INCONCLUSIVE, beats, best_of, each_of, effect_text, holm, increases,
                           n_text, seed_stats, welch, within)

A = [71.2, 72.5, 70.9, 72.0]
B = [69.8, 70.4, 71.1]


def test_seed_stats_uses_the_sample_std():
    assert seed_stats([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert seed_stats([5.0]) == {"mean": 5.0, "std": None, "n": 1}
    assert seed_stats([]) is None


# ---------------------------------------------------------------- Welch

def test_welch_matches_the_formula_and_scipy():
    a, b = np.array(A), np.array(B)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    diff = a.mean() - b.mean()
    t = diff / se
    half = stats.t.ppf(0.975, df) * se

    got = welch(A, B)
    assert got["difference"] == pytest.approx(diff) and got["df"] == pytest.approx(df)
    assert got["ci95"] == pytest.approx([diff - half, diff + half])
    assert got["p_greater"] == pytest.approx(stats.t.sf(t, df))  # by hand from the t distribution
    assert got["p_less"] == pytest.approx(stats.t.cdf(t, df))
    # and scipy's own two-sided Welch interval and one-sided p
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got["ci95"] == pytest.approx([ci.low, ci.high])
    assert got["p_greater"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    # by hand: means 71.65 and 70.433, variances of the means 1.61 / 3 / 4 and 0.8467 / 2 / 3,
    # se = sqrt(0.13417 + 0.14111) = 0.5247, t = 1.2167 / 0.5247 = 2.319 on 4.749 df
    assert diff == pytest.approx(1.21667, abs=1e-5) and t == pytest.approx(2.3189, abs=1e-4)
    assert df == pytest.approx(4.7491, abs=1e-3) and got["p_greater"] == pytest.approx(0.0354, abs=1e-4)


def test_welch_without_spread_is_undefined():
    got = welch([1.0, 1.0], [2.0, 2.0])
    assert got["difference"] == -1.0 and got["p_greater"] is None and got["ci95"] is None
    with pytest.raises(ValueError, match=">= 2 values"):
        welch([1.0], [2.0, 3.0])


# ---------------------------------------------------------------- A beats B

@pytest.mark.parametrize("a, b, higher, verdict", [
    (A, B, True, HOLDS),  # one-sided p = 0.035
    (B, A, True, FAILS),  # the opposite direction is significant
    (A, [70.9, 72.2, 71.4], True, INCONCLUSIVE),  # +0.15, p = 0.39
    (B, A, False, HOLDS),  # lower is better (FID): B's lower mean wins
    (A, B, False, FAILS),
])
def test_beats_verdicts(a, b, higher, verdict):
    got = beats({"ours": a, "base": b}, "ours", "base", higher_is_better=higher)
    assert got["verdict"] == verdict, got["reason"]
    alternative = "greater" if higher else "less"
    p = stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue
    assert got["p"] == pytest.approx(p) and got["p_opposite"] == pytest.approx(1 - p)
    assert got["difference"] == pytest.approx(np.mean(a) - np.mean(b))  # the sign is the metric's own
    assert got["n"] == {"ours": len(a), "base": len(b)} and got["values"] == {"ours": a, "base": b}
    assert got["test"] == "one-sided Welch t-test" and got["alpha"] == ALPHA
    assert got["direction"] == ("higher is better" if higher else "lower is better")
    assert got["estimate"] == "mean(ours) - mean(base)" and "\n" not in got["reason"]


@pytest.mark.parametrize("values, why", [
    ({"ours": A, "base": None}, "not run: base"),
    ({"ours": A, "base": []}, "not run: base"),
    ({"ours": [72.0], "base": B}, "fewer than 2 seeds: ours (n=1)"),
    ({"ours": [1.0, 1.0], "base": [0.0, 0.0]}, "no spread"),
])
def test_beats_is_inconclusive_without_a_test(values, why):
    got = beats(values, "ours", "base")
    assert got["verdict"] == INCONCLUSIVE and why in got["reason"]
    assert got["p"] is None and got["ci95"] is None


# ---------------------------------------------------------------- Holm

def naive_holm_rejects(pvalues, alpha):
    """Holm's step-down procedure as textbooks state it: walk the p-values from the smallest; reject
    while p_(j) <= alpha / (m - j + 1) (j from 1), stop at the first that is not."""
    m = len(pvalues)
    rejected = set()
    for j, i in enumerate(sorted(range(m), key=lambda i: pvalues[i]), start=1):
        if pvalues[i] > alpha / (m - j + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_worked_example():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02]


def test_holm_agrees_with_the_naive_step_down():
    rng = np.random.default_rng(0)
    for trial in range(200):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 7)).round(3).tolist()  # ties included
        adjusted = holm(p)
        for alpha in (0.01, 0.025, 0.05, 0.1):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == naive_holm_rejects(p, alpha), (p, alpha)


# ---------------------------------------------------------------- best of k

T = [10.0, 10.5, 11.0]  # each setup: mean +- 0.5, n = 3


def shifted(d):
    return [x + d for x in T]


def test_best_of_holds_and_reports_each_comparison():
    values = {"t": T, "a": shifted(-1.5), "b": shifted(-2.0), "c": shifted(-3.0)}
    got = best_of(values, "t")
    assert got["verdict"] == HOLDS, got["reason"]
    raw = [stats.ttest_ind(T, values[k], equal_var=False, alternative="greater").pvalue for k in "abc"]
    assert [c["vs"] for c in got["comparisons"]] == ["a", "b", "c"]
    assert [c["p"] for c in got["comparisons"]] == pytest.approx(raw)
    assert [c["p_adjusted"] for c in got["comparisons"]] == pytest.approx(holm(raw))
    # the headline is the weakest win: vs a, by 1.5
    assert got["vs"] == "a" and got["difference"] == pytest.approx(1.5)
    assert got["p_adjusted"] == pytest.approx(max(holm(raw))) and got["p"] == pytest.approx(raw[0])
    assert got["ci95"] == pytest.approx(welch(T, values["a"])["ci95"])
    assert got["n"] == {"t": 3, "a": 3, "b": 3, "c": 3} and got["estimate"] == "mean(t) - mean(a)"


def test_holm_decides_where_single_tests_would_not():
    one = best_of({"t": T, "a": shifted(-1.0)}, "t")  # p = 0.035 alone: holds
    assert one["verdict"] == HOLDS and one["p"] == pytest.approx(0.0351, abs=1e-3)
    two = best_of({"t": T, "a": shifted(-1.0), "b": shifted(-1.0)}, "t")  # each 0.035, Holm: 0.07
    assert two["verdict"] == INCONCLUSIVE and two["p_adjusted"] == pytest.approx(2 * one["p"])
    assert all(c["p"] < ALPHA for c in two["comparisons"])


@pytest.mark.parametrize("values, higher, verdict, vs", [
    ({"t": T, "a": shifted(+2.0), "b": shifted(-2.0)}, True, FAILS, "a"),  # a beats the target
    ({"t": T, "a": shifted(-0.3), "b": shifted(-2.0)}, True, INCONCLUSIVE, "a"),  # best, not significantly
    ({"t": T, "a": shifted(+0.3), "b": shifted(-2.0)}, True, INCONCLUSIVE, "a"),  # beaten, not significantly
    ({"t": T, "a": shifted(+2.0), "b": shifted(+3.0)}, False, HOLDS, "a"),  # FID: lowest wins
    ({"t": T, "a": shifted(-2.0), "b": shifted(+3.0)}, False, FAILS, "a"),
])
def test_best_of_verdicts(values, higher, verdict, vs):
    got = best_of(values, "t", higher_is_better=higher)
    assert got["verdict"] == verdict, got["reason"]
    assert got["vs"] == vs
    if verdict == FAILS:
        assert got["p_opposite_adjusted"] < ALPHA and vs in got["reason"]


@pytest.mark.parametrize("values, why", [
    ({"t": T, "a": None, "b": shifted(-2.0)}, "not run: a"),
    ({"t": None, "a": T}, "not run: t"),
    ({"t": T, "a": [9.0], "b": shifted(-2.0)}, "fewer than 2 seeds: a (n=1)"),
    ({"t": T}, "nothing to compare with"),
])
def test_best_of_is_inconclusive_without_a_test(values, why):
    got = best_of(values, "t")
    assert got["verdict"] == INCONCLUSIVE and why in got["reason"] and got["p"] is None


def test_best_of_needs_the_target():
    with pytest.raises(ValueError, match="target 'x'"):
        best_of({"t": T}, "x")


# ---------------------------------------------------------------- trend

X = {"0": 0.0, "2.5k": 2.5, "5k": 5.0, "10k": 10.0}


def trend_values(slope, noise=(-0.4, 0.1, 0.3)):
    return {k: [60 + slope * x + e for e in noise] for k, x in X.items()}


def test_increases_matches_linregress_and_the_ols_formula():
    values = trend_values(0.3)
    got = increases(values, X, x_unit="1000 fakes")
    xs = np.array([X[k] for k, v in values.items() for _ in v])
    ys = np.array([y for v in values.values() for y in v])
    ref = stats.linregress(xs, ys, alternative="greater")
    assert got["slope"] == pytest.approx(ref.slope) and got["p"] == pytest.approx(ref.pvalue)
    # by hand: slope = Sxy / Sxx, se = sqrt(SSE / (n - 2) / Sxx), one-sided p from t(n - 2)
    sxx = ((xs - xs.mean()) ** 2).sum()
    slope = ((xs - xs.mean()) * (ys - ys.mean())).sum() / sxx
    resid = ys - ys.mean() - slope * (xs - xs.mean())
    se = math.sqrt((resid ** 2).sum() / (len(xs) - 2) / sxx)
    assert got["slope"] == pytest.approx(slope) and got["p"] == pytest.approx(stats.t.sf(slope / se, len(xs) - 2))
    half = stats.t.ppf(0.975, len(xs) - 2) * se
    assert got["ci95"] == pytest.approx([slope - half, slope + half]) and got["df"] == len(xs) - 2
    assert got["verdict"] == HOLDS and got["n"] == dict.fromkeys(X, 3)
    assert got["estimate"] == "OLS slope per 1000 fakes" and got["x"] == X
    assert got["p_opposite"] == pytest.approx(1 - got["p"])


@pytest.mark.parametrize("slope, increasing, verdict", [
    (0.3, True, HOLDS),
    (-0.3, True, FAILS),
    (0.01, True, INCONCLUSIVE),
    (-0.3, False, HOLDS),  # a claimed decrease
    (0.3, False, FAILS),
])
def test_increases_verdicts(slope, increasing, verdict):
    got = increases(trend_values(slope), X, increasing=increasing)
    assert got["verdict"] == verdict, got["reason"]
    assert got["direction"] == ("increasing" if increasing else "decreasing")


def test_increases_uses_every_seed_not_the_means():
    # means rise, but with the seeds' scatter the slope is not significant; the means alone would say it is
    values = {k: [60 + 0.05 * x + e for e in (-3.0, 0.0, 3.0)] for k, x in X.items()}
    got = increases(values, X)
    means = stats.linregress(list(X.values()), [np.mean(v) for v in values.values()], alternative="greater")
    assert means.pvalue < ALPHA and got["verdict"] == INCONCLUSIVE and got["p"] > ALPHA


@pytest.mark.parametrize("edit, why", [
    (lambda v: v.update({"5k": None}), "not run: 5k"),
    (lambda v: v.update({"5k": [61.0]}), "fewer than 2 seeds: 5k (n=1)"),
])
def test_increases_is_inconclusive_without_a_test(edit, why):
    values = trend_values(0.3)
    edit(values)
    got = increases(values, X)
    assert got["verdict"] == INCONCLUSIVE and why in got["reason"] and got["slope"] is None


# ---------------------------------------------------------------- how a verdict reads

def test_effect_and_n_text():
    got = best_of({"t": T, "a": shifted(-1.5)}, "t")
    text = effect_text(got)
    assert text.startswith("mean(t) - mean(a) = +1.50 (95% CI +") and "p = 0.0" in text and "Holm-adjusted" in text
    assert effect_text(beats({"t": T, "a": None}, "t", "a")) == "not tested"
    trend = effect_text(increases(trend_values(0.3), X, x_unit="1000 fakes"))
    assert trend.startswith("OLS slope per 1000 fakes = +0.30")
    failed = beats({"t": B, "a": A}, "t", "a")
    assert "opposite direction p = 0.035" in effect_text(failed)
    assert n_text({"a": 3, "b": 3}) == "3 per setup" and n_text({"a": 3, "b": 0}) == "a: 3, b: 0"


# ---------------------------------------------------------------- within a margin (TOST)

BYOL = [90.21, 90.05, 90.38]  # a baseline, n = 3


def welch_p(a, b, alternative):
    return stats.ttest_ind(np.asarray(a), np.asarray(b), equal_var=False, alternative=alternative).pvalue


@pytest.mark.parametrize("a, margin, verdict", [
    ([90.30, 90.12, 90.51], 1.1, HOLDS),  # +0.10, tight: both one-sided tests reject
    ([88.41, 88.65, 88.52], 1.1, FAILS),  # -1.69: below -1.1 significantly
    ([92.05, 91.71, 91.88], 1.1, FAILS),  # +1.67: above +1.1 significantly
    ([89.0, 91.5, 90.2], 1.1, INCONCLUSIVE),  # +0.03 but spread 1.25: the 90% CI crosses the margin
    ([91.18, 91.35, 91.02], 1.1, INCONCLUSIVE),  # +0.97: inside, not significantly; not beyond either
])
def test_within_matches_two_one_sided_welch_tests_in_scipy(a, margin, verdict):
    got = within({"ours": a, "base": BYOL}, "ours", "base", margin)
    assert got["verdict"] == verdict, got["reason"]
    a_, b_ = np.asarray(a), np.asarray(BYOL)
    # TOST: shifting a by the margin turns each bound into scipy's test of a zero difference
    p_lower = welch_p(a_ + margin, b_, "greater")  # H1: d > -margin
    p_upper = welch_p(a_ - margin, b_, "less")  # H1: d < +margin
    p_above = welch_p(a_ - margin, b_, "greater")  # H1: d > +margin
    p_below = welch_p(a_ + margin, b_, "less")  # H1: d < -margin
    assert got["p_lower"] == pytest.approx(p_lower) and got["p_upper"] == pytest.approx(p_upper)
    assert got["p_above"] == pytest.approx(p_above) and got["p_below"] == pytest.approx(p_below)
    assert got["p"] == pytest.approx(max(p_lower, p_upper))
    assert got["p_opposite"] == pytest.approx(min(1.0, 2 * min(p_above, p_below)))
    assert got["difference"] == pytest.approx(a_.mean() - b_.mean())
    assert got["ci95"] == pytest.approx(welch(a, BYOL)["ci95"]) and got["df"] == pytest.approx(welch(a, BYOL)["df"])
    ci90 = stats.ttest_ind(a_, b_, equal_var=False).confidence_interval(1 - 2 * ALPHA)
    assert got["ci90"] == pytest.approx([ci90.low, ci90.high])
    # the textbook equivalent of TOST: the (1 - 2 alpha) interval inside the margins
    assert (verdict == HOLDS) == (-margin < ci90.low and ci90.high < margin)
    assert got["margin"] == margin and got["vs"] == "base" and got["n"] == {"ours": 3, "base": 3}
    assert got["direction"] == "within ±1.1" and got["estimate"] == "mean(ours) - mean(base)"
    assert "\n" not in got["reason"] and got["test"].startswith("TOST")


def test_within_worked_by_hand():
    # means 90.31 and 90.2133, d = +0.0967; variances of the means 0.03810 / 3 and 0.02723 / 3,
    # se = sqrt(0.012700 + 0.009078) = 0.14757; Welch df = 0.021778^2 / (0.012700^2 / 2 + 0.009078^2 / 2) = 3.892
    a = [90.30, 90.12, 90.51]
    got = within({"a": a, "b": BYOL}, "a", "b", 1.1)
    assert got["difference"] == pytest.approx(0.09667, abs=1e-4) and got["df"] == pytest.approx(3.892, abs=2e-3)
    se = 0.14757
    assert got["p_lower"] == pytest.approx(stats.t.sf((0.09667 + 1.1) / se, 3.892), rel=2e-3)
    assert got["p_upper"] == pytest.approx(stats.t.cdf((0.09667 - 1.1) / se, 3.892), rel=2e-3)
    assert got["p"] == got["p_upper"] and got["p"] < 0.01  # the nearer bound decides


def test_within_holds_exactly_when_the_90_percent_interval_is_inside():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = (90 + rng.normal(rng.uniform(-2, 2), rng.uniform(0.05, 1.0), rng.integers(2, 6))).tolist()
        b = (90 + rng.normal(0, rng.uniform(0.05, 1.0), rng.integers(2, 6))).tolist()
        got = within({"a": a, "b": b}, "a", "b", 1.1)
        lo, hi = got["ci90"]
        assert (got["verdict"] == HOLDS) == (-1.1 < lo and hi < 1.1)
        if got["verdict"] == FAILS:  # significantly beyond a margin: the whole one-sided interval is outside it
            assert got["difference"] > 1.1 or got["difference"] < -1.1


@pytest.mark.parametrize("values, why", [
    ({"a": BYOL, "b": None}, "not run: b"),
    ({"a": [90.0], "b": BYOL}, "fewer than 2 seeds: a (n=1)"),
    ({"a": [90.0, 90.0], "b": [90.1, 90.1]}, "no spread"),
])
def test_within_is_inconclusive_without_a_test(values, why):
    got = within(values, "a", "b", 1.1)
    assert got["verdict"] == INCONCLUSIVE and why in got["reason"] and got["p"] is None and got["ci90"] is None


def test_within_needs_a_positive_margin():
    with pytest.raises(ValueError, match="margin must be > 0"):
        within({"a": BYOL, "b": BYOL}, "a", "b", 0.0)


def _ttest_p(a, b):  # one-sided Welch p that mean(a) > mean(b), from scipy
    return stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue


def test_each_of_holm_corrects_the_parts_against_scipy():
    base = [1.0, 1.1, 0.9]
    values = {"a": [2.0, 2.1, 1.9], "b": [1.5, 1.6, 1.3], "base": base}
    parts = {k: beats({k: values[k], "base": base}, k, "base") for k in ("a", "b")}
    out = each_of(parts, "settings")
    raw = [_ttest_p(values["a"], base), _ttest_p(values["b"], base)]
    adjusted = holm(raw)
    assert [c["p_adjusted"] for c in out["comparisons"]] == pytest.approx(adjusted)
    assert out["verdict"] == (HOLDS if max(adjusted) < ALPHA else INCONCLUSIVE)
    assert out["p_adjusted"] == pytest.approx(max(adjusted))  # the headline is the weakest part
    assert out["test"].endswith("per setting, Holm-corrected")


def test_each_of_does_not_hold_when_a_part_is_significantly_opposite():
    base = [1.0, 1.1, 0.9]
    parts = {"up": beats({"up": [2.0, 2.1, 1.9], "base": base}, "up", "base"),
             "down": beats({"down": [0.1, 0.2, 0.0], "base": base}, "down", "base")}
    out = each_of(parts, "settings")
    assert out["verdict"] == FAILS and out["vs"] == parts["down"]["vs"]


def test_each_of_leaves_out_and_names_parts_not_run():
    base = [1.0, 1.1, 0.9]
    parts = {"ran": beats({"ran": [2.0, 2.1, 1.9], "base": base}, "ran", "base"),
             "missing": beats({"missing": [], "base": base}, "missing", "base")}
    out = each_of(parts, "settings")
    assert out["not_run"] == ["missing"] and len(out["comparisons"]) == 1 and out["verdict"] == HOLDS
