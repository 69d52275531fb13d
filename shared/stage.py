"""The skeleton every DVC stage uses: scale, threads, device, run seed, tracked run, records.

A stage module keeps only its paper's logic::

    def run(args):
        stage = start("contrad", "train", suite_params=args.suite_params, out=args.out, trial=args.seed)
        cfg = stage.section(TrainStageConfig, args.params, "train")
        if reason := skipped_reason(cfg, ...):
            return stage.skip(reason)
        ...build data and models (the RNG is already seeded with stage.seed)...
        with stage.tracked(resolved, run_name=f"train/{name}/seed{args.seed}", row=name) as log:
            result = train_gan(..., out_dir=stage.out, logger=log, device=stage.device)
            stage.write(stage.record({"fid": result.best["fid"]}, table="table1", row=name, history=...))

:func:`start` loads the suite's ``params.yaml``, sets the CPU thread count from it (results depend
on it; the shell's ``OMP_NUM_THREADS`` does not decide), picks the device and seeds every RNG with
the run seed. :meth:`Stage.tracked` restarts a persisted checkpoint made with another config, saves
the resolved config beside the outputs and opens the MLflow run, continuing the stage's earlier run
when the stage resumes (``out/mlflow_run.json``). :meth:`Stage.record` /
:meth:`Stage.write` make and write the one metrics-record schema (:mod:`shared.records`), with
provenance, and :meth:`Stage.skip` writes the one skip-marker shape.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, TypeVar

import torch

from shared import checkpoint, config, distributed, records, tracking
from shared.device import pick_device
from shared.io import atomic_write_text
from shared.provenance import provenance

T = TypeVar("T")

RUN_RECORD = "mlflow_run.json"  # beside the checkpoint: which MLflow run the stage's outputs belong to


def run_seed(suite_seed: int, trial: int) -> int:
    """The seed of trial ``trial`` (0, 1, 2) under the suite's ``seed``.

    Loader orders are a function of (seed + epoch), so trials are kept 1000 epochs apart and suite
    seeds 1000 trials apart: no two runs of a study ever share a batch order.
    """
    if trial < 0 or trial >= 1000:
        raise ValueError(f"trial must be in [0, 1000), got {trial}")
    return suite_seed * 1_000_000 + trial * 1000


def set_threads(threads: int) -> None:
    """Run torch's CPU kernels on ``threads`` threads (and say so to child libraries via the env)."""
    if threads < 1:
        raise config.ConfigError(f"params.yaml key 'threads' must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for anything the stage spawns


@dataclasses.dataclass
class Stage:
    """One run of one stage: what :func:`start` resolved, and the helpers that use it."""
    paper: str
    name: str
    suite: config.SuiteConfig
    out: Path
    trial: int | None
    seed: int
    device: torch.device
    # What DVC reads of this run (`metrics:` / `plots:` of its stage). They lie outside `out`: DVC does
    # not allow a declared output inside an output folder. None outside DVC: nothing is written.
    metrics_file: Path | None = None  # the headline numbers, a flat {name: number} JSON
    plots_file: Path | None = None  # the run's curve, a JSON list of flat rows {step: ..., name: ...}

    @property
    def scale(self) -> str:
        return self.suite.scale

    def section(self, cls: type[T], params: str | os.PathLike, section: str) -> T:
        """The typed config of ``section`` of the paper's ``params`` at this stage's scale."""
        return config.load_section(cls, params, section, self.scale)

    def provenance(self) -> dict[str, Any]:
        return provenance(self.device)

    def record(self, metrics: dict[str, float], *, table: str | None = None, row: str | None = None,
               **extra: Any) -> records.MetricsRecord:
        """A metrics record of this run; ``extra`` keys (curves, counts) are stored beside the metrics."""
        return records.MetricsRecord(paper=self.paper, stage=self.name, scale=self.scale, seed=self.trial,
                                     metrics=metrics, table=table, row=row, extra=extra,
                                     provenance=self.provenance())

    def write(self, record: records.MetricsRecord, filename: str = "metrics.json",
              logger: tracking.Logger | None = None) -> Path:
        """Write ``record`` to ``out/filename`` atomically (and log it as an artifact if ``logger``)."""
        if not distributed.is_main():  # under torchrun, rank 0 writes every output
            return self.out / filename
        path = records.write(self.out / filename, record)
        if logger is not None:
            logger.log_dict(record.to_dict(), filename)
        return path

    def skip(self, reason: str, filename: str = "metrics.json") -> None:
        """Write the skip marker for a run this scale does not make; returns None for ``run``."""
        if not distributed.is_main():
            return None
        records.write(self.out / filename, records.MetricsRecord(
            paper=self.paper, stage=self.name, scale=self.scale, seed=self.trial, skipped=reason,
            provenance=self.provenance()))
        self.write_metrics({})  # DVC needs every declared file: an empty one has no numbers,
        self.write_plot("skipped", [])  # an empty curve no points
        print(f"{self.name}: {reason}; wrote a skipped marker")
        return None

    def write_metrics(self, metrics: dict[str, float]) -> Path | None:
        """The run's headline numbers as flat JSON at ``metrics_file``, for ``dvc metrics show / diff``."""
        if self.metrics_file is None or not distributed.is_main():
            return None
        if bad := [k for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]:
            raise ValueError(f"metrics {bad} are not numbers: {metrics}")
        atomic_write_text(self.metrics_file, json.dumps(_finite(metrics), indent=2, sort_keys=True) + "\n")
        return self.metrics_file

    def write_plot(self, name: str, history: list[dict[str, Any]], x: str = "step") -> Path | None:
        """The curve ``name`` against ``x`` from ``history`` (the rows holding both) as the DVC plot file
        ``plots_file``: a list of ``{x: ..., name: ...}`` rows, for ``dvc plots show / diff``. A run
        without that curve writes an empty list: DVC needs every declared file."""
        if self.plots_file is None or not distributed.is_main():
            return None
        rows = [_finite({x: row[x], name: row[name]}) for row in history if row.get(name) is not None]
        atomic_write_text(self.plots_file, json.dumps(rows, indent=1) + "\n")
        return self.plots_file

    @contextlib.contextmanager
    def tracked(self, resolved: dict, run_name: str | None = None, *, checkpointed: bool = True,
                **tags: Any) -> Iterator[tracking.Logger]:
        """The MLflow run of this stage, with ``resolved`` saved beside the outputs and logged.

        With ``checkpointed``, a persisted ``out/checkpoint.pt`` made with another resolved config is
        deleted first (so it is never resumed under other parameters).

        One run per stage instance: the run's id is kept in ``out/mlflow_run.json`` (written
        atomically, with a hash of ``resolved``), and the next start continues that run (MLflow
        status RUNNING again, then FINISHED) when the config is the same, the store still holds the
        run and the work continues: a checkpointed stage continues only from a checkpoint, since
        one that starts again at step 0 would draw its curves twice over the same steps, so it gets
        a new run. A run of this stage left RUNNING by a killed process (same experiment, run name
        and tags, ``out`` included) is marked KILLED.
        """
        if not distributed.is_main():  # under torchrun, rank 0 owns the config, the run record and the run
            yield tracking.NullLogger(run_name or self.name, tags)
            return
        # The run seed and device decide the numbers as much as the config does: a checkpoint made
        # under another suite seed or device is never resumed as this run's.
        resolved = {"scale": self.scale, "threads": self.suite.threads, "run_seed": self.seed,
                    "device": str(self.device), **resolved}
        if checkpointed:
            checkpoint.fresh_start_if_config_changed(self.out, resolved)
        else:
            config.save_resolved(resolved, self.out / "config.yaml")
        if self.trial is not None:
            tags.setdefault("seed", self.trial)
        record, digest = self.out / RUN_RECORD, config_digest(resolved)
        continues = not checkpointed or (self.out / "checkpoint.pt").exists()
        resume = recorded_run(record, digest) if continues else None
        with tracking.stage_logger(self.suite, self.paper, run_name or self.name, resolved, resume=resume,
                                   stage=self.name, out=_shown(self.out), **tags) as log:
            if isinstance(log, tracking.MLflowLogger):
                atomic_write_text(record, json.dumps({
                    "run_id": log.run_id, "experiment": log.experiment, "run_name": log.run_name,
                    "config_sha256": digest, "tracking_uri": log.tracking_uri}, indent=2) + "\n")
                if log.resumed:
                    print(f"{self.name}: continuing MLflow run {log.run_id} ({log.run_name})")
            yield log


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside (the ``out`` tag), else absolute."""
    path = Path(path).resolve()
    return path.relative_to(config.REPO_ROOT).as_posix() if path.is_relative_to(config.REPO_ROOT) else path.as_posix()


def config_digest(resolved: dict) -> str:
    """A hash of a resolved config: what ``out/mlflow_run.json`` compares."""
    text = json.dumps(config.to_dict(resolved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def recorded_run(record: Path, digest: str) -> str | None:
    """The run id in ``record`` if it was written for the config of ``digest``; None if there is no
    record, it is unreadable, or the config changed."""
    try:
        doc = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        print(f"note: {record} is unreadable ({err}): the stage starts a new MLflow run")
        return None
    if not isinstance(doc, dict) or doc.get("config_sha256") != digest or not isinstance(doc.get("run_id"), str):
        return None
    return doc["run_id"]


def start(paper: str, name: str, *, suite_params: str | os.PathLike = config.REPO_ROOT / "params.yaml",
          out: str | os.PathLike, trial: int | None = None, metrics: str | os.PathLike | None = None,
          plots: str | os.PathLike | None = None) -> Stage:
    """Resolve the suite settings for one stage run: threads set, device picked, RNG seeded.

    Launched by ``torchrun``, the process joins the process group here (:mod:`shared.distributed`),
    and only rank 0 then writes the stage's files and opens its MLflow run (the others get a
    :class:`shared.tracking.NullLogger` from :meth:`Stage.tracked`).

    ``trial`` is the stage's seed index (``--seed`` of a DVC matrix); None for a stage without one,
    which is seeded with trial 0's seed. ``metrics`` / ``plots`` (the stage's ``--metrics`` /
    ``--plots``): the files :meth:`Stage.write_metrics` and :meth:`Stage.write_plot` write.
    """
    suite = config.load_suite(suite_params)
    set_threads(suite.threads)
    seed = run_seed(suite.seed, trial or 0)
    checkpoint.seed_everything(seed)
    device = pick_device(suite.device)
    distributed.setup(device)  # under torchrun: join the process group (on GPU LOCAL_RANK); else nothing
    return Stage(paper=paper, name=name, suite=suite, out=Path(out), trial=trial, seed=seed,
                 device=device, metrics_file=None if metrics is None else Path(metrics),
                 plots_file=None if plots is None else Path(plots))


def write_seed_files(metrics_file: Path | None, plots_file: Path | None, ran: dict[int, dict], curve: str, x: str,
                     y: str) -> None:
    """The flat DVC files of a stage that runs several seeds in one process (``--seeds``), from the records of the
    seeds that ran (``{seed: record}``): ``--metrics`` gets ``seed<i>/<name>`` of each record's ``metrics``, the
    plot one row per ``x`` of the records' ``curve`` with a ``seed<i>`` column of ``y``; NaN and inf as null; rank 0
    only."""
    if not distributed.is_main():
        return
    if metrics_file is not None:
        metrics = {f"seed{seed}/{k}": v for seed, rec in ran.items() for k, v in rec["metrics"].items()}
        atomic_write_text(metrics_file, json.dumps(_finite(metrics), indent=2, sort_keys=True) + "\n")
    if plots_file is not None:
        rows: dict[Any, dict] = {}
        for seed, rec in ran.items():
            for point in rec[curve]:
                rows.setdefault(point[x], {x: point[x]})[f"seed{seed}"] = point[y]
        atomic_write_text(plots_file, json.dumps([_finite(rows[k]) for k in sorted(rows)], indent=1) + "\n")


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and inf as null: DVC reads strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
