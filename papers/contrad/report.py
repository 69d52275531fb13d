"""Stage `report`: Tables 1 and 3 reproduced vs reported, FID-over-training and sample figures, claims.

    python -m papers.contrad.report --eval-dir papers/contrad/outputs/eval --scale mini \
        --out papers/contrad/results/mini --log
    python -m papers.contrad.report --scale mini --out papers/contrad/results/mini --from-runs

Reads the evaluate stage's metrics files (`<eval-dir>/<run>/table1_fid.json`,
`table1_is.json`, `table3.json`, `samples.png`) and writes into `--out`:
  table1_fid.md/.json, table1_is.md/.json   FID / IS per row (mean ± std over seeds); with
                      Inception weights against the paper's numbers with deltas, otherwise the
                      in-domain numbers beside them, labelled, without deltas. The DiffAug row is
                      `diffaugment` (translation, cutout: Table 1's label); the `.md` adds the extra
                      row `diffaugment_cc` (color, cutout: the official command's policy) beside it
  table3.md/.json     linear evaluation of D vs the paper's, with deltas
  fid_over_training.png   FID of each method over training steps (mean and spread over seeds)
  samples.png         the last sample grid of each GAN method (seed 0), labelled with the method (kept as
                      committed when the eval folder holds no seed-0 run: a later session's seeds)
  <table>_vs_reported.png  per table: each row's seeds, mean ± std beside the paper's number (shared.report)
  claims.json         the two claims' tests and verdicts (shared.claims): FID, best of k (one-sided
                      Welch t-tests vs each other method, both DiffAugment policies when both ran,
                      Holm-corrected, lower is better); linear accuracy, ContraD beats SimCLR (a
                      one-sided Welch t-test); alpha = 0.05 on the per-seed values, "inconclusive"
                      below 2 seeds per setup
  summary.json        each row's mean, std, n; `extra_rows` (diffaugment_cc); `diversity` of every GAN run
                      and `collapsed`, the runs left out; the verdicts
  runs/eval/<run>/*.json  every record read, committed: the committed copies under <out>/runs (or
                      --runs) are read with --eval-dir (its records win), --from-runs reads them alone
                      (runs from several sessions combine this way; runs of one table and architecture
                      must share their protocol, `SAME_PROTOCOL`, or the report stops naming them)
With --log each table becomes an MLflow comparison run (reported/…, reproduced/…, delta/…).
Collapsed runs (the train stage's `collapsed`: the best G_ema's sample diversity below
`train.collapse_threshold`) are left out of every table mean, curve mean and claim; the tables' notes,
summary.json's `collapsed`, the claims' reasons and the sample figure (a red frame) name them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from shared import records
from shared.claims import beats, best_of
from shared.comparison import Comparison, compare, format_number, load_reported, to_markdown
from shared.io import atomic_write_text
from shared.report import Report, figure, not_run, report_parser, run_report, runs_dir, seed_stats

PAPER = "contrad"
GAN_METHODS = {"baseline": "baseline (no augmentation)",
               "diffaugment": "DiffAugment (translation, cutout: Table 1's label)",
               "diffaugment_cc": "DiffAugment (color, cutout: the official command)",
               "cr": "CR (HFlip, translation)", "bcr": "bCR (HFlip, translation)",
               "contrad": "ContraD (SimCLR augmentation)"}
FID_CLAIM_METHODS = ("baseline", "diffaugment", "cr", "bcr", "contrad")  # every row of the block the paper compares
# methods whose rows are ours, beside Table 1 (not rows of the paper's table): {method: (the paper's row it
# stands beside, why)}
EXTRA_ROWS = {"diffaugment_cc": ("diffaugment", "DiffAugment color,cutout: the policy of the official command for "
                                                "Table 1's DiffAug row (EXPERIMENTS.md --aug=diffaug), which the "
                                                "table labels \"Trans, CutOut\"; the reported number most likely "
                                                "comes from this policy")}
TABLE1 = ("table1_fid", "table1_is")


def split_row(row: str) -> tuple[str, str]:
    """(architecture, method) of a row id `<architecture>_<method>_c10` (a method may hold `_`)."""
    architecture, rest = row.split("_", 1)
    return architecture, rest.rsplit("_", 1)[0]


def run_name(record: records.MetricsRecord) -> str:
    """`<architecture>_<method>_seed<seed>`, the run's folder name."""
    return f"{record.row.rsplit('_', 1)[0]}_seed{record.seed}"


# What every run combined into one table must share, per architecture: the training length and the FID's sample
# counts (Table 1 records), the linear evaluation (Table 3). Runs of one table may come from several sessions
# (their records committed under runs/), so a stale copy from an earlier protocol would otherwise be averaged in.
SAME_PROTOCOL = {"table1_fid.json": ("steps", "kimg", "fid_samples", "fid_n_generated", "fid_n_reference"),
                 "table1_is.json": ("steps", "kimg", "fid_samples"),
                 "table3.json": ("protocol",)}


def check_one_protocol(read: dict[str, list[tuple[Path, records.MetricsRecord]]]) -> None:
    """ValueError naming the runs when the records of one table and architecture differ in
    :data:`SAME_PROTOCOL`'s keys (e.g. a 4,000-step seed beside 10,000-step ones)."""
    for name, keys in SAME_PROTOCOL.items():
        groups: dict[str, dict[str, list[str]]] = {}
        for path, record in read.get(name, []):
            setting = json.dumps({k: record.extra.get(k) for k in keys}, sort_keys=True)
            runs = groups.setdefault(split_row(record.row)[0], {}).setdefault(setting, [])
            runs.append(f"{run_name(record)} ({path})")
        for arch, settings in sorted(groups.items()):
            if len(settings) > 1:
                listed = "; ".join(f"{s}: {', '.join(sorted(runs))}" for s, runs in sorted(settings.items()))
                raise ValueError(f"{name}: the {arch} runs come from different protocols ({listed}); a table "
                                 f"combines runs of one protocol: re-run the odd ones or remove their stale "
                                 f"copies under <out>/runs/eval")


def collapsed_runs(found: list[records.MetricsRecord]) -> list[dict]:
    """The runs the train stage marked collapsed (`collapsed: true`), once each, in name order:
    {run, row, seed, diversity, collapse_threshold}."""
    runs = {run_name(r): {"run": run_name(r), "row": r.row, "seed": r.seed, "diversity": r.extra.get("diversity"),
                          "collapse_threshold": r.extra.get("collapse_threshold")}
            for r in found if r.extra.get("collapsed") is True}
    return [runs[k] for k in sorted(runs)]


def _collapsed_text(runs: list[dict]) -> str:
    return ", ".join(f"{x['run']} (diversity {format_number(x['diversity'])} < {x['collapse_threshold']})"
                     for x in runs)


def note_collapsed(c: Comparison, collapsed: list[dict]) -> None:
    """Name in each row's note the seeds left out as collapsed, and write the table again."""
    marked = False
    for r in c.rows:
        if mine := [x for x in collapsed if x["row"] == r.id]:
            text = ("left out as collapsed: " + ", ".join(
                f"seed {x['seed']} (diversity {format_number(x['diversity'])} < {x['collapse_threshold']})"
                for x in mine))
            r.note, marked = f"{r.note}; {text}" if r.note else text, True
    if marked:
        atomic_write_text(c.md_path, to_markdown(c))
        atomic_write_text(c.json_path, json.dumps(c.to_dict(), indent=2) + "\n")


def extra_rows(extra: list[records.MetricsRecord], table: str, metric: str, doc: dict) -> dict[str, dict]:
    """{row id: mean, std, n, seeds, values, the paper's row it stands beside, its number and the delta (None
    across detectors), note} of the extra rows' records of `table` (collapsed runs already left out)."""
    printed = {r["id"]: r for r in doc["tables"][table]["rows"]}
    comparable = metric == doc["tables"][table]["metric"]
    out = {}
    for row in sorted({r.row for r in extra if r.table == table}):
        mine = sorted((r for r in extra if r.table == table and r.row == row), key=lambda r: r.seed)
        architecture, method = split_row(row)
        beside, why = EXTRA_ROWS[method]
        reported = printed[f"{architecture}_{beside}_c10"]["mean"]
        stats = seed_stats(r.metrics[metric] for r in mine)
        out[row] = {**stats, "seeds": [r.seed for r in mine], "values": [r.metrics[metric] for r in mine],
                    "metric": metric, "beside": f"{architecture}_{beside}_c10", "reported": reported,
                    "delta": None if stats["mean"] is None or not comparable else stats["mean"] - reported,
                    "note": why}
    return out


def append_extra_rows(c: Comparison, rows: dict[str, dict]) -> None:
    """The extra rows under the table's Markdown, each beside the paper's row it stands for."""
    if not rows:
        return
    lines = ["", f"Extra rows (this suite's, not rows of the paper's table; {c.metric}):", "",
             "| row | beside | reported (that row) | reproduced | delta | note |", "|---|---|---|---|---|---|"]
    for row, x in rows.items():
        spread = "" if x["std"] is None else f" ± {format_number(x['std'])}"
        reproduced = "not run" if x["mean"] is None else f"{format_number(x['mean'])}{spread} (n={x['n']})"
        delta = "" if x["delta"] is None else format_number(x["delta"], "+")
        lines.append(f"| {row} | {x['beside']} | {x['reported']} | {reproduced} | {delta} | {x['note']} |")
    atomic_write_text(c.md_path, c.md_path.read_text() + "\n".join(lines) + "\n")


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


def _left_out(claim: dict, collapsed: list[dict], architecture: str, methods) -> dict:
    """The claim with the collapsed runs of its setups named (`collapsed_left_out`, and in its reason)."""
    mine = [x for x in collapsed if split_row(x["row"]) in {(architecture, m) for m in methods}]
    if not mine:
        return {**claim, "collapsed_left_out": []}
    return {**claim, "collapsed_left_out": [x["run"] for x in mine],
            "reason": f"{claim['reason']}; {len(mine)} collapsed run(s) left out: {_collapsed_text(mine)}"}


def claims(fid: Comparison, table3: Comparison, reported: dict, extra_fid: dict[str, list[float]] | None = None,
           collapsed: list[dict] = ()) -> list[dict]:
    """ContraD's two claims at this scale, on the SNDCGAN/SNDCGAN rows (the block the suite runs at mini).

    `extra_fid` ({method: per-seed FIDs} of the SNDCGAN extra rows): an extra row that ran (DiffAugment
    color,cutout) joins the FID claim's setups, so ContraD must beat DiffAugment under either policy the
    reported number may come from. `collapsed` (:func:`collapsed_runs`): left out of the values already;
    each claim names its own.
    """
    printed = {t: {r["id"]: r["mean"] for r in reported["tables"][t]["rows"]} for t in ("table1_fid", "table3")}
    arch = "sndcgan"
    extra = {m: v for m, v in (extra_fid or {}).items() if v}
    fid_values = {**_values(fid, arch, FID_CLAIM_METHODS), **extra}
    lin_values = _values(table3, arch, ("simclr", "contrad"))
    diffaugment = "DiffAugment" if not extra else "DiffAugment (translation,cutout and color,cutout)"
    return [
        _left_out({"id": "fid", "claim": f"ContraD gives the best FID of baseline, {diffaugment}, CR, bCR and ContraD "
                                         f"(SNDCGAN)",
                   "source": "Table 1, G: SNDCGAN / D: SNDCGAN block",
                   "reported": "FID " + ", ".join(f"{m} {printed['table1_fid'][f'{arch}_{m}_c10']}"
                                                  for m in FID_CLAIM_METHODS) + " (Inception, 10k samples)",
                   "data": f"table1_fid {arch} rows ({fid.metric})"
                           + (f" and the extra rows {', '.join(extra)}" if extra else ""),
                   **best_of(fid_values, "contrad", higher_is_better=False)},
                  collapsed, arch, fid_values),
        _left_out({"id": "linear", "claim": "ContraD's D gives better linear accuracy than SimCLR alone (SNDCGAN)",
                   "source": "Table 3, CIFAR-10",
                   "reported": f"linear eval {printed['table3'][f'{arch}_contrad_c10']}% (ContraD) vs "
                               f"{printed['table3'][f'{arch}_simclr_c10']}% (SimCLR)",
                   "data": f"table3 {arch} rows (each seed: the mean of its linear heads)",
                   **beats(lin_values, "contrad", "simclr", higher_is_better=True)},
                  collapsed, arch, lin_values),
    ]


# ---------------------------------------------------------------- figures

def fid_over_training(files: list[Path], scale: str):
    """FID against training steps per (architecture, method): mean over seeds, min-max band; collapsed runs
    left out (the legend counts them)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    left_out: dict[tuple[str, str], int] = {}
    key = None
    for f in files:
        record = records.read(f)
        arch, method = split_row(record.row)
        if record.extra.get("collapsed") is True:
            left_out[arch, method] = left_out.get((arch, method), 0) + 1
            continue
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
            dropped = f", {n} collapsed left out" if (n := left_out.get((arch, method))) else ""
            line, = ax.plot(steps, ys.mean(0), marker="o", label=f"{label} (n={len(curves)}{dropped})")
            if len(curves) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        ax.set(title=f"D: {arch}, scale {scale}", xlabel="G steps", ylabel=key or "FID")
        ax.grid(alpha=0.3)
        ax.legend() if ax.lines else not_run(ax)
    return fig


def sample_figure(eval_dir: Path, scale: str):
    """The last sample grid of each GAN method's seed-0 run, side by side, labelled with the method
    (architecture, then the order of GAN_METHODS) and its sample diversity; a collapsed run's grid is
    framed in red and titled COLLAPSED."""
    order = list(GAN_METHODS)
    runs = [(*d.name.removesuffix("_seed0").split("_", 1), d)
            for d in Path(eval_dir).glob("*_seed0") if (d / "samples.png").is_file()]
    panels = sorted(runs, key=lambda p: (p[0], order.index(p[1]) if p[1] in order else len(order), p[1]))
    fig, axes = figure(max(len(panels), 1), width=4.0, height=5.2)  # the grid, three title lines, the suptitle
    for ax, (arch, method, run) in zip(axes, panels):
        ax.imshow(np.asarray(Image.open(run / "samples.png").convert("RGB")))
        trained = records.read(run / "table1_fid.json").extra if (run / "table1_fid.json").is_file() else {}
        diversity, collapsed = trained.get("diversity"), trained.get("collapsed") is True
        status = "" if diversity is None else (
            f"\nCOLLAPSED: diversity {format_number(diversity)} < {trained.get('collapse_threshold')}" if collapsed
            else f"\ndiversity {format_number(diversity)}")
        ax.set_title(f"{GAN_METHODS.get(method, method)}\nD: {arch}{status}", fontsize=9,
                     color="red" if collapsed else "black")
        ax.axis("off")
        if collapsed:
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor="red", linewidth=4,
                                   clip_on=False))
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
    read = {name: [(f, records.read(f)) for f in g.paths()] for name, g in found.items()}
    check_one_protocol(read)
    collapsed = collapsed_runs([r for pairs in read.values() for _, r in pairs])
    # what the tables average: the paper's rows, collapsed runs left out; the extra rows go beside them
    kept = {name: [(f, r) for f, r in pairs if r.extra.get("collapsed") is not True] for name, pairs in read.items()}
    paper_rows = {name: [f for f, r in pairs if split_row(r.row)[1] not in EXTRA_ROWS] for name, pairs in kept.items()}
    extra = [r for pairs in kept.values() for _, r in pairs if split_row(r.row)[1] in EXTRA_ROWS]
    comparisons, extras = {}, {}
    for table in TABLE1:
        name = table.removeprefix("table1_")
        # Inception numbers compare with the paper's; in-domain ones are shown beside them, without deltas.
        table_kind = detector_kind(found[f"{table}.json"].paths(), name)
        metric = None if table_kind in (None, "inception") else f"{name}_{table_kind}"
        comparisons[table] = compare(reported, paper_rows[f"{table}.json"], table, scale, out, metric)
        extras[table] = extra_rows(extra, table, comparisons[table].metric, doc)
    comparisons["table3"] = compare(reported, paper_rows["table3.json"], "table3", scale, out)
    for table, c in comparisons.items():
        note_collapsed(c, collapsed)
        append_extra_rows(c, extras.get(table, {}))

    extra_fid = {split_row(row)[1]: x["values"] for row, x in extras["table1_fid"].items()
                 if split_row(row)[0] == "sndcgan"}
    verdicts = claims(comparisons["table1_fid"], comparisons["table3"], doc, extra_fid, collapsed)
    report = Report(PAPER, scale, out, comparisons, verdicts, allow_dirty=allow_dirty)
    report.save_figure("fid_over_training.png", fid_over_training(fid_files, scale))
    # the grids are not records: a report from runs/ keeps the committed figure, and so does one whose stage
    # folder holds no seed-0 run (a later session's seeds; the figure shows seed 0)
    if eval_dir is not None and (any(Path(eval_dir).glob("*_seed0/samples.png"))
                                 or not (out / "samples.png").is_file()):
        report.save_figure("samples.png", sample_figure(eval_dir, scale))
    report.write_claims("the tests are this suite's, not the paper's; fewer than 2 seeds in a setup -> inconclusive; "
                        "an in-domain FID ranks methods but is not the paper's Inception FID; runs whose samples "
                        "collapsed (diversity below train.collapse_threshold) are left out and named; per-run "
                        "records in runs/", fid=kind, collapsed=[x["run"] for x in collapsed])
    # the headline numbers as flat JSON for DVC (`dvc metrics show / diff`): each row's mean, std, seeds
    diversity = {run_name(r): r.extra["diversity"] for _, r in read["table1_fid.json"]
                 if r.extra.get("diversity") is not None}
    atomic_write_text(out / "summary.json", json.dumps({
        **{t: {r.id: {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n} for r in c.rows if r.n}
           for t, c in comparisons.items()},
        "extra_rows": {t: {row: {k: x[k] for k in ("mean", "std", "n", "beside", "delta")} for row, x in rows.items()}
                       for t, rows in extras.items()},
        "diversity": dict(sorted(diversity.items())), "collapsed": collapsed,
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
