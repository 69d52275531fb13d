"""One logging interface over MLflow: what every trainer and stage logs through.

Trainers take a `Logger`; pipelines pass `MLflowLogger` (one experiment per paper, one run per
configuration), unit tests pass `NullLogger` and assert on what it recorded. `MLflowLogger` talks
to `mlflow.MlflowClient` with explicit run ids, never the fluent active-run stack, so several
loggers and nested runs coexist and nothing leaks between them.

The local store is SQLite (`<repo>/mlflow/mlflow.db`, artifacts under `<repo>/mlflow/artifacts`):
MLflow 3 refuses the plain file store unless MLFLOW_ALLOW_FILE_STORE is set.

One run per thing: a run can be reopened (``resume``: a run id, or :data:`SAME_TAGS`), a stage's
run (:func:`stage_logger`) ends as KILLED any run of the same stage that a killed process left
RUNNING, and a snapshot run (a comparison table, a claims file) replaces the older ones
(:func:`replace_others`).

What the MLflow UI shows first: MLflow 3's UI has two modes, switched in its sidebar: "GenAI" (its
default: traces, evaluations, prompts) and "Model training" (the classic run table, charts,
compare). The suite's experiments are model training: each is tagged ``mlflow.experimentKind =
custom_model_development`` (the UI's own value for that kind; the 3.17 UI takes its mode from the
sidebar switch, not from this tag) when created, with a description
(``mlflow.note.content``, shown above its runs: for a paper package the title and citation from
``papers/<experiment>/README.md``, then what its runs are). The result runs' key numbers are
columns of two saved views on the Runs tab (:func:`update_views`), and the links of
:func:`view_links` carry ``workflowType=machine_learning``, which opens the UI in that mode.

The reported-vs-reproduced tables are :mod:`shared.comparison`; the store rebuilt from the
committed results and the UI are :mod:`shared.tracking.store`. The command line
(:mod:`shared.tracking.__main__`):

     python -m shared.tracking compare --reported papers/X/reported.yaml --metrics 'glob'
         --table table1 --scale mini --out DIR [--log]
     python -m shared.tracking rebuild [--results 'papers/*/results']   the committed results -> the store
     python -m shared.tracking ui [--port 5000]                           the MLflow UI on the store
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.config import REPO_ROOT, to_dict
from shared.provenance import git_commit, provenance

BACKENDS = ("mlflow", "none")
# MLflow's limits (mlflow.utils.validation): key length, param value length, params per batch.
MAX_KEY_LEN, MAX_PARAM_VAL_LEN, MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH = 250, 6000, 100, 1000
PARAM_KEY = re.compile(r"[\w\-. :/]+")  # the characters MLflow accepts in a param key
# resume=SAME_TAGS: reopen the newest run with this run name and these tags (not one made by rebuild)
SAME_TAGS = "same-tags"


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
        if not PARAM_KEY.fullmatch(name):  # MLflow refuses the run's params otherwise, after the stage started
            raise ValueError(f"param key {name!r} has characters MLflow refuses: use letters, digits, "
                             f"_ - . / : and spaces")
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


# ---------------------------------------------------------------- run identity: one run per thing
# A stage run, a sweep's parent run, a comparison or claims run each stands for one thing (a stage
# instance, a study, a table at a scale). These take an MlflowClient: they find the runs that stand for
# the same thing (experiment, run name, tags), end the ones a killed process left RUNNING, and delete
# the ones a newer snapshot replaces.

# Tags every MLflowLogger run carries, so the next start can tell a live run from an abandoned one.
HOST_TAG, PID_TAG = "host", "pid"
KILLED_REASON_TAG = "killed_reason"


def search_all(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """Every active run of these experiments matching ``filter_string`` (all pages)."""
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _literal(value: str) -> str | None:
    """``value`` as a search-filter string literal; None if it holds both kinds of quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def runs_like(client: Any, experiment_id: str, tags: Mapping[str, Any], run_name: str | None = None,
              status: str | None = None) -> list[Any]:
    """Active runs of the experiment whose tags include ``tags`` (and named ``run_name``, with
    ``status``), newest first. The filter narrows the search on the server; the match is exact here."""
    want = {str(k): str(v) for k, v in tags.items()}
    clauses = [f"tags.`{k}` = {lit}" for k, v in want.items() if "`" not in k and (lit := _literal(v))]
    if run_name is not None and (lit := _literal(run_name)):
        clauses.append(f"attributes.run_name = {lit}")
    if status is not None:
        clauses.append(f"attributes.status = '{status}'")
    found = [r for r in search_all(client, [experiment_id], " and ".join(clauses))
             if all(r.data.tags.get(k) == v for k, v in want.items())
             and (run_name is None or r.info.run_name == run_name)
             and (status is None or r.info.status == status)]
    return sorted(found, key=lambda r: r.info.start_time or 0, reverse=True)


def process_tags() -> dict[str, str]:
    """Who holds a run open: this machine and this process."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def held_elsewhere(run: Any) -> str | None:
    """Why ``run`` (RUNNING) may still be alive, or None if its process is certainly gone.

    A run opened by this process, or by a process of this machine that no longer exists, is
    abandoned; a run without the host tag was made before runs carried it and is taken as
    abandoned too. A run of another machine, or of a live process here, may be alive.
    """
    tags = run.data.tags
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host is None:
        return None
    if host != socket.gethostname():
        return f"it was opened on {host}"
    if pid and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
        return f"process {pid} on this machine is still running"
    return None


def end_abandoned_runs(client: Any, experiment_id: str, run_name: str, tags: Mapping[str, Any],
                       successor: str) -> list[str]:
    """Mark KILLED every run named ``run_name`` with ``tags`` still marked RUNNING, other than
    ``successor`` (the run now open for the same thing), whose process is gone.

    A process killed by SIGKILL (or a lost machine) never closes its run, so it would stay RUNNING
    for ever. Each one ended gets the tag ``killed_reason``; a run that may be alive is left as it
    is, with a note on stdout. Returns the ids of the runs ended.
    """
    ended = []
    for run in runs_like(client, experiment_id, tags, run_name, status="RUNNING"):
        if run.info.run_id == successor:
            continue
        if (why := held_elsewhere(run)) is not None:
            print(f"note: run {run.info.run_id} ({run_name}) is still marked RUNNING and {why}: left as it is")
            continue
        holder = f"process {run.data.tags.get(PID_TAG, '?')} on {run.data.tags.get(HOST_TAG, '?')}"
        client.set_tag(run.info.run_id, KILLED_REASON_TAG,
                       f"{holder} ended without closing this run (killed, e.g. SIGKILL); the same "
                       f"{run_name} started again as run {successor}")
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    if ended:
        print(f"marked {len(ended)} abandoned RUNNING run(s) of {run_name} as KILLED: {', '.join(ended)}")
    return ended


def replace_others(client: Any, experiment_id: str, key: Mapping[str, Any], keep: Iterable[str]) -> list[Any]:
    """Delete every active run of the experiment whose tags include ``key``, except ``keep``.

    For runs that are snapshots of files (a comparison table, a claims file): the newest one
    replaces the others. Deleted runs stay in the database, hidden, until ``mlflow gc``.
    Returns the runs deleted.
    """
    keep = set(keep)
    gone = [r for r in runs_like(client, experiment_id, key) if r.info.run_id not in keep]
    for run in gone:
        client.delete_run(run.info.run_id)
    return gone


# ---------------------------------------------------------------- what the MLflow UI shows first
# Descriptions, the experiment kind and saved views (see the module docstring). MLflow 3.17 keeps a
# saved view of the Runs tab ("Views" menu) as the experiment tag `mlflow.sharedViewState.<id>`: a
# JSON envelope {name, createdAt, updatedAt, state}, `state` the Runs tab's state as JSON (its search
# facets and UI state: searchFilter, selectedColumns, ...; what is absent keeps its default), as read
# by the UI's own code in mlflow/server/js (MLflow 3.17.2). The link to a view is
# #/experiments/<id>/runs?viewStateShareKey=<id>.

NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description in the UI (Markdown)
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"  # the "Model training" kind
VIEW_PREFIX = "mlflow.sharedViewState."  # MLflow 3.17's saved views of the Runs tab
VIEWS = {"comparisons": ("Reported vs reproduced", "comparison"), "claims": ("Claims", "claims")}
MAX_NOTE = 8000  # MLflow's limit on a run tag's value; longer notes are cut, pointing at the artifact
MAX_VIEW = 20000  # MLflow's limit on an experiment tag's value (and the UI's on a saved view)


def note(markdown: str, artifact: str) -> str:
    """A run description of at most MAX_NOTE characters; a longer one is cut at a line and says
    where the whole text is."""
    if len(markdown) <= MAX_NOTE:
        return markdown
    tail = f"\n\n... (cut at MLflow's {MAX_NOTE}-character limit: the whole text is the artifact `{artifact}`)\n"
    return markdown[: markdown.rfind("\n", 0, MAX_NOTE - len(tail))] + tail


def experiment_description(name: str, root: str | Path | None = None) -> str:
    """The experiment's description: for a paper package (``papers/<name>/README.md``) its title
    and citation (the README's first two paragraphs), then what the runs are and where to look."""
    readme = Path(root or REPO_ROOT) / "papers" / name / "README.md"
    head = [f"Runs of the suite's `{name}` stages (the top-level `dvc.yaml`, `shared/`)."]
    if readme.is_file():
        paragraphs = [p.strip() for p in readme.read_text().split("\n\n") if p.strip()]
        title = paragraphs[0].lstrip("#").strip() if paragraphs else name
        head = [f"**{title}**"]
        if len(paragraphs) > 1 and not paragraphs[1].startswith("#"):
            head.append(" ".join(paragraphs[1].split()))
        head.append(f"Package `papers/{name}`: how to run it, its hyperparameters and deviations are in "
                    f"`papers/{name}/README.md`.")
    return "\n\n".join(head + [
        "Runs: one per stage configuration (tags `stage`, `scale`, `seed`, and `table` / `row` where it "
        "makes a table cell); `compare/<table>/<scale>` (`tags.kind = \"comparison\"`): reported vs "
        "reproduced, the table in its description; `claims/<scale>` (`tags.kind = \"claims\"`): the "
        "verdicts as tags `verdict/<id>`; `sweep/<study>` (`tags.kind = \"sweep\"`): an Optuna study, "
        "its trials nested under it.",
        "Use the sidebar's **Model training** mode, and on the Runs tab the saved views "
        "**Reported vs reproduced** and **Claims** (Views menu) for the key numbers as columns."])


def describe_experiment(client: Any, experiment: Any) -> None:
    """Give an experiment its description and the model-training kind, where it has none yet (a
    description edited in the UI is kept)."""
    tags = experiment.tags or {}
    if NOTE_TAG not in tags:
        _set_missing_tag(client, experiment.experiment_id, NOTE_TAG, experiment_description(experiment.name))
    if KIND_TAG not in tags:
        _set_missing_tag(client, experiment.experiment_id, KIND_TAG, TRAINING_KIND)


def _set_missing_tag(client: Any, experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag that was missing when read; a process that set it in between wins (stages
    started together race here: SQLite refuses the second insert of the same key)."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_experiment_tag(experiment_id, key, value)
    except MlflowException:
        if key not in (client.get_experiment(experiment_id).tags or {}):
            raise


def _natural(text: str) -> list:
    """Sort key that puts fake2500 before fake10000."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _col(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's column key (MLflow's makeCanonicalSortKey)


def _by_id(keys: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """``<prefix>/<id>`` keys grouped by id (natural order), then in ``prefixes`` order."""
    ids = sorted({k.split("/", 1)[1] for k in keys if "/" in k}, key=_natural)
    return [f"{p}/{i}" for i in ids for p in prefixes if f"{p}/{i}" in keys]


def comparison_columns(runs: list[Any]) -> list[str]:
    """Table and scale, then reported / reproduced / delta of every row that ran in some table."""
    keys = {k for r in runs for k in r.data.metrics}
    ran = {k.split("/", 1)[1] for k in keys if k.startswith("reproduced/")}
    metrics = [k for k in _by_id(keys, ("reported", "reproduced", "delta")) if k.split("/", 1)[1] in ran]
    return [_col("tags", "table"), _col("tags", "scale"), *(_col("metrics", k) for k in metrics)]


def claims_columns(runs: list[Any]) -> list[str]:
    """Scale, then per claim its verdict and its numbers (difference, combined std, ...)."""
    verdicts = {k for r in runs for k in r.data.tags if k.startswith("verdict/")}
    metrics = {k for r in runs for k in r.data.metrics}
    columns = [_col("tags", "scale")]
    for claim in sorted({k.split("/", 1)[1] for k in verdicts | metrics if "/" in k}, key=_natural):
        columns += [_col("tags", k) for k in sorted(verdicts) if k == f"verdict/{claim}"]
        columns += [_col("metrics", k) for k in sorted(metrics) if k.split("/", 1)[1] == claim]
    return columns


def _view(name: str, kind: str, columns: list[str], created: int) -> str:
    # the Runs tab's state: a search facet and the UI state's columns; the rest keeps its defaults
    state = {"searchFilter": f"tags.kind = '{kind}'", "selectedColumns": columns}
    envelope = {"name": name, "createdAt": created, "updatedAt": int(time.time() * 1000),
                "state": json.dumps(state)}
    return json.dumps(envelope)


def update_views(client: Any, experiment_id: str) -> None:
    """(Re)write the experiment's saved views from its comparison and claims runs; a view whose
    columns are unchanged is left as it is."""
    tags = client.get_experiment(experiment_id).tags or {}
    for view_id, (name, kind) in VIEWS.items():
        runs = runs_like(client, experiment_id, {"kind": kind})
        if not runs:
            continue
        columns = comparison_columns(runs) if kind == "comparison" else claims_columns(runs)
        key, created = VIEW_PREFIX + view_id, int(time.time() * 1000)
        if key in tags:
            try:
                old = json.loads(tags[key])
                if json.loads(old["state"]).get("selectedColumns") == columns:
                    continue
                created = int(old["createdAt"])
            except (ValueError, KeyError, TypeError):
                pass  # not ours or damaged: rewrite it
        value = _view(name, kind, columns, created)
        while len(value) > MAX_VIEW and len(columns) > 2:  # keep what fits, first columns first
            columns = columns[:-1]
            value = _view(name, kind, columns, created)
        client.set_experiment_tag(experiment_id, key, value)


def view_links(client: Any, base_url: str) -> list[tuple[str, str, str]]:
    """[(experiment, view name, URL)] of every saved view of the suite in the store, for the UI
    at ``base_url``; the URLs open the UI in its model-training mode."""
    links = []
    for experiment in client.search_experiments():
        for view_id, (name, _) in VIEWS.items():
            if VIEW_PREFIX + view_id in (experiment.tags or {}):
                links.append((experiment.name, name, f"{base_url.rstrip('/')}/#/experiments/"
                              f"{experiment.experiment_id}/runs?viewStateShareKey={view_id}"
                              "&workflowType=machine_learning"))
    return links


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


def local_sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite URI, None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class MLflowLogger(Logger):
    """One MLflow run (nested under `parent_run_id` when given) in experiment `experiment`.

    ``resume`` reopens a run instead of creating one: a run id (reopened if the store holds it,
    active, in this experiment), or :data:`SAME_TAGS` (the newest run of this experiment named
    ``run_name`` whose tags include ``tags``, not one made by ``rebuild``). A reopened run is set
    RUNNING again, its tags updated (the ``resumes`` tag counts the reopenings) and ``resumed`` is
    True; with nothing to reopen a new run is created. ``end_abandoned`` then marks KILLED the other
    runs of the same name and tags that a killed process left RUNNING
    (:func:`end_abandoned_runs`). :meth:`close` sets FINISHED (or the status given).
    """

    def __init__(self, experiment: str, run_name: str | None = None, tags: Mapping | None = None,
                 tracking_uri: str | None = None, parent_run_id: str | None = None, *,
                 resume: str | None = None, end_abandoned: bool = False):
        from mlflow import MlflowClient  # import here: ~1.5 s, which NullLogger users never pay

        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        db = local_sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment_id(experiment, db)
        given = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags = {"mlflow.source.name": provenance()["command"], **process_tags()}
        if (commit := git_commit()) is not None:
            all_tags["mlflow.source.git.commit"] = commit
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags.update(given)
        run = self._reopenable(resume, run_name, given) if resume is not None else None
        self.resumed = run is not None
        if run is None:
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        self.run_id: str = run.info.run_id
        self.run_name: str = run.info.run_name
        if self.resumed:
            self.client.update_run(self.run_id, status="RUNNING")
            self.set_tags({**all_tags, "resumes": int(run.data.tags.get("resumes", "0")) + 1})
        self.closed = False
        self.ended: list[str] = []  # runs of the same thing found abandoned and marked KILLED
        if end_abandoned:
            self.ended = end_abandoned_runs(self.client, self.experiment_id, self.run_name, given, self.run_id)

    def _reopenable(self, resume: str, run_name: str | None, tags: dict[str, str]) -> Any | None:
        """The run ``resume`` names, if it can be reopened here; None otherwise."""
        from mlflow.exceptions import MlflowException

        if resume == SAME_TAGS:
            found = [r for r in runs_like(self.client, self.experiment_id, tags, run_name)
                     if r.data.tags.get("source") != "rebuild"]
            return found[0] if found else None
        try:
            run = self.client.get_run(resume)
        except MlflowException:  # not in this store (another store, or purged)
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return None
        return run

    def _experiment_id(self, name: str, db: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None  # a tracking server chooses its own artifact root
            if db is not None:
                location = (db.parent / "artifacts" / re.sub(r"[^\w.-]", "_", name)).resolve().as_uri()
            try:
                self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process created it between the two calls
                pass
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise MlflowException(f"cannot create or find experiment {name!r} in {self.tracking_uri}")
        describe_experiment(self.client, found)  # description and kind, where missing
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
                tags: Mapping | None = None, tracking_uri: str | None = None, **run: Any) -> Logger:
    """A logger of ``backend``; ``run`` (``resume``, ``end_abandoned``) goes to :class:`MLflowLogger`
    and means nothing to the NullLogger."""
    if backend == "mlflow":
        return MLflowLogger(experiment, run_name, tags, tracking_uri, **run)
    if backend == "none":
        return NullLogger(run_name, tags)
    raise ValueError(f"unknown logging backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def delete_rebuilt(logger: Logger, tags: Mapping[str, Any]) -> list[str]:
    """Delete the runs ``rebuild`` loaded from committed files (tag ``source=rebuild``) whose tags
    include ``tags``, in the logger's experiment: the pipeline's own run now stands for that thing.
    Returns their ids; nothing to do for a NullLogger."""
    if not isinstance(logger, MLflowLogger):
        return []
    gone = replace_others(logger.client, logger.experiment_id, {**tags, "source": "rebuild"}, keep=[logger.run_id])
    return [r.info.run_id for r in gone]


def stage_logger(suite: Any, experiment: str, run_name: str, config: Any, *, resume: str | None = None,
                 **tags: Any) -> Logger:
    """A run for one pipeline stage, set up the same way everywhere.

    ``suite`` is the top-level :class:`shared.config.SuiteConfig`: its tracking
    settings choose the backend and store, its scale and seed become tags. The
    stage's resolved ``config`` (a dataclass or mapping) is logged as params and
    as ``config.yaml``. Where the experiment is a paper package (``papers/<experiment>``),
    the run is tagged ``paper=<experiment>`` too, so the UI can filter across experiments;
    ``tags`` win over all of these (a stage with its own trial seed passes ``seed=...``).

    A stage run stands for one thing, named by ``run_name`` and these tags: ``resume`` (a run id,
    or :data:`SAME_TAGS`) continues an earlier run of it (see :class:`MLflowLogger`), and any other
    run of it still marked RUNNING by a process that is gone is marked KILLED.
    """
    defaults = {"scale": suite.scale, "seed": suite.seed}
    if (REPO_ROOT / "papers" / experiment).is_dir():
        defaults = {"paper": experiment, **defaults}
    logger = make_logger(suite.tracking.backend, experiment, run_name, {**defaults, **tags},
                         suite.tracking.uri, resume=resume, end_abandoned=True)
    resolved = to_dict(config)
    logger.log_params(resolved)
    logger.log_dict(resolved, "config.yaml")
    return logger
