"""The MLflow store from the committed results, and the UI on it.

:func:`rebuild` re-creates the comparison, claims and sweep runs of every committed results folder
(``papers/*/results/<scale>/``, ``papers/*/results/sweeps/<scale>/``), so a fresh clone can browse
them without running anything; :func:`ui_command` is ``mlflow ui`` on the store. Both are behind
``python -m shared.tracking`` (``rebuild`` and ``ui``); mlflow/README.md describes the runs they make.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared.comparison import (RESULTS, Comparison, SchemaError, display_path, log_claims, log_comparison,
                               results_dirs)
from shared.config import COMMITTED_SCALES
from shared.provenance import git_commit
from shared.scorecard import load_claims, scorecard
from shared.tracking import (NOTE_TAG, MLflowLogger, default_tracking_uri, note, replace_others, runs_like,
                             search_all, view_links)

# Bump when `rebuild` logs a run differently: every rebuilt run's digest changes and it is remade.
REBUILD_VERSION = "3"
SWEEP_KEYS = {"paper", "stage", "study", "scale", "objective", "trials"}  # a sweep's summary.json


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


def _log_sweep(s: dict, artifacts: list[Path], tags: Mapping, tracking_uri: str) -> list[str]:
    """Run `sweep/<study>` from a sweep's ``summary.json``, shaped as the sweep's own run: params the
    study, its storage and settings (objective, stage arguments, budget, space), metrics
    best/<metric>, defaults/<metric> and reference_<name>/<metric>, ``summary.md`` as its
    description, the folder's files as artifacts; nested under it one run `trial <n>` per trial
    (params trial.<name>, tags trial and state, the evaluations as eval/<metric> against their
    step, objective/<metric> for a complete trial). Returns the ids, the parent's first."""
    from mlflow.entities import Metric

    metric, now = s["objective"]["metric"], int(time.time() * 1000)
    base = {"paper": s["paper"], "stage": s["stage"], "scale": s["scale"], "study": s["study"]}
    md = next((p for p in artifacts if p.name == "summary.md"), None)
    described = {NOTE_TAG: note(md.read_text(), md.name)} if md is not None else {}
    with MLflowLogger(s["paper"], f"sweep/{s['study']}", {**base, "kind": "sweep", **described, **tags},
                      tracking_uri) as parent:
        parent.log_params({"study": s["study"], "storage": s.get("storage"), "scale": s["scale"],
                           "args": s.get("args") or {}, "budget": s.get("budget") or {},
                           "objective": s["objective"],
                           "space": {n: spec.get("key") for n, spec in (s.get("space") or {}).items()}})
        metrics = {}
        if s.get("best"):
            metrics[f"best/{metric}"] = s["best"]["value"]
        if s.get("defaults") and s["defaults"].get("value") is not None:
            metrics[f"defaults/{metric}"] = s["defaults"]["value"]
        metrics.update({f"reference_{name}/{metric}": ref["value"]
                        for name, ref in (s.get("references") or {}).items() if ref.get("value") is not None})
        if metrics:
            parent.log_metrics(metrics)
        for path in artifacts:
            parent.log_artifact(path)
        ids = [parent.run_id]
        for t in s["trials"]:
            with parent.child(f"trial {t['number']}", {**base, "trial": t["number"], "state": t["state"],
                                                      **tags}) as child:
                child.log_params({f"trial.{k}": v for k, v in t["params"].items()})
                curve = [Metric(f"eval/{metric}", float(v), now, int(step)) for step, v in t["curve"].items()]
                if t["state"] == "COMPLETE" and t.get("value") is not None:
                    curve.append(Metric(f"objective/{metric}", float(t["value"]), now, 0))
                if curve:
                    child.client.log_batch(child.run_id, metrics=curve)
            ids.append(child.run_id)
    return ids


@dataclasses.dataclass
class _Planned:
    """One run `rebuild` makes: where, from which files, with which tags, and how."""
    experiment: str
    name: str
    key: dict[str, str]  # the tags of the thing it stands for (kind, table / study, scale)
    artifacts: list[Path]
    tags: dict[str, str]
    log: Any  # tags -> [run id, ...] (the parent's first)


def _plan(folder: Path, source: str, root: str | Path | None, tmp: Path) -> list[_Planned]:
    """The runs of one results folder: each comparison table, claims.json, a sweep's summary.json."""
    planned: list[_Planned] = []
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    tables: dict[Path, Comparison] = {}
    sweep = None
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
        elif f.name == "summary.json" and isinstance(doc, dict) and SWEEP_KEYS <= set(doc):
            if doc["scale"] != folder.name:
                raise ValueError(f"{f}: scale {doc['scale']!r} in a folder for scale {folder.name!r}")
            sweep = doc
    table_files = set(tables) | {c.md_path for c in tables.values()}
    extras = [f for f in files if f not in table_files]
    base = {"source": "rebuild", "rebuild_from": source, "rebuild_commit": git_commit() or "unknown"}

    for c in tables.values():
        tags = {**base, "mlflow.source.name": c.provenance.get("command", "unknown"),
                "mlflow.source.git.commit": c.provenance.get("commit", "unknown")}
        planned.append(_Planned(c.paper, f"compare/{c.table}/{c.scale}",
                                 {"kind": "comparison", "table": c.table, "scale": c.scale},
                                 [p for p in (c.md_path, c.json_path, *extras) if p is not None], tags,
                                 lambda t, uri, c=c: [log_comparison(c, uri, extras, tags=t)]))
    if (claims_file := folder / "claims.json").is_file():
        doc = load_claims(claims_file)
        if doc["scale"] != folder.name:
            raise ValueError(f"{claims_file}: scale {doc['scale']!r} in a folder for scale {folder.name!r}")
        md = tmp / "claims.md"  # the claims' rows of the README's scorecard
        md.write_text(scorecard([claims_file], root))
        tags = {**base, "mlflow.source.name": doc.get("command", "unknown"),
                "mlflow.source.git.commit": doc.get("commit", "unknown")}
        planned.append(_Planned(doc["paper"], f"claims/{doc['scale']}", {"kind": "claims", "scale": doc["scale"]},
                                 [claims_file, md], tags,
                                 lambda t, uri, f=claims_file, md=md: [log_claims(f, uri, tags=t,
                                                                                  markdown=md.read_text())]))
    if sweep is not None:
        tags = {**base, "mlflow.source.name": sweep.get("command", "unknown"),
                "mlflow.source.git.commit": sweep.get("commit", "unknown")}
        planned.append(_Planned(sweep["paper"], f"sweep/{sweep['study']}",
                                 {"kind": "sweep", "study": sweep["study"], "scale": sweep["scale"]}, files, tags,
                                 lambda t, uri, s=sweep: _log_sweep(s, files, t, uri)))
    return planned


def rebuild(patterns: Iterable[str] = RESULTS, tracking_uri: str | None = None,
            root: str | Path | None = None,
            scales: Iterable[str] = COMMITTED_SCALES) -> list[tuple[str, str, str]]:
    """Re-create the MLflow runs of the committed results, so a fresh clone can browse them.

    For every results folder (:func:`results_dirs`): each comparison table (`<table>.json` as
    written by :func:`compare`) becomes run `compare/<table>/<scale>` as :func:`log_comparison`
    logs it (metrics reported/reproduced/delta per row, the table as its description, the table's
    .md and .json and the folder's other files: figures, claims.json, ...); `claims.json` becomes run
    `claims/<scale>` as :func:`log_claims` logs it, with the claims' scorecard rows as its
    description and claims.md; a sweep's `summary.json` (``results/sweeps/<scale>/``) becomes run
    `sweep/<study>` with one nested run per trial (:func:`_log_sweep`). Runs carry tags
    source=rebuild, rebuild_from=<folder>, rebuild_digest and, as mlflow.source.*, the command and
    commit that made the numbers (not those of the rebuild).

    One run per thing, and idempotent: a rebuilt run whose digest (its files and REBUILD_VERSION) is
    unchanged is kept; otherwise it is made anew. A comparison or claims run replaces every other
    run of its (paper, table, scale) or (paper, scale), a report stage's included: the newest load
    wins, and these runs hold nothing their files do not. A sweep's own run (logged by
    ``python -m shared.tune``, with its trials) is never replaced: where the store holds one for the
    study, the summary is not loaded (action ``skipped``). Rebuilt runs whose files are gone are
    deleted. Runs of the stages are never touched. Returns [(created|unchanged|deleted|skipped, run,
    run id)].
    """
    from mlflow import MlflowClient  # import here: ~1.5 s

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    actions: list[tuple[str, str, str]] = []
    for folder in results_dirs(patterns, root, scales):
        source = display_path(folder, root)
        with tempfile.TemporaryDirectory() as tmp:
            planned = _plan(folder, source, root, Path(tmp))
            # the folder's paper (papers/<paper>/results/...), where runs of files now gone may be
            paper = next((d.name for d in folder.parents if d.parent.name == "papers"), None)
            names = {e.experiment_id: e.name for name in sorted({p.experiment for p in planned} | {paper} - {None})
                     if (e := client.get_experiment_by_name(name)) is not None}
            existing = [r for r in search_all(client, list(names), "tags.source = 'rebuild'")
                        if r.data.tags.get("rebuild_from") == source]
            keep: set[str] = set()
            gone: set[str] = set()
            for p in planned:
                digest = _digest(p.name, p.artifacts)
                experiment = client.get_experiment_by_name(p.experiment)
                before = runs_like(client, experiment.experiment_id, p.key) if experiment is not None else []
                if p.key["kind"] == "sweep":  # the sweep's own run wins over its summary
                    own = [r for r in before if r.data.tags.get("source") != "rebuild"]
                    if own:
                        actions.append(("skipped", f"{p.experiment}/{p.name}", own[0].info.run_id))
                        continue
                    before = []  # rebuilt sweep runs and their trials go in the clean-up below
                same = [r for r in existing if r.info.run_name == p.name and r.info.status == "FINISHED"
                        and names.get(r.info.experiment_id) == p.experiment
                        and r.data.tags.get("rebuild_digest") == digest]
                if same:
                    ids = [same[0].info.run_id] + [r.info.run_id for r in existing
                                                   if r.data.tags.get("mlflow.parentRunId") == same[0].info.run_id]
                    actions.append(("unchanged", f"{p.experiment}/{p.name}", ids[0]))
                    if p.key["kind"] != "sweep":
                        replace_others(client, experiment.experiment_id, p.key, keep=ids)
                else:
                    ids = p.log({**p.tags, "rebuild_digest": digest}, uri)  # replaces `before` itself
                    actions.append(("created", f"{p.experiment}/{p.name}", ids[0]))
                keep.update(ids)
                for r in before:
                    if r.info.run_id not in keep and r.info.run_id not in gone:
                        gone.add(r.info.run_id)
                        actions.append(("deleted", f"{p.experiment}/{r.info.run_name}", r.info.run_id))
            # last, the rebuilt runs (and trials) nothing above kept: their files are gone or changed
            for r in existing:
                if r.info.run_id not in keep and r.info.run_id not in gone:
                    client.delete_run(r.info.run_id)
                    gone.add(r.info.run_id)
                    actions.append(("deleted", f"{names[r.info.experiment_id]}/{r.info.run_name}",
                                    r.info.run_id))
    return actions


def links(tracking_uri: str | None = None, base_url: str = "http://127.0.0.1:5000") -> list[tuple[str, str, str]]:
    """[(experiment, view, URL)] of the saved views in the store (:func:`shared.tracking.view_links`)."""
    from mlflow import MlflowClient

    return view_links(MlflowClient(tracking_uri=tracking_uri or default_tracking_uri()), base_url)


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
