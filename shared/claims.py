"""Standard tests that turn a paper's claim and its per-seed numbers into a verdict.

Every test works on the per-seed values of each setup (one number per seed), never on means and
stds alone. Each claim type has its own test:

- "A beats B" (:func:`beats`): a one-sided Welch t-test (unequal variances,
  ``scipy.stats.ttest_ind(equal_var=False)``) of mean(A) - mean(B) in the claimed direction.
- "the target is the best of k setups" (:func:`best_of`): one-sided Welch t-tests of the target
  against each other setup, Holm-corrected over those k - 1 tests (:func:`holm`). It holds if every
  adjusted p is below alpha; it does not hold if some other setup beats the target significantly
  (the k - 1 opposite one-sided tests, Holm-corrected too).
- "the metric increases (decreases) with x" (:func:`increases`): the t-test of the ordinary
  least-squares slope over every seed's (x, value) point (``scipy.stats.linregress``, one-sided).
  Chosen over Jonckheere-Terpstra because it gives an effect size with a confidence interval (the
  slope, per unit of x); it tests a linear trend.
- "A stays within ±margin of B" (:func:`within`): an equivalence test, Schuirmann's TOST with two
  one-sided Welch t-tests against -margin and +margin; it does not hold when a one-sided Welch test
  puts the difference beyond the margin (Bonferroni over the two directions).

The verdict, at ALPHA = 0.05: HOLDS if the claimed direction is significant, FAILS ("does not hold")
if the opposite direction is, else INCONCLUSIVE; also INCONCLUSIVE, with the reason naming the
setup, when a setup the claim needs was not run or has fewer than 2 seeds (no variance, no test).

Every verdict carries what a reviewer needs to check it or apply another rule: ``test``, ``alpha``,
``direction``, ``n`` and ``values`` per setup (and ``numbers``: mean, sample std (ddof=1), n),
``estimate`` (what the effect is) with the effect as ``difference`` (mean(target) - mean(other), in
the metric's units) or ``slope``, its two-sided 95% CI ``ci95`` (Welch-Satterthwaite ``df`` for a
difference, n - 2 for a slope), ``p`` (one-sided, claimed direction) and ``p_opposite``, for Holm
also ``p_adjusted`` / ``p_opposite_adjusted`` and every pairwise test in ``comparisons``; then
``rule``, ``verdict`` and a one-line ``reason``. These are the suite's rules, not the papers'.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
ALPHA = 0.05  # one-sided, in each direction
CI_LEVEL = 0.95  # two-sided confidence intervals of the effects
STD_NOTE = "sample std over seeds (ddof=1); None below 2 seeds"
MIN_SEEDS = 2  # below this a setup has no variance estimate: no t-test

Values = Mapping[str, Sequence[float] | None]  # {setup: per-seed values, or None / [] when not run}


def seed_stats(values: Iterable[float]) -> dict | None:
    """{"mean", "std", "n"} of per-seed values; None if there are none (the setup was not run)."""
    xs = np.asarray(list(values), dtype=float)
    if len(xs) == 0:
        return None
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) >= 2 else None, "n": len(xs)}


# ---------------------------------------------------------------- the tests' arithmetic

def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """mean(a) - mean(b) with its Welch-Satterthwaite df, two-sided 95% CI and both one-sided p-values.

    ``p_greater`` is the p of "mean(a) > mean(b)", ``p_less`` of "mean(a) < mean(b)" (scipy's
    ``ttest_ind(equal_var=False)``). With no spread in either sample the t statistic is undefined:
    df, CI and p are None.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < MIN_SEEDS:
        raise ValueError(f"Welch's test needs >= {MIN_SEEDS} values per sample, got {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": diff, "se": 0.0, "df": None, "ci95": None, "p_greater": None, "p_less": None}
    greater = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    less = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    df = float(greater.df)
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * se
    return {"difference": diff, "se": se, "df": df, "ci95": [diff - half, diff + half],
            "p_greater": float(greater.pvalue), "p_less": float(less.pvalue)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sorted ascending, the j-th (from 0) of m
    is multiplied by m - j, capped at 1, and made non-decreasing along the sorted order. A hypothesis is
    rejected at alpha (family-wise) when its adjusted p is below alpha."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


# ---------------------------------------------------------------- common parts of a verdict

def _clean(values: Values) -> dict[str, list[float]]:
    return {k: [float(x) for x in (v or [])] for k, v in values.items()}


def _base(test: str, direction: str, values: dict[str, list[float]], rule: str) -> dict:
    return {"test": test, "alpha": ALPHA, "direction": direction,
            "n": {k: len(v) for k, v in values.items()}, "values": values,
            "numbers": {k: seed_stats(v) for k, v in values.items()}, "rule": rule}


def _untestable(values: dict[str, list[float]], needed: Iterable[str]) -> str | None:
    """Why the claim cannot be tested (a setup not run, or below MIN_SEEDS seeds); None if it can."""
    needed = list(needed)
    if missing := [k for k in needed if not values.get(k)]:
        return f"not run: {', '.join(missing)}"
    if few := [f"{k} (n={len(values[k])})" for k in needed if len(values[k]) < MIN_SEEDS]:
        return f"fewer than {MIN_SEEDS} seeds: {', '.join(few)}"
    return None


def _verdict(p: float | None, p_opposite: float | None) -> str:
    if p is not None and p < ALPHA:
        return HOLDS
    if p_opposite is not None and p_opposite < ALPHA:
        return FAILS
    return INCONCLUSIVE


def _num(x: float) -> str:
    """An effect or bound: two decimals, signed; small values keep two significant figures."""
    return f"{x:+.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:+.2g}"


def _p(p: float) -> str:
    return f"{p:.2g}"  # two significant figures; 1.2e-05 for small ones


def _rule(what: str, needs: str) -> str:
    return (f"{what}; holds if p < {ALPHA} in the claimed direction, does not hold if p < {ALPHA} in the "
            f"opposite direction, else inconclusive; needs >= {MIN_SEEDS} seeds in {needs}")


def _better(higher_is_better: bool) -> tuple[str, str]:
    """(direction text, the scipy alternative under which the target is better)."""
    return ("higher is better", "greater") if higher_is_better else ("lower is better", "less")


# ---------------------------------------------------------------- the claim types

def beats(values: Values, target: str, other: str, higher_is_better: bool = True) -> dict:
    """"`target` beats `other`": a one-sided Welch t-test on their per-seed values.

    ``difference`` is mean(target) - mean(other); with ``higher_is_better=False`` (FID) the claim
    holds when it is significantly negative.
    """
    direction, better = _better(higher_is_better)
    vals = _clean({target: values.get(target), other: values.get(other)})
    test = "one-sided Welch t-test"
    out = {**_base(test, direction, vals, _rule(f"{test} of mean({target}) vs mean({other}), {direction}",
                                                "each setup")),
           "vs": other, "estimate": f"mean({target}) - mean({other})", "difference": None, "ci95": None,
           "df": None, "p": None, "p_opposite": None}
    if why := _untestable(vals, (target, other)):
        return {**out, "verdict": INCONCLUSIVE, "reason": why}
    w = welch(vals[target], vals[other])
    p, q = (w["p_greater"], w["p_less"]) if better == "greater" else (w["p_less"], w["p_greater"])
    out.update(difference=w["difference"], ci95=w["ci95"], df=w["df"], p=p, p_opposite=q)
    if p is None:
        return {**out, "verdict": INCONCLUSIVE,
                "reason": f"no spread across seeds in either setup: the t statistic is undefined "
                          f"(difference {_num(w['difference'])})"}
    verdict = _verdict(p, q)
    effect = f"difference {_num(w['difference'])}"
    reason = {HOLDS: f"{target} better than {other}: {effect}, p = {_p(p)} < {ALPHA}",
              FAILS: f"{other} better than {target}: {effect}, opposite p = {_p(q)} < {ALPHA}",
              INCONCLUSIVE: f"{effect}, p = {_p(p)} (opposite {_p(q)}), neither below {ALPHA}"}[verdict]
    return {**out, "verdict": verdict, "reason": reason}


def best_of(values: Values, target: str, higher_is_better: bool = True) -> dict:
    """"`target` is the best of the setups in `values`": one-sided Welch t-tests of the target against
    each other setup, Holm-corrected over the k - 1 tests.

    Holds if every Holm-adjusted p is below alpha; does not hold if an opposite test (another setup
    better than the target) is, Holm-corrected over its own k - 1 tests. The headline ``vs``,
    ``difference``, ``ci95``, ``p`` and ``p_adjusted`` are those of the decisive comparison: for
    "does not hold" the most significant setup beating the target, else the weakest win (largest
    adjusted p). Every comparison is in ``comparisons``.
    """
    direction, better = _better(higher_is_better)
    vals = _clean(values)
    if target not in vals:
        raise ValueError(f"best_of: target {target!r} is not among the setups {sorted(vals)}")
    others = [k for k in vals if k != target]
    test = "one-sided Welch t-tests vs each other setup, Holm-corrected"
    rule = (f"one-sided Welch t-tests of mean({target}) vs each of the {len(others)} other setups, {direction}, "
            f"Holm-corrected; holds if every adjusted p < {ALPHA}, does not hold if another setup is better "
            f"with adjusted p < {ALPHA} (the opposite tests, Holm-corrected), else inconclusive; needs "
            f">= {MIN_SEEDS} seeds in every setup")
    out = {**_base(test, direction, vals, rule),
           "vs": None, "estimate": None, "difference": None, "ci95": None, "df": None, "p": None,
           "p_opposite": None, "p_adjusted": None, "p_opposite_adjusted": None, "comparisons": []}
    if not others:
        return {**out, "verdict": INCONCLUSIVE, "reason": "nothing to compare with"}
    if why := _untestable(vals, [target, *others]):
        return {**out, "verdict": INCONCLUSIVE, "reason": why}
    comparisons = []
    for k in others:
        w = welch(vals[target], vals[k])
        p, q = (w["p_greater"], w["p_less"]) if better == "greater" else (w["p_less"], w["p_greater"])
        comparisons.append({"vs": k, "difference": w["difference"], "ci95": w["ci95"], "df": w["df"],
                            "p": p, "p_opposite": q})
    if undefined := [c["vs"] for c in comparisons if c["p"] is None]:
        return {**out, "comparisons": comparisons, "verdict": INCONCLUSIVE,
                "reason": f"no spread across seeds in {target} or {', '.join(undefined)}: the t statistic "
                          f"is undefined"}
    for c, pa, qa in zip(comparisons, holm([c["p"] for c in comparisons]),
                         holm([c["p_opposite"] for c in comparisons])):
        c.update(p_adjusted=pa, p_opposite_adjusted=qa)
    beaten_by = min(comparisons, key=lambda c: c["p_opposite_adjusted"])
    weakest = max(comparisons, key=lambda c: c["p_adjusted"])
    if all(c["p_adjusted"] < ALPHA for c in comparisons):
        verdict, head = HOLDS, weakest
        reason = (f"better than every other setup: largest Holm-adjusted p = {_p(head['p_adjusted'])} < {ALPHA} "
                  f"(vs {head['vs']}, difference {_num(head['difference'])})")
    elif beaten_by["p_opposite_adjusted"] < ALPHA:
        verdict, head = FAILS, beaten_by
        reason = (f"{head['vs']} is better: difference {_num(head['difference'])}, Holm-adjusted opposite "
                  f"p = {_p(head['p_opposite_adjusted'])} < {ALPHA}")
    else:
        verdict, head = INCONCLUSIVE, weakest
        reason = (f"vs {head['vs']}: difference {_num(head['difference'])}, Holm-adjusted p = "
                  f"{_p(head['p_adjusted'])} >= {ALPHA}, and no other setup significantly better")
    out.update({k: head[k] for k in ("vs", "difference", "ci95", "df", "p", "p_opposite", "p_adjusted",
                                     "p_opposite_adjusted")})
    return {**out, "estimate": f"mean({target}) - mean({head['vs']})", "comparisons": comparisons,
            "verdict": verdict, "reason": reason}


def increases(values: Values, x: Mapping[str, float], increasing: bool = True, x_unit: str = "unit of x") -> dict:
    """"The metric increases (``increasing=False``: decreases) with x": the one-sided t-test of the
    OLS slope over every seed's (x, value) point of every setup (``scipy.stats.linregress``).

    ``x`` gives each setup's x; ``slope`` is in the metric's units per ``x_unit``, with its 95% CI
    (t with n - 2 df, n the number of points).
    """
    vals = _clean(values)
    if unknown := set(vals) - set(x):
        raise ValueError(f"increases: no x for setups {sorted(unknown)}")
    direction = "increasing" if increasing else "decreasing"
    test = "one-sided OLS slope t-test over all seeds' points"
    out = {**_base(test, direction, vals, _rule(f"{test} (scipy.stats.linregress), claimed {direction} in x",
                                                "every setup")),
           "x": {k: float(x[k]) for k in vals}, "estimate": f"OLS slope per {x_unit}", "slope": None,
           "ci95": None, "df": None, "p": None, "p_opposite": None}
    if why := _untestable(vals, list(vals)):
        return {**out, "verdict": INCONCLUSIVE, "reason": why}
    xs = np.array([x[k] for k, v in vals.items() for _ in v], dtype=float)
    ys = np.array([y for v in vals.values() for y in v], dtype=float)
    if len(set(xs.tolist())) < 2:
        return {**out, "verdict": INCONCLUSIVE, "reason": "fewer than 2 distinct x: no slope"}
    fit = stats.linregress(xs, ys, alternative="greater" if increasing else "less")
    df = len(xs) - 2
    slope, se = float(fit.slope), float(fit.stderr)
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * se
    p = float(fit.pvalue)
    out.update(slope=slope, df=float(df))
    if not math.isfinite(p) or se == 0:
        return {**out, "verdict": INCONCLUSIVE,
                "reason": f"no scatter about the line: the slope's t statistic is undefined (slope {_num(slope)})"}
    out["ci95"] = [slope - half, slope + half]
    q = float(stats.t.sf(-fit.slope / se, df)) if increasing else float(stats.t.cdf(-fit.slope / se, df))
    out.update(p=p, p_opposite=q)
    verdict = _verdict(p, q)
    effect = f"slope {_num(slope)} per {x_unit} over {len(xs)} points"
    opposite = "decreasing" if increasing else "increasing"
    reason = {HOLDS: f"{direction}: {effect}, p = {_p(p)} < {ALPHA}",
              FAILS: f"{opposite}: {effect}, opposite p = {_p(q)} < {ALPHA}",
              INCONCLUSIVE: f"{effect}, p = {_p(p)} (opposite {_p(q)}), neither below {ALPHA}"}[verdict]
    return {**out, "verdict": verdict, "reason": reason}


def within(values: Values, target: str, other: str, margin: float) -> dict:
    """"`target` stays within ±`margin` of `other`" (equivalence): Schuirmann's TOST with Welch t-tests.

    With d = mean(target) - mean(other), the claim holds when both one-sided Welch tests reject, of
    H0 d <= -margin (``p_lower``, alternative d > -margin) and of H0 d >= +margin (``p_upper``,
    alternative d < +margin); ``p`` is the larger of the two (an intersection-union test: no
    correction). It does not hold when a one-sided Welch test puts d beyond the margin, above
    (``p_above``, alternative d > +margin) or below (``p_below``, alternative d < -margin);
    ``p_opposite`` = min(1, 2 min(p_above, p_below)), Bonferroni over the two directions. Every test
    has the Welch-Satterthwaite ``df`` of the unshifted samples. ``ci90`` is the two-sided
    (1 - 2 alpha) Welch interval of d: TOST holds exactly when it lies inside (-margin, +margin).
    """
    if not margin > 0:
        raise ValueError(f"within: the margin must be > 0, got {margin!r}")
    vals = _clean({target: values.get(target), other: values.get(other)})
    test = "TOST: two one-sided Welch t-tests against -margin and +margin"
    rule = (f"TOST of mean({target}) - mean({other}) against ±{margin:g} (two one-sided Welch t-tests); holds if "
            f"both p < {ALPHA} (p = the larger), does not hold if a one-sided Welch t-test puts the difference "
            f"beyond +{margin:g} or below -{margin:g} with p < {ALPHA} (Bonferroni over the two directions), else "
            f"inconclusive; needs >= {MIN_SEEDS} seeds in each setup")
    out = {**_base(test, f"within ±{margin:g}", vals, rule),
           "vs": other, "margin": float(margin), "estimate": f"mean({target}) - mean({other})", "difference": None,
           "ci95": None, "ci90": None, "df": None, "p": None, "p_opposite": None, "p_lower": None, "p_upper": None,
           "p_above": None, "p_below": None}
    if why := _untestable(vals, (target, other)):
        return {**out, "verdict": INCONCLUSIVE, "reason": why}
    w = welch(vals[target], vals[other])
    d = w["difference"]
    out.update(difference=d, ci95=w["ci95"], df=w["df"])
    if w["df"] is None:
        return {**out, "verdict": INCONCLUSIVE,
                "reason": f"no spread across seeds in either setup: the t statistic is undefined "
                          f"(difference {_num(d)})"}
    se, df = w["se"], w["df"]
    t_lower, t_upper = (d + margin) / se, (d - margin) / se
    p_lower, p_upper = float(stats.t.sf(t_lower, df)), float(stats.t.cdf(t_upper, df))
    p_above, p_below = float(stats.t.sf(t_upper, df)), float(stats.t.cdf(t_lower, df))
    p, q = max(p_lower, p_upper), min(1.0, 2 * min(p_above, p_below))
    half = float(stats.t.ppf(1 - ALPHA, df)) * se
    out.update(ci90=[d - half, d + half], p=p, p_opposite=q, p_lower=p_lower, p_upper=p_upper, p_above=p_above,
               p_below=p_below)
    verdict = _verdict(p, q)
    ci = f"{1 - 2 * ALPHA:.0%} CI {_num(d - half)} to {_num(d + half)}"
    side = "above +" if p_above <= p_below else "below -"
    reason = {HOLDS: f"within ±{margin:g}: difference {_num(d)} ({ci}), TOST p = {_p(p)} < {ALPHA}",
              FAILS: f"{side}{margin:g}: difference {_num(d)} ({ci}), p = {_p(q)} < {ALPHA} (Bonferroni over the "
                     f"two directions)",
              INCONCLUSIVE: f"difference {_num(d)} ({ci}), TOST p = {_p(p)}, beyond-margin p = {_p(q)}, neither "
                            f"below {ALPHA}"}[verdict]
    return {**out, "verdict": verdict, "reason": reason}


# ---------------------------------------------------------------- how a verdict reads

def n_text(n: Mapping[str, int]) -> str:
    """Seeds per setup: "3 per setup" when all are equal, else "a: 3, b: 2"."""
    counts = set(n.values())
    if len(counts) == 1:
        return f"{counts.pop()} per setup"
    return ", ".join(f"{k}: {v}" for k, v in n.items())


def effect_text(claim: Mapping) -> str:
    """The effect with its 95% CI and p, one line: "mean(a) - mean(b) = +1.50 (95% CI +0.70 to +2.30),
    p = 0.004 (Holm-adjusted 0.012)"; "not tested" where no test ran."""
    key = "slope" if "slope" in claim else "difference"
    value = claim.get(key)
    if value is None:
        return "not tested"
    text = f"{claim.get('estimate') or key} = {_num(value)}"
    if claim.get("ci95"):
        lo, hi = claim["ci95"]
        text += f" (95% CI {_num(lo)} to {_num(hi)})"
    if claim.get("p") is None:
        return text + (", p undefined" if "p" in claim else "")
    text += f", p = {_p(claim['p'])}"
    if claim.get("p_adjusted") is not None:
        text += f" (Holm-adjusted {_p(claim['p_adjusted'])})"
    if claim.get("verdict") == FAILS:
        opposite = claim.get("p_opposite_adjusted", claim.get("p_opposite"))
        if opposite is not None:
            text += f"; opposite direction p = {_p(opposite)}" + (" (Holm-adjusted)" if "p_adjusted" in claim else "")
    return text


def each_of(parts: dict[str, dict], what: str) -> dict:
    """"Every one of ``parts`` holds": the parts are verdicts of one kind (``beats``, ``within``) on different
    setups; their one-sided p (and their opposite p) are Holm-corrected over the parts that were tested.

    A part whose setups were not run is left out (named in ``not_run``): the claim is about the settings a scale
    runs. It holds if every other part was tested and every adjusted p is below alpha; it does not hold if some
    part's opposite p, Holm-adjusted, is; else inconclusive (a part with fewer than 2 seeds or no spread leaves
    it inconclusive unless another part is significantly opposite). The headline (``vs``, ``difference``, ``p``,
    ...) is the decisive part: for "does not hold" the most significant opposite one, else the weakest.
    """
    one = what[:-1] if what.endswith("s") else what
    first = next(iter(parts.values()))
    values: dict[str, list[float]] = {}
    for part in parts.values():
        values.update(part["values"])
    missing = {k: [s for s, v in part["values"].items() if not v] for k, part in parts.items()}
    not_run = [k for k, m in missing.items() if m]
    tested = {k: v for k, v in parts.items() if v["p"] is not None}
    untested = {k: v["reason"] for k, v in parts.items() if v["p"] is None and k not in not_run}
    rule = (f"{first['test']} for each {one} that ran, Holm-corrected over them; holds if every {one} that ran was "
            f"tested and every adjusted p < {ALPHA}, does not hold if some adjusted opposite p < {ALPHA}, else "
            f"inconclusive; needs >= 2 seeds in every setup")
    out = {"test": f"{first['test']} per {one}, Holm-corrected", "alpha": ALPHA, "direction": first["direction"],
           "n": {k: len(v) for k, v in values.items()}, "values": values,
           "numbers": {k: seed_stats(v) for k, v in values.items()}, "rule": rule, "vs": None, "estimate": None,
           "difference": None, "ci95": None, "df": None, "p": None, "p_opposite": None, "p_adjusted": None,
           "p_opposite_adjusted": None, "comparisons": [], "not_run": not_run, "untested": untested}
    if not tested:
        if len(not_run) == len(parts):
            reason = "not run: " + ", ".join(dict.fromkeys(s for m in missing.values() for s in m))
        else:
            reason = "; ".join(f"{k}: {why}" for k, why in untested.items())
        return {**out, "verdict": INCONCLUSIVE, "reason": reason}
    comparisons = []
    for (label, part), pa, qa in zip(tested.items(), holm([p["p"] for p in tested.values()]),
                                     holm([p["p_opposite"] for p in tested.values()])):
        comparisons.append({"label": label, "vs": part["vs"], "estimate": part["estimate"],
                            "difference": part["difference"], "ci95": part["ci95"], "df": part["df"], "p": part["p"],
                            "p_opposite": part["p_opposite"], "p_adjusted": pa, "p_opposite_adjusted": qa,
                            **({"ci90": part["ci90"], "margin": part["margin"]} if "margin" in part else {}),
                            "reason": part["reason"]})
    beaten = min(comparisons, key=lambda c: c["p_opposite_adjusted"])
    weakest = max(comparisons, key=lambda c: c["p_adjusted"])
    if not untested and all(c["p_adjusted"] < ALPHA for c in comparisons):
        verdict, head = HOLDS, weakest
        reason = (f"every {one} of {len(comparisons)} holds: largest Holm-adjusted p = {head['p_adjusted']:.2g} < "
                  f"{ALPHA} ({head['label']}, difference {head['difference']:+.2f})")
    elif beaten["p_opposite_adjusted"] < ALPHA:
        verdict, head = FAILS, beaten
        reason = (f"{head['label']} goes the other way: difference {head['difference']:+.2f}, Holm-adjusted opposite "
                  f"p = {head['p_opposite_adjusted']:.2g} < {ALPHA}")
    else:
        verdict, head = INCONCLUSIVE, weakest
        reason = (f"weakest {one} {head['label']}: difference {head['difference']:+.2f}, Holm-adjusted p = "
                  f"{head['p_adjusted']:.2g}, none significantly the other way")
        if untested:
            reason += "; not tested: " + "; ".join(f"{k} ({why})" for k, why in untested.items())
    if not_run:
        reason += f" (not run, left out: {', '.join(not_run)})"
    out.update({k: head[k] for k in ("vs", "estimate", "difference", "ci95", "df", "p", "p_opposite", "p_adjusted",
                                     "p_opposite_adjusted")})
    return {**out, "comparisons": comparisons, "verdict": verdict, "reason": reason}
