"""One logging interface over MLflow: what every trainer and stage logs through.

Trainers take a `Logger`; pipelines pass `MLflowLogger` (one experiment per paper, one run per
configuration), unit tests pass `NullLogger` and assert on what it recorded. `MLflowLogger` talks
to `mlflow.MlflowClient` with explicit run ids, never the fluent active-run stack, so several
loggers and nested runs coexist and nothing leaks between them.

The local store is SQLite (`<repo>/mlflow/mlflow.db`, artifacts under `<repo>/mlflow/artifacts`):
MLflow 3 refuses the plain file store unless MLFLOW_ALLOW_FILE_STORE is set.

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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.config import REPO_ROOT, to_dict
from shared.provenance import git_commit, provenance

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


def local_sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite URI, None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class MLflowLogger(Logger):
    """One MLflow run (nested under `parent_run_id` when given) in experiment `experiment`."""

    def __init__(self, experiment: str, run_name: str | None = None, tags: Mapping | None = None,
                 tracking_uri: str | None = None, parent_run_id: str | None = None):
        from mlflow import MlflowClient  # import here: ~1.5 s, which NullLogger users never pay

        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        db = local_sqlite_path(self.tracking_uri)
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
    defaults = {"scale": suite.scale, "seed": suite.seed}
    if (REPO_ROOT / "papers" / experiment).is_dir():
        defaults = {"paper": experiment, **defaults}
    logger = make_logger(suite.tracking.backend, experiment, run_name, {**defaults, **tags},
                         suite.tracking.uri)
    resolved = to_dict(config)
    logger.log_params(resolved)
    logger.log_dict(resolved, "config.yaml")
    return logger
