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

The records behind a committed table are committed too, under ``<results>/<scale>/runs/``, laid out
as the paper's ``outputs/`` folder (``runs/pretrain/<run>/metrics.json``, ``runs/eval/<run>/table3.json``):
a report reads the union of a stage's folder and its copy there (:func:`gather`) and copies what it
read back into its own ``runs/`` (:meth:`Gathered.copy_to`), so a table and its tests can be
recomputed from the repository alone. ``python -m shared.records collect`` copies finished runs'
records there as they complete (:func:`collect`), for a long run assembled over several sessions.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from shared.config import SCALES
from shared.io import atomic_write, atomic_write_text

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


# ---------------------------------------------------------------- per-run records committed with the results

RUNS = "runs"  # <results>/<scale>/runs/: the records behind the folder's tables, laid out as outputs/


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


@dataclasses.dataclass
class Gathered:
    """The records a report reads from one stage folder and its committed copy (see :func:`gather`)."""
    name: str  # the file name searched for
    files: dict[str, Path]  # relative name -> the record read
    hidden: list[str]  # relative names of copies that a skip marker in the stage folder hides
    recursive: bool = True  # searched in sub-folders too

    def paths(self) -> list[Path]:
        return [self.files[k] for k in sorted(self.files)]

    def copy_to(self, to: str | os.PathLike) -> None:
        """Make ``to`` hold exactly these records under their relative names: copy the new or changed
        ones (atomically), and delete the hidden copies and any other file named like them there."""
        to = Path(to)
        for rel, path in sorted(self.files.items()):
            dest = to / rel
            if dest.resolve() != path.resolve() and not _same_bytes(path, dest):
                data = path.read_bytes()
                atomic_write(dest, lambda f, data=data: f.write(data))
        keep = {(to / rel).resolve() for rel in self.files}
        if to.is_dir():
            for stale in sorted(to.rglob(self.name) if self.recursive else [to / self.name]):
                if stale.is_file() and stale.resolve() not in keep:
                    _note(f"{stale}: not among the records read, removed")
                    stale.unlink()


def gather(folder: str | os.PathLike | None, mirror: str | os.PathLike | None, name: str = "metrics.json", *,
           exclude: str | os.PathLike | None = None, recursive: bool = True, hint: str = "",
           optional: bool = False) -> Gathered:
    """The records named ``name`` under a stage's ``folder`` and under ``mirror``, their committed
    copies (``<results>/<scale>/runs/<stage folder>``, same relative names); skip markers are passed over.

    Where both hold one name, ``folder``'s is read (a note says so when the two differ: the newer run
    wins), and a skip marker there hides the copy (the scale no longer makes that run). ``folder``
    None reads the copies alone (a report's ``--from-runs``); a ``folder`` that does not exist is read
    as empty, with a note, when ``mirror`` holds records or ``optional`` is set (a stage the scale may
    not make), else FileNotFoundError (with ``hint``: how to make it). Files under ``exclude`` (a
    report's own output folder) or ``mirror`` are not read from ``folder``. ``recursive=False`` looks at
    ``<folder>/<name>`` alone.
    """
    def scan(root: Path, skip: list[Path]) -> tuple[dict[str, Path], set[str]]:
        found, skipped = {}, set()
        paths = sorted(root.rglob(name)) if recursive else [p for p in [root / name] if p.is_file()]
        for path in paths:
            if any(path.resolve().is_relative_to(s) for s in skip):
                continue
            rel = path.relative_to(root).as_posix()
            if read(path).is_skip:
                skipped.add(rel)
            else:
                found[rel] = path
        return found, skipped

    mirror = Path(mirror) if mirror is not None else None
    copies = scan(mirror, [])[0] if mirror is not None and mirror.is_dir() else {}
    own: dict[str, Path] = {}
    skipped: set[str] = set()
    if folder is not None:
        folder = Path(folder)
        if folder.is_dir():
            skip = [Path(p).resolve() for p in (exclude, mirror) if p is not None]
            own, skipped = scan(folder, skip)
        elif copies or optional:
            _note(f"{folder} does not exist: reading the committed records in {mirror} alone, if any")
        else:
            raise FileNotFoundError(f"metrics folder {folder} does not exist"
                                    + (f" and {mirror} holds no records" if mirror is not None else "")
                                    + (f": {hint}" if hint else ""))
    differ = sorted(rel for rel in set(own) & set(copies) if not _same_bytes(own[rel], copies[rel]))
    if differ:
        _note(f"{len(differ)} record(s) differ between {folder} and {mirror}; reading {folder}'s: "
              + ", ".join(differ))
    hidden = sorted(set(copies) & skipped)
    if hidden:
        _note(f"{len(hidden)} committed record(s) in {mirror} are now skip markers in {folder}, not read: "
              + ", ".join(hidden))
    if only := sorted(set(copies) - set(own) - skipped):
        if folder is not None:
            _note(f"{len(only)} record(s) read from {mirror} alone (not in {folder})")
    files = {**{k: v for k, v in copies.items() if k not in skipped}, **own}
    return Gathered(name, files, hidden, recursive)


def is_record(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JSON file written by :func:`write` (it names :data:`SCHEMA`)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA


def collect(source: str | os.PathLike, dest: str | os.PathLike, scale: str) -> dict[str, list[str]]:
    """Copy every finished record of ``scale`` under ``source`` (a paper's ``outputs/``) to the same
    relative name under ``dest`` (``<results>/<scale>/runs``); skip markers and other scales are left.

    A record is written once, atomically, when its run finishes, so any record present is finished.
    A copy that differs from its source is replaced (the source is the newer run). Returns the
    relative names by action: new, updated, unchanged, other_scale.
    """
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise FileNotFoundError(f"records folder {source} does not exist: run the stages that write it first")
    done: dict[str, list[str]] = {"new": [], "updated": [], "unchanged": [], "other_scale": []}
    for path in sorted(source.rglob("*.json")):
        if path.resolve().is_relative_to(dest.resolve()) or not is_record(path):
            continue
        record = read(path)
        rel = path.relative_to(source).as_posix()
        if record.is_skip:
            continue
        if record.scale != scale:
            done["other_scale"].append(rel)
            continue
        target = dest / rel
        action = "unchanged" if _same_bytes(path, target) else "updated" if target.exists() else "new"
        if action != "unchanged":
            data = path.read_bytes()
            atomic_write(target, lambda f, data=data: f.write(data))
        done[action].append(rel)
    return done


def _scale_of(dest: Path) -> str | None:
    """The scale a runs folder belongs to: the name of its parent (``<results>/<scale>/runs``)."""
    return dest.resolve().parent.name if dest.resolve().parent.name in SCALES else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.records",
        description="collect: copy finished runs' metrics records into a results folder's runs/ (commit them)")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="copy finished records from a paper's outputs/ into <results>/<scale>/runs")
    c.add_argument("--from", dest="source", type=Path, required=True, help="a paper's outputs: papers/<paper>/outputs")
    c.add_argument("--to", dest="dest", type=Path, required=True, help="papers/<paper>/results/<scale>/runs")
    c.add_argument("--scale", default=None, help="the records' scale (default: the folder above --to)")
    c.add_argument("--every", type=float, default=None, metavar="SECONDS",
                   help="repeat every SECONDS until interrupted (while the runs are going)")
    args = parser.parse_args(argv)
    scale = args.scale or _scale_of(args.dest)
    if scale is None:
        print(f"error: --scale is needed: {args.dest} is not <results>/<scale>/runs", file=sys.stderr)
        return 2
    try:
        while True:
            done = collect(args.source, args.dest, scale)
            print(f"collect {args.source} -> {args.dest} ({scale}): {len(done['new'])} new, "
                  f"{len(done['updated'])} updated, {len(done['unchanged'])} unchanged"
                  + (f", {len(done['other_scale'])} of other scales left" if done["other_scale"] else ""),
                  flush=True)
            for action in ("new", "updated"):
                for rel in done[action]:
                    print(f"  {action}: {rel}")
            if args.every is None:
                return 0
            time.sleep(args.every)
    except KeyboardInterrupt:
        return 0
    except (FileNotFoundError, ValueError) as err:  # RecordError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
