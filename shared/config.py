"""Typed configs filled from ``params.yaml`` files.

Every stage declares a dataclass whose defaults are the paper's numbers. A params
file holds one section per stage plus an optional ``scales`` block whose
``smoke`` / ``mini`` / ``paper`` entries override the section at that scale::

    pretrain:
      epochs: 600
    scales:
      mini:
        pretrain: {epochs: 20}

``load_section(cls, path, "pretrain", scale)`` merges the two and builds ``cls``.
An unknown key or a value of the wrong type raises :class:`ConfigError` naming the
file and the dotted key; nothing is coerced silently except int -> float and
list -> tuple.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml

from shared.io import atomic_write_text

SCALES = ("smoke", "mini", "paper")
# Scales whose results the repository commits (papers/*/results/<scale>/); smoke results stay local
# (ignored by git), so a smoke run never changes the committed tree or the scorecard.
COMMITTED_SCALES = ("mini", "paper")
REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class ConfigError(ValueError):
    """A params file is missing, malformed, or holds an unknown key or a wrong type."""


# --------------------------------------------------------------------------- files

def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, the rest replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def section_at_scale(raw: Mapping, section: str, scale: str, source: str) -> dict:
    """The ``section`` of a params mapping with its ``scales.<scale>.<section>`` overrides applied."""
    if scale not in SCALES:
        raise ConfigError(f"{source}: key 'scale' must be one of {SCALES}, got {scale!r}")
    scales = raw.get("scales") or {}
    if not isinstance(scales, Mapping):
        raise ConfigError(f"{source}: key 'scales' must be a mapping")
    unknown = set(scales) - set(SCALES)
    if unknown:
        raise ConfigError(f"{source}: unknown key 'scales.{sorted(unknown)[0]}' (allowed: {', '.join(SCALES)})")
    base = raw.get(section) or {}
    over = (scales.get(scale) or {}).get(section) or {}
    for name, part in ((section, base), (f"scales.{scale}.{section}", over)):
        if not isinstance(part, Mapping):
            raise ConfigError(f"{source}: key '{name}' must be a mapping")
    return deep_merge(base, over)


# --------------------------------------------------------------------------- typing

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (tuples and nested dataclasses built)."""
    def fail() -> typing.NoReturn:
        raise ConfigError(
            f"{source}: key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            fail()
        return build(tp, value, source=source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, source)
            except ConfigError:
                continue
        fail()
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{source}: key '{key}' expects {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            fail()
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            fail()
        kt, vt = args or (Any, Any)
        return {_convert(k, kt, key, source): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"config field '{key}' has an unsupported annotation {tp!r}")


def build(cls: type[T], data: Mapping, *, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(fields))})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}", source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ range checks
        raise ConfigError(f"{source}: section '{prefix.rstrip('.') or cls.__name__}': {err}") from err


def load_section(cls: type[T], path: str | os.PathLike, section: str, scale: str) -> T:
    """Build ``cls`` from ``section`` of the params file at ``path``, at ``scale``."""
    raw = load_yaml(path)
    return build(cls, section_at_scale(raw, section, scale, str(path)), source=str(path), prefix=f"{section}.")


def to_dict(cfg: Any) -> Any:
    """A plain, YAML-safe view of a (nested) config: dataclasses -> dicts, tuples -> lists."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def save_resolved(cfg: Any, path: str | os.PathLike) -> None:
    """Save the resolved config (``to_dict``) as YAML beside a stage's outputs."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- seeds of a paper's runs

@dataclasses.dataclass
class RunsConfig:
    """``runs`` of a paper's params.yaml: how many seeds (trials 0 .. n_seeds - 1) every run gets at a scale.

    A DVC matrix lists the paper's seeds at every scale; a stage whose seed the scale does not run writes a
    skip marker with :meth:`not_run`'s reason.
    """
    n_seeds: int = 3  # every run a claim depends on, at every scale but smoke

    def __post_init__(self):
        if self.n_seeds < 1:
            raise ValueError(f"runs.n_seeds must be >= 1, got {self.n_seeds}")

    def not_run(self, seed: int, scale: str) -> str | None:
        """Why ``seed`` is not run at ``scale`` (the stage then writes a skip marker), or None."""
        return None if seed < self.n_seeds else f"seed {seed} is not run at scale {scale} (runs.n_seeds={self.n_seeds})"


# --------------------------------------------------------------------------- suite

@dataclasses.dataclass
class DataConfig:
    """Where datasets come from (``data`` in the top-level params.yaml)."""
    # Explicit per-dataset paths (a file, a folder, or a data root); null -> REPRO_DATA_DIR -> download.
    paths: dict[str, str | None] = dataclasses.field(
        default_factory=lambda: {"cifar10": None, "mnist": None, "omniglot": None, "tinyimagenet100": None})
    download_dir: str | None = None

    def __post_init__(self):
        unknown = set(self.paths) - {"cifar10", "mnist", "omniglot", "tinyimagenet100"}
        if unknown:
            raise ValueError(f"unknown dataset in paths: {sorted(unknown)} "
                             f"(known: cifar10, mnist, omniglot, tinyimagenet100)")


@dataclasses.dataclass
class TrackingConfig:
    backend: Literal["mlflow", "none"] = "mlflow"
    uri: str | None = None  # null: the local store under mlflow/ (or $MLFLOW_TRACKING_URI)


@dataclasses.dataclass
class SuiteConfig:
    """The top-level params.yaml: the scale switch and suite-wide settings."""
    scale: Literal["smoke", "mini", "paper"] = "mini"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU threads every stage runs with (torch.set_num_threads), whatever the shell exports: results
    # depend on it (float reductions split differently), so it is a parameter, recorded with them.
    threads: int = 1
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)


SUITE_KEYS = ("scale", "seed", "device", "threads", "data", "tracking")
STAGE_SECTIONS = ("prepare", "extractor", "scales")  # read by the stages of the top-level dvc.yaml


def load_suite(path: str | os.PathLike = REPO_ROOT / "params.yaml") -> SuiteConfig:
    """The suite-wide settings of the top-level params.yaml (its other sections belong to stages)."""
    raw = load_yaml(path)
    unknown = [k for k in raw if k not in SUITE_KEYS + STAGE_SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (allowed: {', '.join(SUITE_KEYS + STAGE_SECTIONS)})")
    return build(SuiteConfig, {k: raw[k] for k in SUITE_KEYS if k in raw}, source=str(path))
