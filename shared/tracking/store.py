"""The MLflow store from the committed results, and the UI on it.

:func:`rebuild` re-creates the comparison and claims runs of every committed results folder
(``papers/*/results/<scale>/``), so a fresh clone can browse them without running anything;
:func:`ui_command` is ``mlflow ui`` on the store. Both are behind ``python -m shared.tracking``
(``rebuild`` and ``ui``); mlflow/README.md describes the runs they make.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared.comparison import (RESULTS, Comparison, SchemaError, display_path, log_comparison,
                               results_dirs)
from shared.provenance import git_commit
from shared.scorecard import load_claims, scorecard
from shared.tracking import MLflowLogger, default_tracking_uri

# Bump when `rebuild` logs a run differently: every rebuilt run's digest changes and it is remade.
REBUILD_VERSION = "1"


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
    from mlflow import MlflowClient  # import here: ~1.5 s

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
