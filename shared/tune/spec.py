"""The sweep file and what a stage offers a sweep: read, checked loudly, planned.

A sweep file (`papers/<paper>/sweep.yaml`) holds a :class:`SweepConfig`: ``stage`` names the stage as
``module:function``, a function (in the paper's stage module) returning a :class:`SweepStage`;
``space`` maps Optuna names to :class:`ParamSpec` (a dotted params key and its distribution);
``scales.<scale>`` is merged over the rest. :func:`load_plan` checks that every key of the space is
a parameter of the stage and that its params.yaml value lies inside the space (trial 0 measures it).
Errors name the file and the key. Nothing here imports Optuna, so a stage module may import
:class:`SweepStage` without paying for it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from shared import config

Report = Callable[[int, Mapping[str, float], bool], None]  # (step, metrics, last evaluation?)


@dataclasses.dataclass(frozen=True)
class SweepStage:
    """What a sweep needs of a pipeline stage.

    ``resolve(scale, overrides, args)`` returns the stage's resolved config in params.yaml's
    shape (``{"pretrain": {...}}``) with the params-shaped ``overrides`` merged in, raising
    :class:`shared.config.ConfigError` on a bad key; the space's defaults are read from it.
    ``run(suite, overrides, args, logger=, report=)`` trains once with ``overrides``, calls
    ``report(step, metrics, last)`` after every evaluation (it may raise ``optuna.TrialPruned``)
    and returns the final metrics. ``args_type`` is the dataclass of the sweep file's ``args``.
    """
    paper: str  # the MLflow experiment and the package under papers/
    stage: str
    args_type: type
    resolve: Callable[[str, Mapping, Any], dict]
    run: Callable[..., dict[str, float]]


# --------------------------------------------------------------------------- the sweep file

@dataclasses.dataclass
class ParamSpec:
    """One searched parameter: the params key it sets and its distribution."""
    key: str  # dotted params key, e.g. pretrain.optimizers.lars.lr
    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def __post_init__(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log needs low > 0 and no step")


@dataclasses.dataclass
class ObjectiveConfig:
    metric: str = "linear_test_acc"  # a key of the stage's evaluation metrics
    direction: Literal["maximize", "minimize"] = "maximize"


@dataclasses.dataclass
class SamplerConfig:
    name: Literal["tpe", "random"] = "tpe"
    n_startup_trials: int = 5  # random trials before TPE models the results
    seed: int = 0  # worker w of a run that finds k trials in the study uses seed + 1000 k + w


@dataclasses.dataclass
class PrunerConfig:
    name: Literal["median", "none"] = "median"
    n_startup_trials: int = 4  # finished trials before any pruning
    n_warmup_steps: int = 1  # a trial is never pruned before this step (the stage's step: epochs)
    interval_steps: int = 1


@dataclasses.dataclass
class SweepConfig:
    """A sweep file after its `scales.<scale>` block is merged over the rest."""
    name: str  # the study is <name>-<scale> unless --study names it
    stage: str  # module:function returning the SweepStage, e.g. papers.<paper>.<stage>:sweep_stage
    space: dict[str, ParamSpec]  # Optuna name (the official hyperparameter name) -> spec
    args: dict[str, Any] = dataclasses.field(default_factory=dict)  # the stage's fixed arguments
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    n_trials: int = 12
    enqueue_defaults: bool = True  # trial 0 = the params.yaml values of the space's keys
    budget: dict[str, Any] = dataclasses.field(default_factory=dict)  # params overrides for every run
    references: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> args
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    pruner: PrunerConfig = dataclasses.field(default_factory=PrunerConfig)

    def __post_init__(self):
        if self.n_trials < 0:
            raise ValueError(f"n_trials must be >= 0, got {self.n_trials}")
        if not self.space:
            raise ValueError("space is empty")


def load_sweep(path: str | os.PathLike, scale: str) -> SweepConfig:
    """Read a sweep file at ``scale``; errors name the file and the key."""
    raw = config.load_yaml(path)
    scales = raw.pop("scales", None) or {}
    if not isinstance(scales, Mapping):
        raise config.ConfigError(f"{path}: key 'scales' must be a mapping")
    if unknown := sorted(set(scales) - set(config.SCALES)):
        raise config.ConfigError(f"{path}: unknown key 'scales.{unknown[0]}' (allowed: {', '.join(config.SCALES)})")
    if scale not in config.SCALES:
        raise config.ConfigError(f"scale must be one of {config.SCALES}, got {scale!r}")
    over = scales.get(scale) or {}
    if not isinstance(over, Mapping):
        raise config.ConfigError(f"{path}: key 'scales.{scale}' must be a mapping")
    return config.build(SweepConfig, config.deep_merge(raw, over), source=str(path))


def nest(values: Mapping[str, Any]) -> dict:
    """{"a.b.c": 1} -> {"a": {"b": {"c": 1}}}."""
    out: dict = {}
    for key, value in values.items():
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def lookup(tree: Mapping, key: str) -> Any:
    """The value at dotted ``key`` of a nested mapping; KeyError names the missing part."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def get_stage(target: str, source: str) -> SweepStage:
    """The :class:`SweepStage` that ``module:function`` returns (``papers.<paper>.<stage>:sweep_stage``)."""
    module, _, func = target.partition(":")
    if not module or not func:
        raise config.ConfigError(f"{source}: key 'stage': expected module:function (a function returning "
                                 f"a SweepStage, e.g. papers.<paper>.<stage>:sweep_stage), got {target!r}")
    try:
        stage = getattr(importlib.import_module(module), func)()
    except (ImportError, AttributeError) as err:
        raise config.ConfigError(f"{source}: key 'stage': cannot load {target!r}: {err}") from err
    if not isinstance(stage, SweepStage):
        raise config.ConfigError(f"{source}: key 'stage': {target} returned {type(stage).__name__}, "
                                 "not a SweepStage")
    return stage

@dataclasses.dataclass
class Plan:
    """A checked sweep: its config at the scale, the stage, typed arguments and the defaults."""
    source: Path
    scale: str
    cfg: SweepConfig
    stage: SweepStage
    args: Any
    defaults: dict[str, Any]  # Optuna name -> the params.yaml value at the scale (trial 0)
    references: dict[str, Any]  # name -> typed arguments

    def overrides(self, values: Mapping[str, Any]) -> dict:
        """The params overrides of a trial: the budget, then the trial's values at their keys."""
        return config.deep_merge(self.cfg.budget, nest({self.cfg.space[n].key: v for n, v in values.items()}))


def load_plan(path: str | os.PathLike, scale: str) -> Plan:
    """Read and check a sweep file: every key of the space must be a parameter of the stage, its
    params.yaml value inside the space, and the budget and references must resolve."""
    path = Path(path)
    cfg = load_sweep(path, scale)
    stage = get_stage(cfg.stage, str(path))
    args = config.build(stage.args_type, cfg.args, source=str(path), prefix="args.")
    try:
        resolved = stage.resolve(scale, cfg.budget, args)
    except config.ConfigError as err:
        raise config.ConfigError(f"{path}: key 'budget' (scale {scale}) does not resolve: {err}") from err
    defaults = {}
    for name, spec in cfg.space.items():
        try:
            value = lookup(resolved, spec.key)
        except KeyError as err:
            raise config.ConfigError(f"{path}: key 'space.{name}.key': {spec.key!r} is not a parameter of "
                                     f"stage {cfg.stage} (no {err.args[0]!r})") from None
        inside = (value in spec.choices if spec.type == "categorical"
                  else isinstance(value, (int, float)) and spec.low <= value <= spec.high)
        if not inside:
            raise config.ConfigError(f"{path}: key 'space.{name}': the params value {value!r} of "
                                     f"{spec.key} is outside the space, so trial 0 could not measure it")
        defaults[name] = value
    refs = {}
    for name, over in cfg.references.items():
        refs[name] = config.build(stage.args_type, {**cfg.args, **over}, source=str(path),
                                  prefix=f"references.{name}.")
        try:
            stage.resolve(scale, cfg.budget, refs[name])
        except config.ConfigError as err:
            raise config.ConfigError(f"{path}: key 'references.{name}' does not resolve: {err}") from err
    return Plan(path, scale, cfg, stage, args, defaults, refs)
