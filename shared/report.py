"""What every paper's report stage does: find the records, compare, summarise seeds, write claims, plot.

A paper's ``report.py`` keeps only its own logic (which tables, which claims, any figure of its
own) and hands the rest to this module::

    def make_report(args) -> Report:
        found = records.gather(None if args.from_runs else args.metrics_dir, runs_dir(args) / "train",
                               exclude=args.out)           # the stage's records and their committed copies
        table1 = comparison.compare(args.reported, found.paths(), "table1", args.scale, args.out)
        verdicts = [...]                                   # the paper's claims (shared.claims tests)
        report = Report(PAPER, args.scale, args.out, {"table1": table1}, verdicts)
        report.write_claims(note="...")                    # claims.json with provenance
        found.copy_to(args.out / records.RUNS / "train")   # <out>/runs: what the tables were made from
        return report

    def main(argv=None):
        return run_report(report_parser(PAPER, __doc__), make_report, argv)

:func:`run_report` owns the command line: it refuses to write a ``papers/<p>/results/`` folder from a
dirty tree unless ``--allow-dirty`` is given (and then records that in every file), logs the
comparison and claims runs with ``--log``, and prints the tables and verdicts.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from shared import records
from shared.claims import ALPHA, CI_LEVEL, STD_NOTE
from shared.cli import add_debug_argument, run_stage
from shared.comparison import VS_REPORTED, Comparison, RowComparison, log_claims, log_comparison
from shared.config import COMMITTED_SCALES, REPO_ROOT, SCALES
from shared.io import atomic_write, atomic_write_text
from shared.provenance import provenance, tree_state
from shared.records import RUNS


class DirtyTreeError(ValueError):
    """A report would write committed results from uncommitted code."""


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def seed_stats(values: Iterable[float]) -> dict:
    """{mean, std (sample, ddof=1; None below 2 seeds), n} of one setup's per-seed values."""
    xs = np.asarray(list(values), dtype=float)
    if xs.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if xs.size >= 2 else None, "n": int(xs.size)}


def stage_headline(path: str | Path, paper: str, scale: str) -> dict | None:
    """A generator stage's numbers for a report's summary: the record's metrics and the numbers at the top level
    of the record (None for a skip marker); raises naming the file when it is another paper's or scale's."""
    record = records.read(path)
    if record.skipped:
        return None
    if record.paper != paper or record.scale != scale:
        raise ValueError(f"{path}: paper/scale {record.paper}/{record.scale}, expected {paper}/{scale}")
    numbers = {k: v for k, v in record.extra.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"stage": record.stage, "metrics": record.metrics, **numbers}


def is_committed_results(out: str | Path) -> bool:
    """Whether ``out`` is a results folder the repository commits: ``papers/<p>/results/<scale>`` of a
    committed scale (mini, paper) or anything inside one. Smoke results stay local (ignored)."""
    out = Path(out).resolve()
    papers = (REPO_ROOT / "papers").resolve()
    if not out.is_relative_to(papers):
        return False
    parts = out.relative_to(papers).parts
    if len(parts) < 2 or parts[1] != "results":
        return False
    return len(parts) == 2 or any(part in COMMITTED_SCALES for part in parts[2:])


def check_tree(out: str | Path, allow_dirty: bool) -> dict[str, Any]:
    """Refuse to write committed results from a dirty tree unless ``allow_dirty``; returns the state.

    Results name the commit that made them; from a tree with uncommitted changes that commit did
    not make them. With ``allow_dirty`` the files say so (``dirty: true`` and the diff's hash).
    """
    state = tree_state()
    if state["dirty"] and is_committed_results(out) and not allow_dirty:
        raise DirtyTreeError(
            f"the working tree has uncommitted changes, so results written to {out} would name a commit "
            f"that did not make them: commit first, or pass --allow-dirty (recorded in the files)")
    return state


# ---------------------------------------------------------------- the report and what it writes

@dataclasses.dataclass
class Report:
    """A paper's report at one scale: its comparisons, its claims and the files it wrote."""
    paper: str
    scale: str
    out: Path
    comparisons: dict[str, Comparison]
    claims: list[dict]
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    allow_dirty: bool = False
    run_ids: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # every table gets its reported-vs-reproduced figure, whichever paper: no report can forget it
        self.out = Path(self.out)
        for table, c in self.comparisons.items():
            self.save_figure(VS_REPORTED.format(table=table), reported_vs_reproduced(c))

    def header(self) -> dict[str, Any]:
        """The keys every file of the report starts with: paper, scale, provenance."""
        return {"paper": self.paper, "scale": self.scale, **provenance(),
                **({"allow_dirty": True} if self.allow_dirty else {})}

    def write_json(self, name: str, body: dict) -> Path:
        path = self.out / name
        atomic_write_text(path, to_json({**self.header(), **body}))
        self.paths[name] = path
        return path

    def write_claims(self, note: str, **extra: Any) -> Path:
        """``claims.json``: each claim with its test, per-seed values, n, effect with its 95% CI, p, rule
        and verdict (shared.claims), and the verdicts by id."""
        return self.write_json("claims.json", {
            "std": STD_NOTE, "alpha": ALPHA,
            "statistics": (f"standard tests on per-seed values (shared/claims.py): one-sided at alpha {ALPHA} "
                           f"in the claimed direction (holds) or the opposite one (does not hold); "
                           f"{CI_LEVEL:.0%} confidence intervals two-sided"),
            **extra, "note": note, "claims": self.claims,
            "verdicts": {c["id"]: c["verdict"] for c in self.claims}})

    def save_figure(self, name: str, fig, dpi: int = 110) -> Path:
        path = self.out / name
        save_png(fig, path, dpi)
        self.paths[name] = path
        return path

    def log(self, tracking_uri: str | None = None) -> dict[str, str]:
        """Each comparison as an MLflow comparison run, with the report's other files as artifacts (a
        table's ``<table>_vs_reported.png`` only with its own table, and the table as an MLflow table), and
        ``claims.json`` (once written) as the claims run (``run_ids["claims"]``). Each replaces the
        earlier runs of its table and scale (:func:`shared.comparison.log_comparison`): logging a
        report twice leaves one run per table and one claims run."""
        for table, c in self.comparisons.items():
            self.run_ids[table] = log_comparison(c, tracking_uri, extra_artifacts=list(self.paths.values()))
        if (claims := self.paths.get("claims.json")) is not None:
            self.run_ids["claims"] = log_claims(claims, tracking_uri)
        return self.run_ids


# ---------------------------------------------------------------- figures

def figure(ncols: int, width: float = 5.5, height: float = 4.2):
    """A matplotlib figure with ``ncols`` axes in a row (Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def save_png(fig, path: str | Path, dpi: int = 110) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def band(ax, x, mean, std, label: str, color: str | None = None):
    """A mean curve with a ± std band (no band when std is None: fewer than 2 seeds)."""
    line, = ax.plot(x, mean, marker="o", markersize=3, label=label, color=color)
    if std is not None:
        ax.fill_between(x, np.asarray(mean) - std, np.asarray(mean) + std, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    return line


def not_run(ax, text: str = "not run") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


# ---------------------------------------------------------------- reported vs reproduced, one figure per table

def direction(metric: str) -> str | None:
    """"higher is better" or "lower is better" from a metric's name (accuracy, IS; FID, loss, error);
    None where the name does not say."""
    words = set(re.split(r"[^a-z0-9]+", metric.lower()))
    if words & {"fid", "kid", "loss", "error", "err"}:
        return "lower is better"
    if words & {"acc", "accuracy", "is", "auc", "top1", "top5"}:
        return "higher is better"
    return None


def row_groups(rows: list[RowComparison]) -> tuple[list[tuple[str, list[RowComparison]]], list[str]]:
    """The rows in the paper's order, grouped by the label columns that stay the same over runs of
    rows (an optimiser, an architecture, a dataset: changing at most every other row), and the
    columns that tell the rows of a group apart. Returns ([(group title, rows)], those columns)."""
    keys = list(dict.fromkeys(k for r in rows for k in r.label))
    changes = {k: sum(a.label.get(k) != b.label.get(k) for a, b in zip(rows, rows[1:])) for k in keys}
    by = [k for k in keys if 0 < changes[k] <= (len(rows) - 1) / 2]
    within = [k for k in keys if k not in by and changes[k] > 0]  # a column the same in every row says nothing
    groups: list[tuple[str, list[RowComparison]]] = []
    for r in rows:
        title = " · ".join(str(r.label.get(k, "")) for k in by)
        if not groups or groups[-1][0] != title:
            groups.append((title, []))
        groups[-1][1].append(r)
    return groups, within


def _row_name(r: RowComparison, within: list[str], width: int = 48) -> str:
    text = " · ".join(v for k in within if (v := str(r.label.get(k, "")).strip()) not in ("", "-")) or r.id
    return text if len(text) <= width else text[:width - 1] + "…"


def reported_vs_reproduced(c: Comparison):
    """One table, one row per line: the paper's number (diamond, with its printed std where it gives
    one) above the suite's (each seed an open circle; their mean a dot with a bar of the sample std,
    ddof=1; n in the row's name). A row the scale did not run says "not run". Rows keep the paper's
    order, grouped by :func:`row_groups`; the axis names the metric and which way is better."""
    from matplotlib.lines import Line2D

    reported_color, reproduced_color, offset = "C3", "C0", 0.17
    groups, within = row_groups(c.rows)
    headed = len(groups) > 1
    fig, (ax,) = figure(1, width=9.0, height=1.9 + 0.34 * (len(c.rows) + len(groups) * headed))
    ticks: list[float] = []
    names: list[tuple[str, bool]] = []  # (tick label, is a group title)
    y = 0.0
    for title, rows in groups:
        if headed:
            if ticks:
                ax.axhline(y - 0.5, color="0.85", linewidth=0.8)
            ticks.append(y)
            names.append((title, True))
            y += 1
        row_names = [_row_name(r, within) for r in rows]
        if len(set(row_names)) < len(row_names):
            row_names = [r.id for r in rows]
        for r, name in zip(rows, row_names):
            ax.errorbar(r.reported_mean, y - offset, xerr=r.reported_std, fmt="D", color=reported_color,
                        markersize=5, capsize=3)
            if r.n == 0:
                ax.annotate("not run", (r.reported_mean, y + offset), ha="center", va="center", color="gray",
                            fontsize=7, style="italic")
            else:
                if r.values:  # absent from tables written before per-seed values were kept
                    spread = np.linspace(-0.07, 0.07, len(r.values)) if len(r.values) > 1 else np.zeros(1)
                    ax.scatter(r.values, y + offset + spread, s=16, facecolors="none",
                               edgecolors=reproduced_color, linewidths=0.9, zorder=3)
                ax.errorbar(r.reproduced_mean, y + offset, xerr=r.reproduced_std, fmt="o",
                            color=reproduced_color, markersize=5, capsize=3, zorder=4)
            ticks.append(y)
            names.append((f"{name} (n={r.n})" if r.n else f"{name} (not run)", False))
            y += 1
    ax.set_yticks(ticks, [n for n, _ in names], fontsize=8)
    for label, (_, is_title) in zip(ax.get_yticklabels(), names):
        if is_title:
            label.set_fontweight("bold")
    ax.set_ylim(y - 0.5, -0.5)  # the paper's first row on top
    ax.grid(axis="x", alpha=0.3)
    better = direction(c.metric)
    ax.set_xlabel(f"{c.metric}" + (f" ({c.unit})" if c.unit else "") + (f", {better}" if better else ""))
    ran = [r for r in c.rows if r.n]
    title = f"{c.paper} / {c.table}, scale {c.scale}: reported vs reproduced"
    if ran and all(r.delta is None for r in ran):  # compare() gives no delta across different metrics
        title += "\n" + textwrap.fill(f"reproduced as {c.metric}, reported as the paper's own metric (see the "
                                     "table's caption): compare the order of the rows, not the values", 110)
    ax.set_title(title, fontsize=10)
    fig.legend(handles=[
        Line2D([], [], marker="D", color=reported_color, linestyle="none", label="reported (bar: its printed std)"),
        Line2D([], [], marker="o", color=reproduced_color, markerfacecolor="none", linestyle="none",
               label="reproduced, one seed"),
        Line2D([], [], marker="o", color=reproduced_color, label="reproduced mean ± std over seeds (ddof=1)")],
        loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------- the command line

def report_parser(paper: str, doc: str | None, reported: Path | None = None) -> argparse.ArgumentParser:
    """The report CLI every paper shares: --reported, --scale, --out, --log, --tracking-uri, --allow-dirty,
    --runs, --from-runs.

    A paper adds its own inputs (``--metrics-dir``, ``--eval-dir``) to the parser it gets back, reads
    them together with their committed copies under ``--runs`` (:func:`shared.records.gather`) and
    copies what it read into ``<out>/runs`` (:func:`runs_dir` says where to read).
    """
    parser = argparse.ArgumentParser(prog=f"python -m papers.{paper}.report",
                                     description=(doc or "").split("\n")[0], epilog=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default = reported or REPO_ROOT / "papers" / paper / "reported.yaml"
    parser.add_argument("--reported", type=Path, default=default, help="the paper's numbers, transcribed")
    parser.add_argument("--scale", required=True, choices=SCALES)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", action="store_true", help="log the comparison and claims runs to MLflow")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write papers/*/results/ from a tree with uncommitted changes (recorded in the files)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="committed per-run records, read with the stages' outputs (default: <out>/runs)")
    parser.add_argument("--from-runs", action="store_true",
                        help="recompute every table and claim from the records under --runs alone")
    return add_debug_argument(parser)


def runs_dir(args: argparse.Namespace) -> Path:
    """Where a report reads the committed per-run records: ``--runs``, default ``<out>/runs``."""
    return args.runs if args.runs is not None else Path(args.out) / RUNS


def run_report(parser: argparse.ArgumentParser, make: Callable[[argparse.Namespace], Report],
               argv: list[str] | None = None) -> int:
    """Parse, check the tree, make the report, log it with --log, print tables and verdicts."""
    args = parser.parse_args(argv)

    def run() -> None:
        check_tree(args.out, args.allow_dirty)
        report = make(args)
        if args.log:
            report.log(args.tracking_uri)
        for c in report.comparisons.values():
            text = c.md_path.read_text() if c.md_path is not None else c.table
            print(text.rstrip("\n") + "\n")  # a blank line after each table: the next heading starts a new block
        for c in report.claims:
            print(f"claim ({c['id']}) {c['claim']}: {c['verdict']} ({c['reason']})")
        for table, run_id in report.run_ids.items():
            print(f"{table}: logged to MLflow run {run_id}")

    return run_stage(run, debug=args.debug)  # SchemaError, RecordError and DirtyTreeError are ValueErrors

