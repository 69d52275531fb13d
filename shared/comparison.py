"""Reported vs reproduced: a paper's transcribed numbers beside the suite's, one table per paper table.

A paper's ``reported.yaml`` (:func:`load_reported`) holds its numbers; the stages' metrics files
(:func:`collect_reproduced`) hold the suite's, one file per (row, seed) at one scale. :func:`compare`
writes the table as Markdown and JSON (the :class:`Comparison` schema, the one owner of the
results table) and :func:`log_comparison` logs it to MLflow as run ``compare/<table>/<scale>``;
:func:`log_claims` logs a report's ``claims.json`` as run ``claims/<scale>``. Each such run is a
snapshot of files: a newer one replaces the older runs of its (paper, table, scale) or (paper, scale).
Committed results live in ``<results>/<scale>/`` folders (:func:`results_dirs`).

CLI: ``python -m shared.tracking compare ...`` (see :mod:`shared.tracking.__main__`).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared import claims, tracking
from shared.config import COMMITTED_SCALES, REPO_ROOT, SCALES
from shared.io import atomic_write_text
from shared.provenance import provenance
from shared.tracking import MLflowLogger


class SchemaError(ValueError):
    pass


def _check(cond: bool, where: str, key: str, message: str) -> None:
    if not cond:
        raise SchemaError(f"{where}: {key}: {message}")


NUMBER, STRING, MAPPING, LIST = (int, float), (str,), (dict,), (list,)


def _fields(obj: Any, where: str, at: str, required: dict, optional: dict | None = None,
            closed: bool = True) -> dict:
    """Check a mapping's keys (unknown ones too, if `closed`) and value types; absent optional
    keys become None."""
    optional = optional or {}
    _check(isinstance(obj, dict), where, at or "<top>", "expected a mapping")
    prefix = f"{at}." if at else ""
    extra = set(obj) - set(required) - set(optional) if closed else set()
    _check(not extra, where, prefix + ",".join(map(str, sorted(extra))),
           f"unknown key (allowed: {[*required, *optional]})")
    for key, kinds in {**required, **optional}.items():
        _check(key in obj or key in optional, where, prefix + key, "missing")
        value = obj.setdefault(key, None)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
        _check(ok or (value is None and key in optional), where, prefix + key,
               f"expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    return obj


def load_reported(path: str | Path) -> dict:
    """Load and validate a paper's reported.yaml; errors name the file and the key.

    paper: str, source: str, tables: {<table>: {caption, metric, unit: str,
    rows: [{id: str, label: {column: value}, mean: number, std?: number, note?: str}]}}.
    Unknown keys are errors; std and note default to None.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reported numbers file not found: {path}")
    w = str(path)
    doc = yaml.safe_load(path.read_text())
    _fields(doc, w, "", {"paper": STRING, "source": STRING, "tables": MAPPING})
    _check(bool(doc["tables"]), w, "tables", "empty")
    for name, table in doc["tables"].items():
        t = f"tables.{name}"
        _fields(table, w, t, {"caption": STRING, "metric": STRING, "unit": STRING, "rows": LIST})
        _check(bool(table["rows"]), w, f"{t}.rows", "empty")
        seen: set[str] = set()
        for i, row in enumerate(table["rows"]):
            r = f"{t}.rows[{i}]"
            _fields(row, w, r, {"id": STRING, "label": MAPPING, "mean": NUMBER},
                    {"std": NUMBER, "note": STRING})
            # ids become MLflow metric names (reported/<id>): keep them to safe characters, unique
            _check(re.fullmatch(r"[\w.-]+", row["id"]) is not None and row["id"] not in seen, w,
                   f"{r}.id", f"expected a unique name of letters, digits, _ . -, got {row['id']!r}")
            seen.add(row["id"])
            _check(row["std"] is None or row["std"] >= 0, w, f"{r}.std", f"negative: {row['std']}")
    return doc


def _read_metrics_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SchemaError(f"{path}: cannot read metrics file: {e}") from e
    # stages may add keys of their own (command, commit, config): only these are required
    return _fields(data, str(path), "", {"paper": STRING, "table": STRING, "row": STRING,
                                         "scale": STRING, "seed": (int,), "metrics": MAPPING},
                   closed=False)


def collect_reproduced(metrics_files: Iterable[Path], table: str, metric: str, scale: str,
                       paper: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """{row id: [(seed, value), ...]} for `table` from metrics files; other tables are ignored.

    Raises on a file of another scale (scales are never mixed), of another paper (when `paper`
    is given), without `metric`, or repeating a seed for a row.
    """
    out: dict[str, list[tuple[int, float]]] = {}
    source: dict[tuple[str, int], Path] = {}
    for path in sorted(Path(p) for p in metrics_files):
        data = _read_metrics_file(path)
        if data["table"] != table:
            continue
        if data["scale"] != scale:
            raise ValueError(f"{path}: scale {data['scale']!r} but comparing at scale {scale!r}; "
                             "never mix scales in one table")
        if paper is not None and data["paper"] != paper:
            raise ValueError(f"{path}: paper {data['paper']!r}, expected {paper!r}")
        _check(metric in data["metrics"], str(path), f"metrics.{metric}",
               f"missing (has {sorted(data['metrics'])})")
        cell = (data["row"], data["seed"])
        if cell in source:
            raise ValueError(f"seed {data['seed']} of row {data['row']!r} appears twice: "
                             f"{source[cell]} and {path}")
        source[cell] = path
        out.setdefault(data["row"], []).append((data["seed"], float(data["metrics"][metric])))
    return {row: sorted(values) for row, values in out.items()}


@dataclasses.dataclass
class RowComparison:
    id: str
    label: dict[str, Any]
    reported_mean: float
    reported_std: float | None
    reproduced_mean: float | None
    reproduced_std: float | None  # sample std (ddof=1), None below 2 seeds
    n: int
    seeds: list[int]
    delta: float | None  # reproduced mean - reported mean
    status: str  # "ok" | "not run"
    note: str | None = None
    values: list[float] | None = None  # one per seed, in the order of `seeds`; None: not recorded (older tables)


@dataclasses.dataclass
class Comparison:
    paper: str
    source: str
    table: str
    caption: str
    metric: str
    unit: str
    scale: str
    rows: list[RowComparison]
    provenance: dict[str, str]
    md_path: Path | None = None
    json_path: Path | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["md_path"], d["json_path"]
        for row in d["rows"]:
            if row["values"] is None:  # a table written before per-seed values were kept stays as it was
                del row["values"]
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "<comparison>") -> Comparison:
        """The inverse of :meth:`to_dict` (a committed ``<table>.json``); errors name `where` and
        the key."""
        d = json.loads(json.dumps(d))  # a copy: _fields fills absent optional keys in place
        _fields(d, where, "", {"paper": STRING, "source": STRING, "table": STRING, "caption": STRING,
                               "metric": STRING, "unit": STRING, "scale": STRING, "rows": LIST,
                               "provenance": MAPPING})
        rows = []
        for i, row in enumerate(d.pop("rows")):
            _fields(row, where, f"rows[{i}]",
                    {"id": STRING, "label": MAPPING, "reported_mean": NUMBER, "n": (int,),
                     "seeds": LIST, "status": STRING},
                    {"reported_std": NUMBER, "reproduced_mean": NUMBER, "reproduced_std": NUMBER,
                     "delta": NUMBER, "note": STRING, "values": LIST})
            _check(row["values"] is None or len(row["values"]) == len(row["seeds"]), where, f"rows[{i}].values",
                   f"{len(row['values'] or [])} values for {len(row['seeds'])} seeds")
            rows.append(RowComparison(**row))
        return cls(**d, rows=rows)


def format_number(x: float, sign: str = "") -> str:
    """Two decimals, as the papers print accuracies and FIDs; small values keep two figures."""
    return f"{x:{sign}.2f}" if x == 0 or not abs(x) < 0.1 else f"{x:{sign}.2g}"


def _fmt_as_printed(x: float) -> str:
    # reported numbers keep the digits the paper printed (70.323 stays 70.323), at least two decimals
    return format_number(x) if round(x, 2) == x else repr(x)


def to_markdown(c: Comparison) -> str:
    label_keys = list(dict.fromkeys(k for r in c.rows for k in r.label))
    unit = f" ({c.unit})" if c.unit else ""
    lines = [f"**{c.paper} / {c.table}**, scale **{c.scale}**: {c.metric}{unit}. {c.caption}",
             "", f"Source: {c.source}. Made by `{c.provenance['command']}` at commit "
             f"`{c.provenance['commit']}`.", "",
             "| " + " | ".join(["row", *label_keys, "reported", f"reproduced ({c.scale})", "delta",
                                "note"]) + " |",
             "|" + "---|" * (len(label_keys) + 5)]
    for r in c.rows:
        reported = _fmt_as_printed(r.reported_mean)
        if r.reported_std is not None:
            reported += f" ± {_fmt_as_printed(r.reported_std)}"
        if r.status == "not run":
            reproduced, delta = "not run", ""
        else:
            spread = f" ± {format_number(r.reproduced_std)}" if r.reproduced_std is not None else ""
            reproduced = f"{format_number(r.reproduced_mean)}{spread} (n={r.n})"
            delta = "" if r.delta is None else format_number(r.delta, "+")  # no delta across different metrics
        cells = [r.id, *(str(r.label.get(k, "")) for k in label_keys), reported, reproduced, delta,
                 (r.note or "").replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(reported_path: str | Path, metrics_files: Iterable[Path], table: str, scale: str,
            out_dir: str | Path, metric: str | None = None) -> Comparison:
    """Reported vs reproduced for one table at one scale; writes <out_dir>/<table>.md and .json.

    `metric` reads another key from the metrics files than the table's reported metric (e.g. an
    in-domain FID beside a paper's Inception FID): the comparison is then labelled with that key
    and carries no deltas, since the two numbers measure different things.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    reported = load_reported(reported_path)
    if table not in reported["tables"]:
        raise ValueError(f"{reported_path}: no table {table!r} (has {sorted(reported['tables'])})")
    spec = reported["tables"][table]
    metric = spec["metric"] if metric is None else metric
    comparable = metric == spec["metric"]
    values = collect_reproduced(metrics_files, table, metric, scale, paper=reported["paper"])
    if unknown := set(values) - {row["id"] for row in spec["rows"]}:
        raise ValueError(f"metrics files name rows {sorted(unknown)} that {reported_path} "
                         f"does not have in {table}")
    rows = []
    for row in spec["rows"]:
        seeds = [s for s, _ in values.get(row["id"], [])]
        xs = np.array([v for _, v in values.get(row["id"], [])], dtype=float)
        mean = float(xs.mean()) if len(xs) else None
        rows.append(RowComparison(
            id=row["id"], label=dict(row["label"]), reported_mean=float(row["mean"]),
            reported_std=None if row["std"] is None else float(row["std"]),
            reproduced_mean=mean, reproduced_std=float(xs.std(ddof=1)) if len(xs) >= 2 else None,
            n=len(xs), seeds=seeds, delta=None if mean is None or not comparable else mean - float(row["mean"]),
            status="ok" if len(xs) else "not run", note=row["note"], values=xs.tolist()))
    caption = spec["caption"] if comparable else (
        f"{spec['caption']} Reproduced as {metric}, reported as {spec['metric']}: not comparable, no delta.")
    c = Comparison(reported["paper"], reported["source"], table, caption, metric, spec["unit"], scale, rows,
                   provenance())
    out_dir = Path(out_dir)
    c.md_path, c.json_path = out_dir / f"{table}.md", out_dir / f"{table}.json"
    atomic_write_text(c.md_path, to_markdown(c))
    atomic_write_text(c.json_path, json.dumps(c.to_dict(), indent=2) + "\n")
    return c


VS_REPORTED = "{table}_vs_reported.png"  # a table's reported-vs-reproduced figure (shared.report draws it)


def _per_seed_text(r: RowComparison) -> str:
    if r.status == "not run":
        return "not run"
    if r.values is None:  # a table written before per-seed values were kept
        return "seeds " + ", ".join(map(str, r.seeds)) + " (values not recorded)"
    return ", ".join(f"seed {s}: {format_number(v)}" for s, v in zip(r.seeds, r.values))


def table_columns(c: Comparison) -> dict[str, list]:
    """The comparison as columns for ``mlflow.log_table`` (a grid in the run's artifact view): row,
    setup, reported (± its printed std), reproduced mean, sample std, n, difference, per-seed values."""
    return {
        "row": [r.id for r in c.rows],
        "setup": [", ".join(f"{k}: {v}" for k, v in r.label.items()) for r in c.rows],
        "reported": [r.reported_mean for r in c.rows],
        "reported std": [r.reported_std for r in c.rows],
        f"reproduced mean ({c.scale})": [r.reproduced_mean for r in c.rows],
        "reproduced std (ddof=1)": [r.reproduced_std for r in c.rows],
        "n": [r.n for r in c.rows],
        "difference": [r.delta for r in c.rows],
        "per-seed values": [_per_seed_text(r) for r in c.rows],
        "note": [r.note or "" for r in c.rows],
    }


def log_comparison(comparison: Comparison, tracking_uri: str | None = None,
                   extra_artifacts: Iterable[str | Path] = (), tags: Mapping | None = None) -> str:
    """Log a comparison as run `compare/<table>/<scale>` in the paper's experiment; returns its id.

    Metrics: reported/<row> for every row, reproduced/<row> and delta/<row> for rows that ran.
    Tags: paper, table, scale, kind=comparison, the Markdown table as the run's description
    (`mlflow.note.content`), then `tags` (which win). Artifacts: the table's .md and .json,
    :func:`table_columns` as the MLflow table ``<table>.table.json`` (shown as a grid in the UI), and
    `extra_artifacts`, less the reported-vs-reproduced figures of other tables (:data:`VS_REPORTED`:
    each belongs to its own table's run).

    One run per (paper, table, scale): the new run replaces (deletes) every other active run with
    those tags, whoever logged it. Replaced rather than reopened because the run is a snapshot of
    the table: reopening would keep the metrics of rows that no longer ran, refuse the new command
    and commit as params (MLflow params never change) and give each metric a second point.
    """
    c = comparison
    key = {"kind": "comparison", "table": c.table, "scale": c.scale}
    all_tags = {"paper": c.paper, **key,
                tracking.NOTE_TAG: tracking.note(to_markdown(c), f"{c.table}.md"), **(tags or {})}
    with MLflowLogger(c.paper, f"compare/{c.table}/{c.scale}", all_tags, tracking_uri) as logger:
        logger.log_params({"metric": c.metric, "unit": c.unit, "source": c.source, **c.provenance})
        metrics = {}
        for r in c.rows:
            metrics[f"reported/{r.id}"] = r.reported_mean
            if r.reproduced_mean is not None:
                metrics[f"reproduced/{r.id}"] = r.reproduced_mean
            if r.delta is not None:
                metrics[f"delta/{r.id}"] = r.delta
        logger.log_metrics(metrics)
        logger.client.log_table(logger.run_id, data=table_columns(c), artifact_file=f"{c.table}.table.json")
        own_figure, others = VS_REPORTED.format(table=c.table), VS_REPORTED.format(table="")
        for path in [c.md_path, c.json_path, *extra_artifacts]:
            if path is not None and (Path(path).name == own_figure or not Path(path).name.endswith(others)):
                logger.log_artifact(path)
    return _replace(logger, key)


def _replace(logger: MLflowLogger, key: Mapping[str, str]) -> str:
    """After a snapshot run: delete the older runs of its key, update the experiment's saved views."""
    tracking.replace_others(logger.client, logger.experiment_id, key, keep=[logger.run_id])
    tracking.update_views(logger.client, logger.experiment_id)
    return logger.run_id


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def claims_markdown(doc: dict) -> str:
    """A claims file's verdicts as a Markdown table (claim, verdict, test, n per setup, the effect with
    its 95% CI and p, reason), with the command and commit that made it."""
    made = f" Made by `{doc['command']}` at commit `{doc.get('commit', 'unknown')}`." if doc.get("command") else ""
    alpha = f" Tests at alpha = {doc['alpha']}." if doc.get("alpha") is not None else ""
    lines = [f"**{doc['paper']}**, scale **{doc['scale']}**: claims.{made}{alpha}", "",
             "| claim | verdict | test | n (seeds) | effect (95% CI), p | reason |", "|---|---|---|---|---|---|"]
    for c in doc["claims"]:
        n = claims.n_text(c["n"]) if c.get("n") else ""
        lines.append(f"| ({_cell(c['id'])}) {_cell(c['claim'])} | **{_cell(c['verdict'])}** at {doc['scale']} | "
                     f"{_cell(c.get('test') or c.get('rule') or '')} | {_cell(n)} | {_cell(claims.effect_text(c))} | "
                     f"{_cell(c.get('reason') or '')} |")
    if doc.get("note"):
        lines += ["", _cell(doc["note"])]
    return "\n".join(lines) + "\n"


def log_claims(claims_file: str | Path, tracking_uri: str | None = None, tags: Mapping | None = None,
               markdown: str | None = None) -> str:
    """Log a report's ``claims.json`` as run `claims/<scale>` in the paper's experiment; returns its id.

    Tags paper, scale, kind=claims and verdict/<id> (holds | does not hold | inconclusive), params
    claim/<id> and rule/<id>, a claim's real-valued fields (difference or slope, p, p_adjusted, df,
    alpha, ...; not setup names) and its 95% CI as ci95_low / ci95_high, as metrics <field>/<id>;
    `markdown` (default: the verdict table of :func:`claims_markdown`) as the run's description and
    artifact ``claims.md``, and ``claims.json``. `tags` win. One run per (paper, scale): it replaces the older ones, as
    :func:`log_comparison` does. The file is read as it is: check it first (``shared.scorecard.load_claims``)
    where it was not just written by the report.
    """
    claims_file = Path(claims_file)
    try:
        doc = json.loads(claims_file.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{claims_file}: not JSON: {e}") from e
    markdown = claims_markdown(doc) if markdown is None else markdown
    key = {"kind": "claims", "scale": doc["scale"]}
    all_tags = {"paper": doc["paper"], **key, tracking.NOTE_TAG: tracking.note(markdown, "claims.md"),
                **(tags or {})}
    with MLflowLogger(doc["paper"], f"claims/{doc['scale']}", all_tags, tracking_uri) as logger, \
            tempfile.TemporaryDirectory() as tmp:
        params, metrics = {}, {}
        for c in doc["claims"]:
            params[f"claim/{c['id']}"] = c["claim"]
            if c.get("rule"):
                params[f"rule/{c['id']}"] = c["rule"]
            metrics.update({f"{k}/{c['id']}": v for k, v in c.items() if isinstance(v, float)})
            if isinstance(c.get("ci95"), list) and len(c["ci95"]) == 2:
                metrics.update({f"ci95_low/{c['id']}": c["ci95"][0], f"ci95_high/{c['id']}": c["ci95"][1]})
        logger.log_params(params)
        logger.set_tags({f"verdict/{c['id']}": c["verdict"] for c in doc["claims"]})
        if metrics:
            logger.log_metrics(metrics)
        md = Path(tmp) / "claims.md"
        md.write_text(markdown)
        for path in (claims_file, md):
            logger.log_artifact(path)
    return _replace(logger, key)


# ---------------------------------------------------------------- where results are committed
# Here rather than in the store (shared.tracking.store): the scorecard reads these folders too, and
# the store imports the scorecard.

RESULTS = ("papers/*/results",)  # where papers commit their results: <results>/<scale>/


def results_dirs(patterns: Iterable[str] = RESULTS, root: str | Path | None = None,
                 scales: Iterable[str] = COMMITTED_SCALES) -> list[Path]:
    """The committed results folders `<results>/<scale>/` named by `patterns`, for `scales` only
    (default: the scales the repository commits, so local smoke results are passed over).

    A pattern is a glob relative to `root` (default: the repository) or absolute; a match is a
    results folder whose sub-folders are scales (or hold scales, as `sweeps/<scale>`), or a scale
    folder itself. Any other sub-folder is an error (results are always labelled with their scale).
    """
    root = Path(root or REPO_ROOT)
    found: set[Path] = set()
    for pattern in patterns:
        for match in map(Path, glob.glob(str(root / pattern))):  # root / "/abs" is "/abs"
            if not match.is_dir():
                continue
            if match.name in SCALES:
                found.add(match)
                continue
            for sub in match.iterdir():
                if not sub.is_dir() or sub.name.startswith("."):
                    continue
                if sub.name in SCALES:
                    found.add(sub)
                elif nested := [d for d in sub.iterdir() if d.is_dir() and d.name in SCALES]:
                    found.update(nested)  # a kind of result with its own scales, e.g. results/sweeps/mini
                else:
                    raise ValueError(f"{sub}: results folders are named by scale ({', '.join(SCALES)})")
    keep = set(scales)
    return sorted((d for d in found if d.name in keep), key=lambda d: (d.parent.as_posix(), SCALES.index(d.name)))


def display_path(path: Path, root: str | Path | None = None) -> str:
    """`path` relative to `root` (default: the repository) where it is inside, for tags and tables."""
    path, root = Path(path).resolve(), Path(root or REPO_ROOT).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
