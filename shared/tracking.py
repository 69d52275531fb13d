"""One logging interface over MLflow, and the reported-vs-reproduced comparison.

Trainers take a `Logger`; pipelines pass `MLflowLogger` (one experiment per paper, one run per
configuration), unit tests pass `NullLogger` and assert on what it recorded. `MLflowLogger` talks
to `mlflow.MlflowClient` with explicit run ids, never the fluent active-run stack, so several
loggers and nested runs coexist and nothing leaks between them.

The local store is SQLite (`<repo>/mlflow/mlflow.db`, artifacts under `<repo>/mlflow/artifacts`):
MLflow 3 refuses the plain file store unless MLFLOW_ALLOW_FILE_STORE is set.

CLI: python -m shared.tracking compare --reported papers/X/reported.yaml --metrics 'glob'
         --table table1 --scale mini --out DIR [--log]
     python -m shared.tracking rebuild [--results 'papers/*/results']   the committed results -> the store
     python -m shared.tracking ui [--port 5000]                           the MLflow UI on the store
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.io import atomic_write_text
from shared.provenance import git_commit, provenance

REPO_ROOT = Path(__file__).resolve().parents[1]
SCALES = ("smoke", "mini", "paper")
BACKENDS = ("mlflow", "none")
# MLflow's limits (mlflow.utils.validation): key length, param value length, params per batch.
MAX_KEY_LEN, MAX_PARAM_VAL_LEN, MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH = 250, 6000, 100, 1000


def flatten_params(params: Mapping | Any, prefix: str = "") -> dict[str, str]:
    """{"opt": {"lr": 0.1}} -> {"opt.lr": "0.1"}; dataclasses count as mappings."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        if len(name) > MAX_KEY_LEN:
            raise ValueError(f"param key longer than MLflow's {MAX_KEY_LEN} characters: {name!r}")
        text = str(value)
        if len(text) > MAX_PARAM_VAL_LEN:  # MLflow would reject or cut it; cut it visibly
            text = text[: MAX_PARAM_VAL_LEN - 3] + "..."
        flat[name] = text
    return flat


def _dict_text(obj: Any, name: str) -> str:
    """Serialise a mapping as JSON or YAML by `name`'s extension (paths etc. become strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    plain = json.loads(json.dumps(obj, default=str))
    if name.endswith(".json"):
        return json.dumps(plain, indent=2) + "\n"
    if name.endswith((".yaml", ".yml")):
        return yaml.safe_dump(plain, sort_keys=False)
    raise ValueError(f"log_dict: {name!r} must end in .json, .yaml or .yml")


def _image_hwc(image: Any) -> np.ndarray:
    """A uint8 HxW, HxWxC or CxHxW array (or CPU tensor) as HxW or HxWxC, C in {1, 3, 4}."""
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.dtype != np.uint8:
        raise ValueError(f"log_image expects uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"log_image expects HxW, HxWxC or CxHxW with C in 1/3/4, got {array.shape}")
    return array


# ---------------------------------------------------------------- loggers

class Logger:
    """What trainers and stages log through. Subclasses implement every method below."""

    def log_params(self, params: Mapping) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        raise NotImplementedError

    def log_dict(self, obj: Mapping, name: str) -> None:
        raise NotImplementedError

    def log_figure(self, fig: Any, name: str) -> None:
        raise NotImplementedError

    def log_image(self, image: Any, name: str) -> None:
        raise NotImplementedError

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def child(self, run_name: str, tags: Mapping | None = None) -> Logger:
        raise NotImplementedError

    def close(self, status: str = "FINISHED") -> None:
        raise NotImplementedError

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        return False


class NullLogger(Logger):
    """No I/O; keeps what was logged so tests can assert on it."""

    def __init__(self, run_name: str | None = None, tags: Mapping | None = None):
        self.run_name = run_name
        self.params: dict[str, str] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tags: dict[str, str] = {str(k): str(v) for k, v in (tags or {}).items()}
        self.artifacts: dict[str, Any] = {}  # artifact name -> logged object (or source path)
        self.children: list[NullLogger] = []
        self.status: str | None = None

    def log_params(self, params):
        self.params.update(flatten_params(params))

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, {k: float(v) for k, v in metrics.items()}))

    def metric_history(self, key: str) -> list[tuple[int | None, float]]:
        return [(step, values[key]) for step, values in self.metrics if key in values]

    def log_artifact(self, path, artifact_path=None):
        name = Path(path).name
        self.artifacts[f"{artifact_path}/{name}" if artifact_path else name] = str(path)

    def log_dict(self, obj, name):
        _dict_text(obj, name)  # fail here as MLflowLogger would on a bad name or object
        self.artifacts[name] = obj

    def log_figure(self, fig, name):
        self.artifacts[name] = fig

    def log_image(self, image, name):
        self.artifacts[name] = _image_hwc(image)

    def set_tags(self, tags):
        self.tags.update({str(k): str(v) for k, v in tags.items()})

    def child(self, run_name, tags=None):
        self.children.append(NullLogger(run_name, tags))
        return self.children[-1]

    def close(self, status="FINISHED"):
        self.status = status


def default_tracking_uri(repo_root: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI if set, else the repository's SQLite store `<repo>/mlflow/mlflow.db`."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(repo_root or REPO_ROOT).resolve() / 'mlflow' / 'mlflow.db').as_posix()}"


def _local_sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class MLflowLogger(Logger):
    """One MLflow run (nested under `parent_run_id` when given) in experiment `experiment`."""

    def __init__(self, experiment: str, run_name: str | None = None, tags: Mapping | None = None,
                 tracking_uri: str | None = None, parent_run_id: str | None = None):
        from mlflow import MlflowClient  # import here: ~1.5 s, which NullLogger users never pay

        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        db = _local_sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment_id(experiment, db)
        all_tags = {"mlflow.source.name": provenance()["command"]}
        if (commit := git_commit()) is not None:
            all_tags["mlflow.source.git.commit"] = commit
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        self.run_id: str = run.info.run_id
        self.run_name: str = run.info.run_name
        self.closed = False

    def _experiment_id(self, name: str, db: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None  # a tracking server chooses its own artifact root
        if db is not None:
            location = (db.parent / "artifacts" / re.sub(r"[^\w.-]", "_", name)).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it between the two calls
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics, step=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # step None is logged as step 0, as MLflow does. Non-finite values are logged as they are
        # (SQLite keeps NaN and stores +-inf as +-max float); trainers stop on them, not the logger.
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path, artifact_path=None):
        if not Path(path).exists():
            raise FileNotFoundError(f"log_artifact: {path} does not exist")
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj, name):
        self.client.log_text(self.run_id, _dict_text(obj, name), name)

    def log_figure(self, fig, name):
        self.client.log_figure(self.run_id, fig, name)

    def log_image(self, image, name):
        self.client.log_image(self.run_id, _image_hwc(image), artifact_file=name)

    def set_tags(self, tags):
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):  # tags share the params' batch limit
            self.client.log_batch(self.run_id, tags=items[i:i + MAX_PARAMS_PER_BATCH])

    def child(self, run_name, tags=None):
        return MLflowLogger(self.experiment, run_name, tags, self.tracking_uri, parent_run_id=self.run_id)

    def close(self, status="FINISHED"):
        if not self.closed:
            self.client.set_terminated(self.run_id, status)
            self.closed = True


def make_logger(backend: str, experiment: str, run_name: str | None = None,
                tags: Mapping | None = None, tracking_uri: str | None = None) -> Logger:
    if backend == "mlflow":
        return MLflowLogger(experiment, run_name, tags, tracking_uri)
    if backend == "none":
        return NullLogger(run_name, tags)
    raise ValueError(f"unknown logging backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def stage_logger(suite: Any, experiment: str, run_name: str, config: Any, **tags: Any) -> Logger:
    """A run for one pipeline stage, set up the same way everywhere.

    ``suite`` is the top-level :class:`shared.config.SuiteConfig`: its tracking
    settings choose the backend and store, its scale and seed become tags. The
    stage's resolved ``config`` (a dataclass or mapping) is logged as params and
    as ``config.yaml``. Where the experiment is a paper package (``papers/<experiment>``),
    the run is tagged ``paper=<experiment>`` too, so the UI can filter across experiments;
    ``tags`` win over all of these (a stage with its own trial seed passes ``seed=...``).
    """
    from shared.config import to_dict  # config imports nothing from here; keep the graph one-way

    defaults = {"scale": suite.scale, "seed": suite.seed}
    if (REPO_ROOT / "papers" / experiment).is_dir():
        defaults = {"paper": experiment, **defaults}
    logger = make_logger(suite.tracking.backend, experiment, run_name, {**defaults, **tags},
                         suite.tracking.uri)
    resolved = to_dict(config)
    logger.log_params(resolved)
    logger.log_dict(resolved, "config.yaml")
    return logger


# ---------------------------------------------------------------- reported vs reproduced

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
                     "delta": NUMBER, "note": STRING})
            rows.append(RowComparison(**row))
        return cls(**d, rows=rows)


def _fmt(x: float, sign: str = "") -> str:
    # two decimals, as the papers print accuracies and FIDs; small values keep two figures
    return f"{x:{sign}.2f}" if x == 0 or not abs(x) < 0.1 else f"{x:{sign}.2g}"


def _fmt_as_printed(x: float) -> str:
    # reported numbers keep the digits the paper printed (70.323 stays 70.323), at least two decimals
    return _fmt(x) if round(x, 2) == x else repr(x)


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
            spread = f" ± {_fmt(r.reproduced_std)}" if r.reproduced_std is not None else ""
            reproduced = f"{_fmt(r.reproduced_mean)}{spread} (n={r.n})"
            delta = "" if r.delta is None else _fmt(r.delta, "+")  # no delta across different metrics
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
            status="ok" if len(xs) else "not run", note=row["note"]))
    caption = spec["caption"] if comparable else (
        f"{spec['caption']} Reproduced as {metric}, reported as {spec['metric']}: not comparable, no delta.")
    c = Comparison(reported["paper"], reported["source"], table, caption, metric, spec["unit"], scale, rows,
                   provenance())
    out_dir = Path(out_dir)
    c.md_path, c.json_path = out_dir / f"{table}.md", out_dir / f"{table}.json"
    atomic_write_text(c.md_path, to_markdown(c))
    atomic_write_text(c.json_path, json.dumps(c.to_dict(), indent=2) + "\n")
    return c


def log_comparison(comparison: Comparison, tracking_uri: str | None = None,
                   extra_artifacts: Iterable[str | Path] = (), tags: Mapping | None = None) -> str:
    """Log a comparison as run `compare/<table>/<scale>` in the paper's experiment; returns its id.

    Metrics: reported/<row> for every row, reproduced/<row> and delta/<row> for rows that ran.
    Tags: paper, table, scale, kind=comparison, then `tags` (which win).
    """
    c = comparison
    all_tags = {"paper": c.paper, "table": c.table, "scale": c.scale, "kind": "comparison",
                **(tags or {})}
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
        for path in [c.md_path, c.json_path, *extra_artifacts]:
            if path is not None:
                logger.log_artifact(path)
        return logger.run_id


# ---------------------------------------------------------------- the store from committed results

# Bump when `rebuild` logs a run differently: every rebuilt run's digest changes and it is remade.
REBUILD_VERSION = "1"
RESULTS = ("papers/*/results",)  # where papers commit their results: <results>/<scale>/


def results_dirs(patterns: Iterable[str] = RESULTS, root: str | Path | None = None) -> list[Path]:
    """The committed results folders `<results>/<scale>/` named by `patterns`.

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
    return sorted(found, key=lambda d: (d.parent.as_posix(), SCALES.index(d.name)))


def display_path(path: Path, root: str | Path | None = None) -> str:
    """`path` relative to `root` (default: the repository) where it is inside, for tags and tables."""
    path, root = Path(path).resolve(), Path(root or REPO_ROOT).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def _is_comparison(doc: Any) -> bool:
    keys = {f.name for f in dataclasses.fields(Comparison)} - {"md_path", "json_path"}
    return isinstance(doc, dict) and keys <= set(doc)


def _digest(name: str, files: Iterable[Path]) -> str:
    """What a rebuilt run is made from: its name, its artifacts' names and bytes, REBUILD_VERSION."""
    h = hashlib.sha256(f"rebuild {REBUILD_VERSION}\n{name}\n".encode())
    for f in sorted(files, key=lambda f: f.name):
        h.update(f"{f.name}\n{f.stat().st_size}\n".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _log_claims(doc: dict, artifacts: list[Path], tags: Mapping, tracking_uri: str) -> str:
    """Run `claims/<scale>`: tags verdict/<id>, params claim/<id> and rule/<id>, a claim's real-valued
    fields (difference, combined_std, ...; not setup names such as runner_up=5000) as metrics
    <field>/<id>, the files as artifacts."""
    all_tags = {"paper": doc["paper"], "scale": doc["scale"], "kind": "claims", **tags}
    with MLflowLogger(doc["paper"], f"claims/{doc['scale']}", all_tags, tracking_uri) as logger:
        params, metrics = {}, {}
        for c in doc["claims"]:
            params[f"claim/{c['id']}"] = c["claim"]
            if c.get("rule"):
                params[f"rule/{c['id']}"] = c["rule"]
            metrics.update({f"{k}/{c['id']}": v for k, v in c.items() if isinstance(v, float)})
        logger.log_params(params)
        logger.set_tags({f"verdict/{c['id']}": c["verdict"] for c in doc["claims"]})
        if metrics:
            logger.log_metrics(metrics)
        for path in artifacts:
            logger.log_artifact(path)
        return logger.run_id


def _rebuild_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    """Every active run made by `rebuild` in these experiments (all pages)."""
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, "tags.source = 'rebuild'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def rebuild(patterns: Iterable[str] = RESULTS, tracking_uri: str | None = None,
            root: str | Path | None = None) -> list[tuple[str, str, str]]:
    """Re-create the MLflow runs of the committed results, so a fresh clone can browse them.

    For every results folder (:func:`results_dirs`): each comparison table (`<table>.json` as
    written by :func:`compare`) becomes run `compare/<table>/<scale>` as :func:`log_comparison`
    logs it (metrics reported/reproduced/delta per row, the table's .md and .json, and the folder's
    other files: figures, claims.json, ...); `claims.json` becomes run `claims/<scale>` (see
    :func:`_log_claims`; its artifacts are claims.json and the claims' scorecard rows as
    claims.md). Runs carry tags source=rebuild, rebuild_from=<folder>, rebuild_digest and, as
    mlflow.source.*, the command and commit that made the numbers (not those of the rebuild).

    Idempotent: a run whose digest (its files and REBUILD_VERSION) is unchanged is kept; a changed
    one is made anew and the old one deleted, as are rebuilt runs whose file is gone. Only runs
    tagged source=rebuild are ever touched. Returns [(created|unchanged|deleted, run, run id)].
    """
    import tempfile

    from mlflow import MlflowClient

    from shared.scorecard import load_claims, scorecard  # scorecard imports from here: import late

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    actions: list[tuple[str, str, str]] = []
    for folder in results_dirs(patterns, root):
        source = display_path(folder, root)
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        tables: dict[Path, Comparison] = {}
        for f in files:
            if f.suffix != ".json":
                continue
            try:
                doc = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise SchemaError(f"{f}: not JSON: {e}") from e
            if _is_comparison(doc):
                c = tables[f] = Comparison.from_dict(doc, str(f))
                if c.scale != folder.name:
                    raise ValueError(f"{f}: scale {c.scale!r} in a folder for scale {folder.name!r}")
                c.json_path, md = f, f.with_suffix(".md")
                c.md_path = md if md.is_file() else None
        table_files = set(tables) | {c.md_path for c in tables.values()}
        extras = [f for f in files if f not in table_files]
        base = {"source": "rebuild", "rebuild_from": source, "rebuild_commit": git_commit() or "unknown"}

        with tempfile.TemporaryDirectory() as tmp:
            # (experiment, run name, artifacts, tags, log(tags) -> run id)
            planned: list[tuple[str, str, list[Path], dict, Any]] = []
            for c in tables.values():
                arts = [p for p in (c.md_path, c.json_path, *extras) if p is not None]
                tags = {**base, "mlflow.source.name": c.provenance.get("command", "unknown"),
                        "mlflow.source.git.commit": c.provenance.get("commit", "unknown")}
                planned.append((c.paper, f"compare/{c.table}/{c.scale}", arts, tags,
                                lambda t, c=c: log_comparison(c, uri, extras, tags=t)))
            if (claims_file := folder / "claims.json").is_file():
                doc = load_claims(claims_file)
                if doc["scale"] != folder.name:
                    raise ValueError(f"{claims_file}: scale {doc['scale']!r} in a folder for "
                                     f"scale {folder.name!r}")
                md = Path(tmp) / "claims.md"
                md.write_text(scorecard([claims_file], root))
                tags = {**base, "mlflow.source.name": doc.get("command", "unknown"),
                        "mlflow.source.git.commit": doc.get("commit", "unknown")}
                arts = [claims_file, md]
                planned.append((doc["paper"], f"claims/{doc['scale']}", arts, tags,
                                lambda t, doc=doc, arts=arts: _log_claims(doc, arts, t, uri)))

            experiments = [e for name in sorted({p[0] for p in planned} | {folder.parent.parent.name})
                           if (e := client.get_experiment_by_name(name)) is not None]
            names = {e.experiment_id: e.name for e in experiments}
            existing = [r for r in _rebuild_runs(client, list(names))
                        if r.data.tags.get("rebuild_from") == source]
            keep: set[str] = set()
            for experiment, name, arts, tags, log in planned:
                digest = _digest(name, arts)
                same = [r for r in existing if names[r.info.experiment_id] == experiment
                        and r.info.run_name == name and r.info.status == "FINISHED"
                        and r.data.tags.get("rebuild_digest") == digest]
                if same:
                    keep.add(same[0].info.run_id)
                    actions.append(("unchanged", f"{experiment}/{name}", same[0].info.run_id))
                    continue
                run_id = log({**tags, "rebuild_digest": digest})
                keep.add(run_id)
                actions.append(("created", f"{experiment}/{name}", run_id))
            # new runs first, then the old ones go: a failure above leaves the store as it was
            for r in existing:
                if r.info.run_id not in keep:
                    client.delete_run(r.info.run_id)
                    actions.append(("deleted", f"{names[r.info.experiment_id]}/{r.info.run_name}",
                                    r.info.run_id))
    return actions


def ui_command(tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
               workers: int = 1) -> list[str]:
    """`mlflow ui` on a store (default: the repository's SQLite store); an http URI is a server
    already, so it is an error. One worker: a single user's browser needs no more, and each costs
    a Python process."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise ValueError(f"{uri} is a tracking server already: open it in a browser")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
            "--port", str(port), "--workers", str(workers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="reported vs reproduced table from metrics files")
    p.add_argument("--reported", required=True, type=Path, help="papers/<paper>/reported.yaml")
    p.add_argument("--metrics", required=True, nargs="+", help="metrics JSON files or globs ('**' ok)")
    p.add_argument("--table", required=True)
    p.add_argument("--scale", required=True, choices=SCALES)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--log", action="store_true", help="also log the table to MLflow")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    p = sub.add_parser("rebuild", help="load the committed results (papers/*/results) into the store")
    p.add_argument("--results", nargs="+", default=list(RESULTS),
                   help="results folders or globs, relative to the repository (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    p = sub.add_parser("ui", help="the MLflow UI on the store (mlflow ui, one worker)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="default: loopback only; on a remote machine forward the port over ssh")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        actions = rebuild(args.results, args.tracking_uri)
        for action, name, run_id in actions:
            print(f"{action:9s} {name}  {run_id}")
        counts = {kind: sum(a == kind for a, _, _ in actions) for kind in ("created", "unchanged", "deleted")}
        print(", ".join(f"{n} {kind}" for kind, n in counts.items())
              + f" in {args.tracking_uri or default_tracking_uri()}")
        return 0
    if args.command == "ui":
        try:
            command = ui_command(args.tracking_uri, args.host, args.port)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        db = _local_sqlite_path(command[command.index("--backend-store-uri") + 1])
        if db is not None and not db.is_file():
            print(f"note: {db} does not exist yet; `python -m shared.tracking rebuild` loads the "
                  "committed results into it", file=sys.stderr)
        print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl+C stops it): {' '.join(command[1:])}",
              flush=True)
        # The suite runs no server-side jobs (GenAI judges): skip MLflow's job runner process.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        os.execve(sys.executable, command, env)  # replaces this process: Ctrl+C reaches mlflow
        return 0  # not reached
    files = sorted({Path(f) for pattern in args.metrics for f in glob.glob(pattern, recursive=True)})
    if not files:
        print(f"warning: no metrics files match {args.metrics}; every row is 'not run'", file=sys.stderr)
    c = compare(args.reported, files, args.table, args.scale, args.out)
    print(c.md_path.read_text(), end="")
    if args.log:
        print(f"logged to MLflow run {log_comparison(c, args.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
