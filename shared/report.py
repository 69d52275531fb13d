"""What every paper's report stage does: find the records, compare, summarise seeds, write claims, plot.

A paper's ``report.py`` keeps only its own logic (which tables, which claims, any figure of its
own) and hands the rest to this module::

    def make_report(args) -> Report:
        files = records.find(args.metrics_dir, exclude=args.out)
        table1 = comparison.compare(args.reported, files, "table1", args.scale, args.out)
        verdicts = [...]                                   # the paper's claims (shared.claims)
        report = Report(PAPER, args.scale, args.out, {"table1": table1}, verdicts)
        report.write_claims(note="...")                    # claims.json with provenance
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
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from shared.claims import STD_NOTE
from shared.cli import add_debug_argument, run_stage
from shared.comparison import Comparison, log_claims, log_comparison
from shared.config import COMMITTED_SCALES, REPO_ROOT, SCALES
from shared.io import atomic_write, atomic_write_text
from shared.provenance import provenance, tree_state


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
        """``claims.json``: each claim with its numbers, rule and verdict, and the verdicts by id."""
        return self.write_json("claims.json", {
            "std": STD_NOTE, **extra, "note": note, "claims": self.claims,
            "verdicts": {c["id"]: c["verdict"] for c in self.claims}})

    def save_figure(self, name: str, fig, dpi: int = 110) -> Path:
        path = self.out / name
        save_png(fig, path, dpi)
        self.paths[name] = path
        return path

    def log(self, tracking_uri: str | None = None) -> dict[str, str]:
        """Each comparison as an MLflow comparison run, with the report's other files as artifacts, and
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


# ---------------------------------------------------------------- the command line

def report_parser(paper: str, doc: str | None, reported: Path | None = None) -> argparse.ArgumentParser:
    """The report CLI every paper shares: --reported, --scale, --out, --log, --tracking-uri, --allow-dirty.

    A paper adds its own inputs (``--metrics-dir``, ``--eval-dir``) to the parser it gets back.
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
    return add_debug_argument(parser)


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
            print(c.md_path.read_text() if c.md_path is not None else c.table, end="")
        for c in report.claims:
            print(f"claim ({c['id']}) {c['claim']}: {c['verdict']} ({c['reason']})")
        for table, run_id in report.run_ids.items():
            print(f"{table}: logged to MLflow run {run_id}")

    return run_stage(run, debug=args.debug)  # SchemaError, RecordError and DirtyTreeError are ValueErrors

