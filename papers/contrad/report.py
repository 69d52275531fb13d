"""Stage `report`: Tables 1 and 3 reproduced vs reported, FID-over-training and sample figures, claims.

    python -m papers.contrad.report --eval-dir papers/contrad/outputs/eval --scale mini \
        --out papers/contrad/results/mini --log

Reads the evaluate stage's metrics files (`<eval-dir>/<run>/table1_fid.json`,
`table1_is.json`, `table3.json`, `samples.png`) and writes into `--out`:
  table1_fid.md/.json, table1_is.md/.json   FID / IS per row (mean ± std over seeds); with
                      Inception weights against the paper's numbers with deltas, otherwise the
                      in-domain numbers beside them, labelled, without deltas
  table3.md/.json     linear evaluation of D vs the paper's, with deltas
  fid_over_training.png   FID of each method over training steps (mean and spread over seeds)
  samples.png         the last sample grid of each GAN method (seed 0)
  claims.json         the two claims' numbers, rule and verdict (shared.claims)
With --log each table becomes an MLflow comparison run (reported/…, reproduced/…, delta/…).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shared import records
from shared.claims import is_best
from shared.comparison import Comparison, compare, load_reported
from shared.io import atomic_write_text
from shared.report import Report, figure, not_run, report_parser, run_report

PAPER = "contrad"
GAN_METHODS = {"baseline": "baseline (no augmentation)", "diffaugment": "DiffAugment (translation, cutout)",
               "contrad": "ContraD (SimCLR augmentation)"}
FID_CLAIM_METHODS = ("baseline", "diffaugment", "contrad")


def eval_files(eval_dir: Path, name: str) -> list[Path]:
    return records.find(eval_dir, name)


def detector_kind(files: list[Path]) -> str | None:
    """'inception' or 'indomain', from the FID key the evaluate stage wrote; None if nothing ran."""
    kinds = {k.removeprefix("fid_") for f in files for k in records.read(f).metrics}
    if len(kinds) > 1:
        raise ValueError(f"FID files mix detectors {sorted(kinds)}: never compare across feature spaces")
    return kinds.pop() if kinds else None


def _stats(comparison: Comparison, architecture: str, methods) -> dict[str, dict | None]:
    rows = {r.id: r for r in comparison.rows}
    out = {}
    for m in methods:
        r = rows.get(f"{architecture}_{m}_c10")
        out[m] = None if r is None or r.n == 0 else {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n}
    return out


def claims(fid: Comparison, table3: Comparison, reported: dict) -> list[dict]:
    """ContraD's two claims at this scale, on the SNDCGAN/SNDCGAN rows (the block the suite runs at mini)."""
    printed = {t: {r["id"]: r["mean"] for r in reported["tables"][t]["rows"]} for t in ("table1_fid", "table3")}
    arch = "sndcgan"
    fid_stats = _stats(fid, arch, FID_CLAIM_METHODS)
    lin_stats = _stats(table3, arch, ("simclr", "contrad"))
    return [
        {"id": "fid", "claim": "ContraD gives the best FID of baseline, DiffAugment and ContraD (SNDCGAN)",
         "source": "Table 1, G: SNDCGAN / D: SNDCGAN block",
         "reported": "FID " + ", ".join(f"{m} {printed['table1_fid'][f'{arch}_{m}_c10']}" for m in FID_CLAIM_METHODS)
                     + " (Inception, 10k samples)",
         "data": f"table1_fid {arch} rows ({fid.metric})",
         **is_best(fid_stats, "contrad", higher_is_better=False)},
        {"id": "linear", "claim": "ContraD's D gives better linear accuracy than SimCLR alone (SNDCGAN)",
         "source": "Table 3, CIFAR-10",
         "reported": f"linear eval {printed['table3'][f'{arch}_contrad_c10']}% (ContraD) vs "
                     f"{printed['table3'][f'{arch}_simclr_c10']}% (SimCLR)",
         "data": f"table3 {arch} rows (each seed: the mean of its linear heads)",
         **is_best(lin_stats, "contrad", higher_is_better=True)},
    ]


# ---------------------------------------------------------------- figures

def fid_over_training(files: list[Path], scale: str):
    """FID against training steps per (architecture, method): mean over seeds, min-max band."""
    runs: dict[tuple[str, str], list[dict]] = {}
    key = None
    for f in files:
        record = records.read(f)
        arch, method = record.row.rsplit("_", 2)[:2]
        key = next(k for k in record.metrics if k.startswith("fid_"))
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
    """The last sample grid of each GAN method's seed-0 run, side by side."""
    panels = [(f"{d.name.removesuffix('_seed0')}", d / "samples.png")
              for d in sorted(Path(eval_dir).glob("*_seed0")) if (d / "samples.png").is_file()]
    fig, axes = figure(max(len(panels), 1), width=4.0, height=4.3)
    for ax, (title, png) in zip(axes, panels):
        ax.imshow(np.asarray(Image.open(png)))
        ax.set_title(f"{title} ({scale})")
        ax.axis("off")
    if not panels:
        not_run(axes[0], "no samples")
    return fig


# ---------------------------------------------------------------- the report

def make_report(reported: Path, eval_dir: Path, scale: str, out: Path, allow_dirty: bool = False) -> Report:
    out = Path(out)
    doc = load_reported(reported)
    fid_files = eval_files(eval_dir, "table1_fid.json")
    kind = detector_kind(fid_files)
    comparisons = {}
    for table in ("table1_fid", "table1_is"):
        name = table.removeprefix("table1_")
        # Inception numbers compare with the paper's; in-domain ones are shown beside them, without deltas.
        metric = None if kind in (None, "inception") else f"{name}_{kind}"
        comparisons[table] = compare(reported, eval_files(eval_dir, f"{table}.json"), table, scale, out, metric)
    comparisons["table3"] = compare(reported, eval_files(eval_dir, "table3.json"), "table3", scale, out)

    verdicts = claims(comparisons["table1_fid"], comparisons["table3"], doc)
    report = Report(PAPER, scale, out, comparisons, verdicts, allow_dirty=allow_dirty)
    report.save_figure("fid_over_training.png", fid_over_training(fid_files, scale))
    report.save_figure("samples.png", sample_figure(eval_dir, scale))
    report.write_claims("single seed (std unknown) -> inconclusive; the rules are this suite's, not the paper's; "
                        "an in-domain FID ranks methods but is not the paper's Inception FID", fid=kind)
    # the headline numbers as flat JSON for DVC (`dvc metrics show / diff`): each row's mean, std, seeds
    atomic_write_text(out / "summary.json", json.dumps({
        **{t: {r.id: {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n} for r in c.rows if r.n}
           for t, c in comparisons.items()},
        "claims": {v["id"]: v["verdict"] for v in verdicts}}, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(PAPER, __doc__)
    parser.add_argument("--eval-dir", type=Path, required=True, help="the evaluate stage's outputs")
    return run_report(parser, lambda a: make_report(a.reported, a.eval_dir, a.scale, a.out, a.allow_dirty), argv)


if __name__ == "__main__":
    sys.exit(main())
