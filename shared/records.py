"""The metrics record: one schema, one writer, one reader for every stage's ``metrics.json``.

A record is what one run of one stage measured, for one paper at one scale and seed::

    {"paper": "gan_simclr", "stage": "pretrain", "scale": "mini", "seed": 0,
     "table": "table1", "row": "lars_fake2500",          # where the number goes (optional)
     "metrics": {"linear_eval_acc": 36.2},               # the numbers a report reads
     ...stage-specific keys (curve, history, counts)...,
     "provenance": {"command": ..., "commit": ..., "dirty": ..., "threads": ...}}

A run the scale does not make writes a *skip marker* in the same place, the same shape with
``"skipped": "<why>"`` and no metrics, so a DVC matrix is the paper's at every scale and a report
can tell "not run" from "missing". Reports find records with :func:`find` and read them with
:func:`read`; nothing else parses these files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from shared.io import atomic_write_text

SCHEMA = "shared.records/1"
FIELDS = ("paper", "stage", "scale", "seed", "table", "row", "metrics", "skipped", "provenance")


class RecordError(ValueError):
    """A metrics file that is not a valid record; the message names the file and the key."""


@dataclasses.dataclass
class MetricsRecord:
    paper: str
    stage: str
    scale: str
    seed: int | None  # the trial index (0, 1, 2); None for a stage that has no seeds
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    table: str | None = None
    row: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # written at the top level
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: str | None = None  # the reason, for a skip marker

    def __post_init__(self):
        if clash := set(self.extra) & set(FIELDS):
            raise ValueError(f"extra keys {sorted(clash)} clash with the record's own fields")
        for key, value in self.metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"metric {key!r} must be a number, got {value!r}")

    @property
    def is_skip(self) -> bool:
        return self.skipped is not None

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, "paper": self.paper, "stage": self.stage, "scale": self.scale, "seed": self.seed}
        if self.skipped is not None:
            return {**d, "skipped": self.skipped, "provenance": self.provenance}
        if self.table is not None:
            d["table"] = self.table
        if self.row is not None:
            d["row"] = self.row
        return {**d, "metrics": self.metrics, **self.extra, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: Any, where: str = "<record>") -> MetricsRecord:
        if not isinstance(d, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(d).__name__}")
        for key, kinds in (("paper", str), ("stage", str), ("scale", str)):
            if not isinstance(d.get(key), kinds):
                raise RecordError(f"{where}: key '{key}': expected a string, got {d.get(key)!r}")
        if d.get("seed") is not None and (not isinstance(d["seed"], int) or isinstance(d["seed"], bool)):
            raise RecordError(f"{where}: key 'seed': expected an integer or null, got {d['seed']!r}")
        if "skipped" not in d and not isinstance(d.get("metrics"), dict):
            raise RecordError(f"{where}: key 'metrics': expected a mapping (or a 'skipped' marker)")
        extra = {k: v for k, v in d.items() if k not in FIELDS and k != "schema"}
        try:
            return cls(paper=d["paper"], stage=d["stage"], scale=d["scale"], seed=d.get("seed"),
                       metrics=dict(d.get("metrics") or {}), table=d.get("table"), row=d.get("row"),
                       extra=extra, provenance=dict(d.get("provenance") or {}), skipped=d.get("skipped"))
        except ValueError as err:
            raise RecordError(f"{where}: {err}") from err


def write(path: str | os.PathLike, record: MetricsRecord) -> Path:
    """Write ``record`` as JSON at ``path`` atomically (a killed write leaves the old file or none)."""
    path = Path(path)
    text = json.dumps(record.to_dict(), indent=2, allow_nan=True, default=_plain) + "\n"
    atomic_write_text(path, text)
    return path


def read(path: str | os.PathLike) -> MetricsRecord:
    """The record at ``path``; a missing, unreadable or malformed file raises naming it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics record not found: {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read metrics record: {err}") from err
    return MetricsRecord.from_dict(doc, str(path))


def find(folder: str | os.PathLike, name: str = "metrics.json", *, exclude: str | os.PathLike | None = None,
         skips: bool = False) -> list[Path]:
    """Records named ``name`` under ``folder`` (recursively), sorted; skip markers only if ``skips``.

    Files under ``exclude`` (a report's own output folder when it lies inside) are passed over.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"metrics folder {folder} does not exist: run the stages that write it first")
    skip_dir = Path(exclude).resolve() if exclude is not None else None
    found = []
    for path in sorted(folder.rglob(name)):
        if skip_dir is not None and path.resolve().is_relative_to(skip_dir):
            continue
        if skips or not read(path).is_skip:
            found.append(path)
    return found


def _plain(obj: Any) -> Any:
    """JSON for numpy scalars and paths that stages put into their extra keys."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
