"""Stage `report`: Tables 1 and 3 reproduced vs reported, FID-over-training and sample figures, claims.

    python -m papers.contrad.report --eval-dir papers/contrad/outputs/eval --scale mini \
        --out papers/contrad/results/mini --log
    python -m papers.contrad.report --scale mini --out papers/contrad/results/mini --from-runs

Reads the evaluate stage's metrics files (`<eval-dir>/<run>/table1_fid.json`,
`table1_is.json`, `table3.json`, `samples.png`) and writes into `--out`:
  table1_fid.md/.json, table1_is.md/.json   FID / IS per row (mean ± std over seeds); with
                      Inception weights against the paper's numbers with deltas, otherwise the
                      in-domain numbers beside them, labelled, without deltas
  table3.md/.json     linear evaluation of D vs the paper's, with deltas
  fid_over_training.png   FID of each method over training steps (mean and spread over seeds)
  samples.png         the last sample grid of each GAN method (seed 0), labelled with the method
  <table>_vs_reported.png  per table: each row's seeds, mean ± std beside the paper's number (shared.report)
  claims.json         the two claims' tests and verdicts (shared.claims): FID, best of k (one-sided
                      Welch t-tests vs each other method, Holm-corrected, lower is better); linear
                      accuracy, ContraD beats SimCLR (a one-sided Welch t-test); alpha = 0.05 on the
                      per-seed values, "inconclusive" below 2 seeds per setup
  runs/eval/<run>/*.json  every record read, committed: the committed copies under <out>/runs (or
                      --runs) are read with --eval-dir (its records win), --from-runs reads them alone
With --log each table becomes an MLflow comparison run (reported/…, reproduced/…, delta/…).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shared import records
from shared.claims import beats, best_of
from shared.comparison import Comparison, compare, load_reported
from shared.io import atomic_write_text
from shared.report import Report, figure, not_run, report_parser, run_report, runs_dir

PAPER = "contrad"
GAN_METHODS = {"baseline": "baseline (no augmentation)", "diffaugment": "DiffAugment (translation, cutout)",
               "cr": "CR (HFlip, translation)", "bcr": "bCR (HFlip, translation)",
               "contrad": "ContraD (SimCLR augmentation)"}
FID_CLAIM_METHODS = ("baseline", "diffaugment", "cr", "bcr", "contrad")  # every row of the block the paper compares


def detector_kind(files: list[Path], metric: str = "fid") -> str | None:
    """'inception' or 'indomain', from the `<metric>_<kind>` key (fid or is) the evaluate stage wrote;
    None if nothing ran. IS may be in-domain beside an Inception FID: the pool3 network has no logits."""
    kinds = {k.removeprefix(f"{metric}_") for f in files for k in records.read(f).metrics
             if k.startswith(f"{metric}_") and not k.endswith("_std")}
    if len(kinds) > 1:
        raise ValueError(f"{metric.upper()} files mix detectors {sorted(kinds)}: never compare across feature spaces")
    return kinds.pop() if kinds else None


def _values(comparison: Comparison, architecture: str, methods) -> dict[str, list[float]]:
    """{method: its CIFAR-10 row's per-seed values ([] if not run)}."""
    rows = {r.id: r for r in comparison.rows}
    return {m: list(r.values) if (r := rows.get(f"{architecture}_{m}_c10")) is not None else [] for m in methods}


def claims(fid: Comparison, table3: Comparison, reported: dict) -> list[dict]:
    """ContraD's two claims at this scale, on the SNDCGAN/SNDCGAN rows (the block the suite runs at mini)."""
    printed = {t: {r["id"]: r["mean"] for r in reported["tables"][t]["rows"]} for t in ("table1_fid", "table3")}
    arch = "sndcgan"
    fid_values = _values(fid, arch, FID_CLAIM_METHODS)
    lin_values = _values(table3, arch, ("simclr", "contrad"))
    return [
        {"id": "fid", "claim": "ContraD gives the best FID of baseline, DiffAugment, CR, bCR and ContraD (SNDCGAN)",
         "source": "Table 1, G: SNDCGAN / D: SNDCGAN block",
         "reported": "FID " + ", ".join(f"{m} {printed['table1_fid'][f'{arch}_{m}_c10']}" for m in FID_CLAIM_METHODS)
                     + " (Inception, 10k samples)",
         "data": f"table1_fid {arch} rows ({fid.metric})",
         **best_of(fid_values, "contrad", higher_is_better=False)},
        {"id": "linear", "claim": "ContraD's D gives better linear accuracy than SimCLR alone (SNDCGAN)",
         "source": "Table 3, CIFAR-10",
         "reported": f"linear eval {printed['table3'][f'{arch}_contrad_c10']}% (ContraD) vs "
                     f"{printed['table3'][f'{arch}_simclr_c10']}% (SimCLR)",
         "data": f"table3 {arch} rows (each seed: the mean of its linear heads)",
         **beats(lin_values, "contrad", "simclr", higher_is_better=True)},
    ]


# ---------------------------------------------------------------- figures

def fid_over_training(files: list[Path], scale: str):
    """FID against training steps per (architecture, method): mean over seeds, min-max band."""
    runs: dict[tuple[str, str], list[dict]] = {}
    key = None
    for f in files:
        record = records.read(f)
        arch, method = record.row.rsplit("_", 2)[:2]
        # the curve's FID is the history's (in-domain; the table's may be the final Inception one)
        key = next(k for k in record.extra["history"][-1] if k.startswith("fid_"))
        runs.setdefault((arch, method), []).append({h["step"]: h[key] for h in record.extra["history"]})
    archs = sorted({a for a, _ in runs}) or ["sndcgan"]
    fig, axes = figure(len(archs))
    for ax, arch in zip(axes, archs):
        for method, label in GAN_METHODS.items():
            curves = runs.get((arch, method))
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            ys = np.array([[c[s] for s in steps] for c in curves])
            line, = ax.plot(steps, ys.mean(0), marker="o", label=f"{label} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        ax.set(title=f"D: {arch}, scale {scale}", xlabel="G steps", ylabel=key or "FID")
        ax.grid(alpha=0.3)
        ax.legend() if ax.lines else not_run(ax)
    return fig


def sample_figure(eval_dir: Path, scale: str):
    """The last sample grid of each GAN method's seed-0 run, side by side, labelled with the method
    (architecture, then the order of GAN_METHODS)."""
    order = list(GAN_METHODS)
    runs = [(*d.name.removesuffix("_seed0").split("_", 1), d / "samples.png")
            for d in Path(eval_dir).glob("*_seed0") if (d / "samples.png").is_file()]
    panels = sorted(runs, key=lambda p: (p[0], order.index(p[1]) if p[1] in order else len(order), p[1]))
    fig, axes = figure(max(len(panels), 1), width=4.0, height=4.5)
    for ax, (arch, method, png) in zip(axes, panels):
        ax.imshow(np.asarray(Image.open(png).convert("RGB")))
        ax.set_title(f"{GAN_METHODS.get(method, method)}\nD: {arch}", fontsize=9)
        ax.axis("off")
    if not panels:
        not_run(axes[0], "no samples")
    fig.suptitle(f"contrad: the last sample grid of each GAN method (seed 0), scale {scale}", fontsize=10)
    return fig


# ---------------------------------------------------------------- the report

def make_report(reported: Path, eval_dir: Path | None, scale: str, out: Path, allow_dirty: bool = False,
                runs: Path | None = None) -> Report:
    """The report at one scale, from the records under ``eval_dir`` and their committed copies under
    ``runs`` (default ``<out>/runs``; ``eval_dir`` None: the copies alone)."""
    out = Path(out)
    doc = load_reported(reported)
    runs = out / records.RUNS if runs is None else Path(runs)
    found = {name: records.gather(eval_dir, runs / "eval", name, exclude=out,
                                  hint="make it with the evaluate stage (dvc repro papers/contrad/dvc.yaml)")
             for name in ("table1_fid.json", "table1_is.json", "table3.json")}
    fid_files = found["table1_fid.json"].paths()
    kind = detector_kind(fid_files)
    comparisons = {}
    for table in ("table1_fid", "table1_is"):
        name = table.removeprefix("table1_")
        # Inception numbers compare with the paper's; in-domain ones are shown beside them, without deltas.
        table_kind = detector_kind(found[f"{table}.json"].paths(), name)
        metric = None if table_kind in (None, "inception") else f"{name}_{table_kind}"
        comparisons[table] = compare(reported, found[f"{table}.json"].paths(), table, scale, out, metric)
    comparisons["table3"] = compare(reported, found["table3.json"].paths(), "table3", scale, out)

    verdicts = claims(comparisons["table1_fid"], comparisons["table3"], doc)
    report = Report(PAPER, scale, out, comparisons, verdicts, allow_dirty=allow_dirty)
    report.save_figure("fid_over_training.png", fid_over_training(fid_files, scale))
    if eval_dir is not None:  # the grids are not records: a report from runs/ keeps the committed figure
        report.save_figure("samples.png", sample_figure(eval_dir, scale))
    report.write_claims("the tests are this suite's, not the paper's; fewer than 2 seeds in a setup -> inconclusive; "
                        "an in-domain FID ranks methods but is not the paper's Inception FID; per-run records "
                        "in runs/", fid=kind)
    # the headline numbers as flat JSON for DVC (`dvc metrics show / diff`): each row's mean, std, seeds
    atomic_write_text(out / "summary.json", json.dumps({
        **{t: {r.id: {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n} for r in c.rows if r.n}
           for t, c in comparisons.items()},
        "claims": {v["id"]: v["verdict"] for v in verdicts}}, indent=2) + "\n")
    for gathered in found.values():  # last: only a report that finished commits its inputs
        gathered.copy_to(out / records.RUNS / "eval")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(PAPER, __doc__)
    parser.add_argument("--eval-dir", type=Path, default=None,
                        help="the evaluate stage's outputs (required unless --from-runs)")

    def make(a) -> Report:
        if a.eval_dir is None and not a.from_runs:
            raise ValueError("--eval-dir is required (or --from-runs: the committed records alone)")
        return make_report(a.reported, None if a.from_runs else a.eval_dir, a.scale, a.out, a.allow_dirty,
                           runs_dir(a))

    return run_report(parser, make, argv)


if __name__ == "__main__":
    sys.exit(main())
