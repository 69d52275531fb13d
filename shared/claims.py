"""The suite's rules for turning a paper's claim and seed-level numbers into a verdict.

A setup's numbers are {"mean", "std", "n"} over seeds, std the sample std (ddof=1),
None below two seeds. A difference counts only when it exceeds the combined std
sqrt(s1^2 + s2^2) of the two setups compared; with an unknown std (one seed) nothing
is decided. These are the suite's rules, not the papers': each verdict carries its
rule and numbers so a reader can apply another.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
STD_NOTE = "sample std over seeds (ddof=1); None below 2 seeds"

Stats = Mapping[str, float | int | None]


def seed_stats(values: Iterable[float]) -> dict | None:
    """{"mean", "std", "n"} of per-seed values; None if there are none (the setup was not run)."""
    xs = np.asarray(list(values), dtype=float)
    if len(xs) == 0:
        return None
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) >= 2 else None, "n": len(xs)}


def combined_std(a: Stats, b: Stats) -> float | None:
    if a["std"] is None or b["std"] is None:
        return None
    return math.hypot(a["std"], b["std"])


def is_best(stats: Mapping[str, Stats | None], target: str, higher_is_better: bool = True) -> dict:
    """Is setup `target` the best of `stats` ({setup: numbers or None when not run})?

    holds: `target` is best and beats the runner-up by more than their combined std;
    does not hold: another setup beats it by more than their combined std;
    else inconclusive (also when a setup was not run, or a std is unknown).
    """
    better = "highest" if higher_is_better else "lowest"
    rule = (f"holds if {target} has the {better} mean and beats the runner-up by more than sqrt(s1^2 + s2^2); "
            f"does not hold if another setup beats it by more than their combined std; else inconclusive. "
            f"Needs >= 2 seeds (std known)")
    sign = 1.0 if higher_is_better else -1.0
    out = {"rule": rule, "numbers": dict(stats)}
    best = stats.get(target)
    if best is None:
        return {**out, "verdict": INCONCLUSIVE, "reason": f"{target} not run"}
    others = {k: s for k, s in stats.items() if k != target and s is not None}
    for k, s in sorted(others.items()):
        comb, gap = combined_std(best, s), sign * (s["mean"] - best["mean"])
        if comb is not None and gap > comb:
            return {**out, "verdict": FAILS, "beaten_by": k, "difference": gap, "combined_std": comb,
                    "reason": f"{k} beats it by {gap:.2f} > {comb:.2f}"}
    if missing := [k for k, s in stats.items() if s is None]:
        return {**out, "verdict": INCONCLUSIVE, "reason": f"not run: {missing}"}
    if not others:
        return {**out, "verdict": INCONCLUSIVE, "reason": "nothing to compare with"}
    runner = max(others, key=lambda k: sign * others[k]["mean"])
    margin, comb = sign * (best["mean"] - others[runner]["mean"]), combined_std(best, others[runner])
    out.update(runner_up=runner, difference=margin, combined_std=comb)
    if comb is None:
        return {**out, "verdict": INCONCLUSIVE, "reason": "fewer than 2 seeds: std unknown"}
    if margin > comb:
        return {**out, "verdict": HOLDS, "reason": f"beats {runner} by {margin:.2f} > {comb:.2f}"}
    return {**out, "verdict": INCONCLUSIVE, "reason": f"margin over {runner} {margin:+.2f} vs combined std {comb:.2f}"}
