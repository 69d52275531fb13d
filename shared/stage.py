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
the resolved config beside the outputs and opens the MLflow run. :meth:`Stage.record` /
:meth:`Stage.write` make and write the one metrics-record schema (:mod:`shared.records`), with
provenance, and :meth:`Stage.skip` writes the one skip-marker shape.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator, TypeVar

import torch

from shared import checkpoint, config, records, tracking
from shared.device import pick_device
from shared.provenance import provenance

T = TypeVar("T")


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
        path = records.write(self.out / filename, record)
        if logger is not None:
            logger.log_dict(record.to_dict(), filename)
        return path

    def skip(self, reason: str, filename: str = "metrics.json") -> None:
        """Write the skip marker for a run this scale does not make; returns None for ``run``."""
        records.write(self.out / filename, records.MetricsRecord(
            paper=self.paper, stage=self.name, scale=self.scale, seed=self.trial, skipped=reason,
            provenance=self.provenance()))
        print(f"{self.name}: {reason}; wrote a skipped marker")
        return None

    @contextlib.contextmanager
    def tracked(self, resolved: dict, run_name: str | None = None, *, checkpointed: bool = True,
                **tags: Any) -> Iterator[tracking.Logger]:
        """The MLflow run of this stage, with ``resolved`` saved beside the outputs and logged.

        With ``checkpointed``, a persisted ``out/checkpoint.pt`` made with another resolved config is
        deleted first (so it is never resumed under other parameters).
        """
        resolved = {"scale": self.scale, "threads": self.suite.threads, **resolved}
        if checkpointed:
            checkpoint.fresh_start_if_config_changed(self.out, resolved)
        else:
            config.save_resolved(resolved, self.out / "config.yaml")
        if self.trial is not None:
            tags.setdefault("seed", self.trial)
        with tracking.stage_logger(self.suite, self.paper, run_name or self.name, resolved, stage=self.name,
                                   **tags) as log:
            yield log


def start(paper: str, name: str, *, suite_params: str | os.PathLike = config.REPO_ROOT / "params.yaml",
          out: str | os.PathLike, trial: int | None = None) -> Stage:
    """Resolve the suite settings for one stage run: threads set, device picked, RNG seeded.

    ``trial`` is the stage's seed index (``--seed`` of a DVC matrix); None for a stage without one,
    which is seeded with trial 0's seed.
    """
    suite = config.load_suite(suite_params)
    set_threads(suite.threads)
    seed = run_seed(suite.seed, trial or 0)
    checkpoint.seed_everything(seed)
    return Stage(paper=paper, name=name, suite=suite, out=Path(out), trial=trial, seed=seed,
                 device=pick_device(suite.device))
