"""Stage `report`: Table 1's EMNIST-Omniglot columns reproduced vs reported, the generators' checks, claims.

    python -m papers.augmentation_generator.report --eval-dir papers/augmentation_generator/outputs/eval \
        --game-dir papers/augmentation_generator/outputs/game --scale mini \
        --out papers/augmentation_generator/results/mini --log
    python -m papers.augmentation_generator.report --scale mini --out papers/augmentation_generator/results/mini \
        --from-runs

Reads the evaluate stage's records (`<eval-dir>/<run>/table1_d_to_c.json`, `table1_d_to_d.json`) and the
game stage's (`<game-dir>/seed<S>/metrics.json`, with its grids) and writes into `--out`:
  table1_d_to_c.md/.json, table1_d_to_d.md/.json   top-1 (%) of a new linear head per row (mean ± std over
                      seeds) against the paper's
  table1_<col>_vs_reported.png   per table: each row's seeds, mean ± std beside the paper's number
  generators.png      the game's grids of seed 0: G_A(x, z) over a sweep of z (Figure 5's analogue) and
                      clean x | dotted x~ | G_E(x~)
  game_losses.png     the game's losses and critic accuracies over steps (mean over seeds)
  claims.json         the claims the EMNIST-Omniglot columns allow (shared.claims: one-sided Welch t-tests on
                      per-seed values, alpha 0.05; the gains compared per seed) and the generators' checks
  summary.json        each row's mean, std, n and the verdicts (for `dvc metrics show`); under `extra_rows`, F
                      before re-training (`mocov2_pretrained`, not a row of the paper's table)
  runs/eval/…, runs/game/…   every record read, committed (--from-runs recomputes from them alone)
The ImageNet-DAISO columns are in reported.yaml but need ImageNet-1k and DAISO-100: not run, not compared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shared import records
from shared.claims import beats
from shared.comparison import Comparison, compare, load_reported
from shared.io import atomic_write_text
from shared.report import Report, figure, not_run, report_parser, run_report, runs_dir, seed_stats

PAPER = "augmentation_generator"
TABLES = ("table1_d_to_c", "table1_d_to_d")  # the EMNIST-Omniglot columns; DAISO's are not runnable offline
BASELINE, OURS, UNION = "mocov2_xp", "mocov2_xp_ga", "mocov2_xp_xf"
EXTRA = "mocov2_pretrained"  # F before re-training: our extra row, beside (not in) the paper's table
# the game record's checks (papers/augmentation_generator/game.py): A9, G_E removes dots; A8, G_L recovers z
ELIMINATED, DOTTED = "eliminate_l1", "dotted_l1"
LATENT, LATENT_CHANCE = "latent_l1", "latent_l1_independent"
GRIDS = ("z_sweep.png", "eliminate.png")


def _by_seed(c: Comparison, row: str) -> dict[int, float]:
    r = next((r for r in c.rows if r.id == row), None)
    if r is None or not r.values:
        return {}
    return dict(zip(r.seeds, r.values))


def _values(c: Comparison, *rows: str) -> dict[str, list[float]]:
    return {row: list(_by_seed(c, row).values()) for row in rows}


def _gains(c: Comparison) -> list[float]:
    """Per seed: ours - baseline (the two re-trainings share the seed's pre-trained F and game)."""
    ours, base = _by_seed(c, OURS), _by_seed(c, BASELINE)
    return [ours[s] - base[s] for s in sorted(set(ours) & set(base))]


def claims(tables: dict[str, Comparison], game: list[records.MetricsRecord], reported: dict) -> list[dict]:
    """The claims of Sec. 4.2 that the EMNIST-Omniglot columns allow, and the generators' checks."""
    dc, dd = tables["table1_d_to_c"], tables["table1_d_to_d"]
    p = {t: {r["id"]: r["mean"] for r in reported["tables"][t]["rows"]} for t in TABLES}
    base_transfer = {"D → D": _values(dd, BASELINE)[BASELINE], "D → C": _values(dc, BASELINE)[BASELINE]}
    gains = {"gain on D → C": _gains(dc), "gain on D → D": _gains(dd)}
    check = {k: [r.metrics[k] for r in game if k in r.metrics] for k in (ELIMINATED, DOTTED, LATENT, LATENT_CHANCE)}
    return [
        {"id": "ours_beats_baseline_d_to_c", "claim": "MoCo v2 + G_A beats the MoCo v2 baseline (both re-trained on "
         "X_p) on D → C", "source": "Table 1, Sec. 4.2 (A1)",
         "reported": f"{p['table1_d_to_c'][OURS]} vs {p['table1_d_to_c'][BASELINE]}", "data": "table1_d_to_c rows",
         **beats(_values(dc, OURS, BASELINE), OURS, BASELINE)},
        {"id": "ours_beats_baseline_d_to_d", "claim": "MoCo v2 + G_A beats the MoCo v2 baseline on D → D",
         "source": "Table 1, Sec. 4.2 (A1)",
         "reported": f"{p['table1_d_to_d'][OURS]} vs {p['table1_d_to_d'][BASELINE]}", "data": "table1_d_to_d rows",
         **beats(_values(dd, OURS, BASELINE), OURS, BASELINE)},
        {"id": "gain_larger_d_to_c", "claim": "the gain of G_A over the baseline is larger where fine-tuning and test "
         "conditions differ (D → C) than where they match (D → D)", "source": "Sec. 4.2 (A2)",
         "reported": f"{p['table1_d_to_c'][OURS] - p['table1_d_to_c'][BASELINE]:+.2f} vs "
                     f"{p['table1_d_to_d'][OURS] - p['table1_d_to_d'][BASELINE]:+.2f} points",
         "data": "per seed: ours - baseline in each column (same pre-trained F and generators)",
         **beats(gains, "gain on D → C", "gain on D → D")},
        {"id": "ours_beats_union_d_to_c", "claim": "MoCo v2 + G_A (re-trained on X_p) beats MoCo v2 re-trained on "
         "X_p ∪ X~_f on D → C", "source": "Table 1, Sec. 4.2 (A3)",
         "reported": f"{p['table1_d_to_c'][OURS]} vs {p['table1_d_to_c'][UNION]}", "data": "table1_d_to_c rows",
         **beats(_values(dc, OURS, UNION), OURS, UNION)},
        {"id": "union_beats_ours_d_to_d", "claim": "MoCo v2 re-trained on X_p ∪ X~_f beats MoCo v2 + G_A on D → D "
         "(the one column where ours loses)", "source": "Table 1, Sec. 4.2 (A3, A4)",
         "reported": f"{p['table1_d_to_d'][UNION]} vs {p['table1_d_to_d'][OURS]}", "data": "table1_d_to_d rows",
         **beats(_values(dd, UNION, OURS), UNION, OURS)},
        {"id": "baseline_transfers_badly", "claim": "the X_p baseline transfers badly from dotted to clean: its "
         "D → D accuracy is above its D → C accuracy", "source": "Table 1 (A6)",
         "reported": f"D → D {p['table1_d_to_d'][BASELINE]} vs D → C {p['table1_d_to_c'][BASELINE]}",
         "data": "the mocov2_xp row of both columns", **beats(base_transfer, "D → D", "D → C")},
        {"id": "eliminator_removes_dots", "claim": "G_E removes the dots: G_E(x~) is closer (L1) to the clean x than "
         "x~ is", "source": "Sec. 3.2 (A9; checkable here because the clean Omniglot images exist)",
         "reported": "not reported (implied by the method)", "data": f"game records: {ELIMINATED} vs {DOTTED}",
         **beats({ELIMINATED: check[ELIMINATED], DOTTED: check[DOTTED]}, ELIMINATED, DOTTED,
                 higher_is_better=False)},
        {"id": "latent_predictor_recovers_z", "claim": "G_L recovers z: |G_L(G_A(x, z)) - z| is below the error of "
         "an independent z", "source": "Sec. 3.2, Figure 5 (A8)", "reported": "not reported (implied by the method)",
         "data": f"game records: {LATENT} vs {LATENT_CHANCE}",
         **beats({LATENT: check[LATENT], LATENT_CHANCE: check[LATENT_CHANCE]}, LATENT, LATENT_CHANCE,
                 higher_is_better=False)},
    ]


# ---------------------------------------------------------------- figures

def generators_figure(game_dir: Path, scale: str):
    """Seed 0's grids from the game stage, side by side."""
    fig, axes = figure(len(GRIDS), width=5.0, height=5.2)
    titles = {"z_sweep.png": "G_A(x, z): rows x (pre-training images), columns a sweep of z",
              "eliminate.png": "clean x | dotted x~ | G_E(x~) | G_A(G_E(x~), G_L(x~))"}
    for ax, name in zip(axes, GRIDS):
        png = Path(game_dir) / "seed0" / name
        if png.is_file():
            ax.imshow(np.asarray(Image.open(png).convert("RGB")))
            ax.set_title(titles[name], fontsize=9)
            ax.axis("off")
        else:
            not_run(ax, f"no {name}")
    fig.suptitle(f"augmentation_generator: the generators after the game (seed 0), scale {scale}", fontsize=10)
    return fig


GAME_PANELS = (  # (title, the curve keys of the game record it plots)
    ("critic losses (eq. 8, 9)", ("train/D_f/total", "train/D_p/total")),
    ("critic accuracy (0.5: cannot tell)", ("train/D_f/acc", "train/D_p/acc")),
    ("generator terms (eq. 11-13)", ("train/g/adv_a", "train/g/adv_e", "train/g/cycle")),
    ("checks: L1 to the clean image, |z error|", (ELIMINATED, DOTTED, LATENT, LATENT_CHANCE)),
)


def game_losses_figure(game: list[records.MetricsRecord], scale: str):
    """The game's losses, critic accuracies and checks against steps: mean over seeds, min-max band."""
    fig, axes = figure(len(GAME_PANELS), width=4.2, height=3.4)
    for ax, (title, keys) in zip(axes, GAME_PANELS):
        for key in keys:
            runs = [c for c in ({h["step"]: h[key] for h in r.extra.get("curve", []) if key in h} for r in game) if c]
            if not runs:
                continue
            steps = sorted(set.intersection(*(set(c) for c in runs)))
            ys = np.array([[c[s] for s in steps] for c in runs])
            line, = ax.plot(steps, ys.mean(0), marker="o", markersize=3, label=f"{key} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        ax.set(title=title, xlabel="step")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7) if ax.lines else not_run(ax)
    fig.suptitle(f"augmentation_generator: the generator game over steps, scale {scale}", fontsize=10)
    return fig


# ---------------------------------------------------------------- the report

def make_report(reported: Path, eval_dir: Path | None, game_dir: Path | None, scale: str, out: Path,
                allow_dirty: bool = False, runs: Path | None = None) -> Report:
    """The report at one scale, from the records under ``eval_dir`` / ``game_dir`` and their committed copies
    under ``runs`` (default ``<out>/runs``; directories None: the copies alone)."""
    out = Path(out)
    doc = load_reported(reported)
    runs = out / records.RUNS if runs is None else Path(runs)
    hint = "make it with dvc repro papers/augmentation_generator"
    found = {t: records.gather(eval_dir, runs / "eval", f"{t}.json", exclude=out, hint=hint) for t in TABLES}
    game_found = records.gather(game_dir, runs / "game", "metrics.json", exclude=out, hint=hint)
    game = [r for r in (records.read(f) for f in game_found.paths()) if not r.skipped]
    paper_rows = {t: [f for f in found[t].paths() if records.read(f).row != EXTRA] for t in TABLES}
    comparisons = {t: compare(reported, paper_rows[t], t, scale, out) for t in TABLES}
    extra = {t: seed_stats(r.metrics["top1"] for r in map(records.read, found[t].paths())
                           if r.row == EXTRA and not r.skipped) for t in TABLES}

    verdicts = claims(comparisons, game, doc)
    report = Report(PAPER, scale, out, comparisons, verdicts, allow_dirty=allow_dirty)
    if game_dir is not None:  # the grids are not records: a report from runs/ keeps the committed figure
        report.save_figure("generators.png", generators_figure(game_dir, scale))
    report.save_figure("game_losses.png", game_losses_figure(game, scale))
    report.write_claims("the tests are this suite's, not the paper's; MNIST stands in for EMNIST ByClass; fewer "
                        "than 2 seeds in a setup -> inconclusive; per-run records in runs/")
    atomic_write_text(out / "summary.json", json.dumps({
        **{t: {r.id: {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n} for r in c.rows if r.n}
           for t, c in comparisons.items()},
        "extra_rows": {EXTRA: extra}, "claims": {v["id"]: v["verdict"] for v in verdicts}}, indent=2) + "\n")
    for gathered in found.values():  # last: only a report that finished commits its inputs
        gathered.copy_to(out / records.RUNS / "eval")
    game_found.copy_to(out / records.RUNS / "game")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(PAPER, __doc__)
    parser.add_argument("--eval-dir", type=Path, default=None,
                        help="the evaluate stage's outputs (required unless --from-runs)")
    parser.add_argument("--game-dir", type=Path, default=None,
                        help="the game stage's outputs (required unless --from-runs)")

    def make(a) -> Report:
        if (a.eval_dir is None or a.game_dir is None) and not a.from_runs:
            raise ValueError("--eval-dir and --game-dir are required (or --from-runs: the committed records alone)")
        return make_report(a.reported, None if a.from_runs else a.eval_dir, None if a.from_runs else a.game_dir,
                           a.scale, a.out, a.allow_dirty, runs_dir(a))

    return run_report(parser, make, argv)


if __name__ == "__main__":
    sys.exit(main())
