"""Optuna studies over a stage's parameters, trials logged to MLflow.

    python -m shared.tune papers/gan_simclr/sweep.yaml [--scale mini] [--n-trials N]
        [--workers N] [--storage URL] [--study NAME] [--out DIR]

A sweep file (`papers/<paper>/sweep.yaml`) names a registered stage (:data:`STAGES`), the
stage's fixed arguments, a search space of dotted params keys (`pretrain.optimizers.lars.lr`),
the objective (a metric the stage evaluates along the way), the trial budget (params overrides,
per scale under `scales:`), the sampler and the pruner. A trial runs the stage in this process
with its values and the budget merged over the paper's params.yaml, reports every evaluation
to Optuna, and is pruned on them (median rule); a trial whose loss diverges is pruned too.
Trial 0 is the params.yaml values (enqueued once), so the paper's defaults are measured at the
same budget; `references` (another optimiser, say) are single runs at that budget, recorded
beside the study, never as trials.

Storage is any Optuna RDB URL (default: SQLite `mlflow/optuna.db`). `--workers N` starts N
processes on one study; `n_trials` is the study's total of finished (complete or pruned)
trials, and the command splits what is left between its workers so the total is exact. A
killed worker's trial goes stale (heartbeat) and is retried once by the next run of the
command. Several commands (machines) may share a study through one server URL: each stops
when the study reaches `n_trials`, so the total can then exceed it by the trials in flight.

Outputs in `--out` (default `papers/<paper>/results/sweeps/<scale>`): `best_params.yaml`
(params.yaml's shape: `python -m papers.<paper>.<stage> ... --overrides best_params.yaml`, or
`dvc exp run -S` per key, or paste it), `summary.md` / `summary.json`, and PNG plots of the
optimisation history, the evaluation curves and the parameter importances.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import optuna
import yaml
from optuna.trial import TrialState

from shared import config, tracking
from shared.io import atomic_write_text
from shared.trainers.ssl import NonFiniteLossError

REPO_ROOT = config.REPO_ROOT
DEFAULT_STORAGE = f"sqlite:///{(REPO_ROOT / 'mlflow' / 'optuna.db').as_posix()}"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Stages a sweep can tune: name -> "module:function" returning a SweepStage. Imported when used,
# so the library never imports a paper package by itself. A sweep file may also name
# "module:function" directly (the tests' toy stage does).
STAGES = {"gan_simclr.pretrain": "papers.gan_simclr.pretrain:sweep_stage"}

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
    stage: str  # a key of STAGES, or module:function
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


def get_stage(name: str, source: str) -> SweepStage:
    target = STAGES.get(name, name)
    module, _, func = target.partition(":")
    if not func:
        raise config.ConfigError(f"{source}: key 'stage': unknown stage {name!r} "
                                 f"(registered: {', '.join(STAGES)}; or module:function)")
    try:
        return getattr(importlib.import_module(module), func)()
    except (ImportError, AttributeError) as err:
        raise config.ConfigError(f"{source}: key 'stage': cannot load {target!r}: {err}") from err


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


# --------------------------------------------------------------------------- the study

def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a trial of a killed worker becomes stale and is retried once."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes write one SQLite file: wait for the lock rather than fail at 5 s.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=60, grace_period=180,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            **kwargs)


def make_sampler(cfg: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: parallel workers treat running trials as bad, so they do not propose the same point
    return optuna.samplers.TPESampler(n_startup_trials=cfg.n_startup_trials, seed=seed, constant_liar=True)


def make_pruner(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps,
                                       interval_steps=cfg.interval_steps)


def suggest(trial: optuna.Trial, name: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


@dataclasses.dataclass(frozen=True)
class ChildRuns:
    """How a worker process opens trial runs under the study's MLflow run (a Logger does not pickle)."""
    backend: str
    experiment: str
    tracking_uri: str | None
    parent_run_id: str | None

    def child(self, run_name: str, tags: Mapping | None = None) -> tracking.Logger:
        if self.backend == "mlflow":
            return tracking.MLflowLogger(self.experiment, run_name, tags, self.tracking_uri,
                                         parent_run_id=self.parent_run_id)
        return tracking.NullLogger(run_name, tags)


def _tags(plan: Plan, study: str, **more: Any) -> dict:
    return {"paper": plan.stage.paper, "stage": plan.stage.stage, "scale": plan.scale, "study": study, **more}


def _short(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def run_stage(plan: Plan, suite: config.SuiteConfig, overrides: Mapping, args: Any, logger: tracking.Logger,
              report: Report) -> dict[str, float]:
    """One run of the stage in its own logger run, closed with the right status; a pruned or
    diverged run is a normal end (FINISHED, tagged state=PRUNED)."""
    try:
        final = plan.stage.run(suite, overrides, args, logger=logger, report=report)
    except optuna.TrialPruned:
        logger.set_tags({"state": "PRUNED"})
        logger.close("FINISHED")
        raise
    except NonFiniteLossError as err:
        logger.set_tags({"state": "PRUNED", "diverged": str(err)[:500]})
        logger.close("FINISHED")
        raise optuna.TrialPruned(f"diverged: {err}") from err
    except BaseException as err:
        logger.close("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    metric = plan.cfg.objective.metric
    if metric not in final:
        logger.close("FAILED")
        raise KeyError(f"stage {plan.cfg.stage} returned no {metric!r} (has {sorted(final)})")
    logger.log_metrics({f"objective/{metric}": final[metric]})
    logger.set_tags({"state": "COMPLETE"})
    logger.close("FINISHED")
    return final


def make_objective(plan: Plan, suite: config.SuiteConfig, study_name: str, parent: Any,
                   worker: int) -> Callable[[optuna.Trial], float]:
    metric = plan.cfg.objective.metric

    def objective(trial: optuna.Trial) -> float:
        values = {name: suggest(trial, name, spec) for name, spec in plan.cfg.space.items()}
        print(f"[worker {worker}] trial {trial.number} starts: {_short(values)}", flush=True)
        logger = parent.child(f"trial {trial.number}", _tags(plan, study_name, trial=trial.number))
        logger.log_params({f"trial.{k}": v for k, v in values.items()})

        def report(step: int, metrics: Mapping[str, float], last: bool) -> None:
            if metric not in metrics:
                raise KeyError(f"stage {plan.cfg.stage} evaluated no {metric!r} (has {sorted(metrics)})")
            trial.report(float(metrics[metric]), step)
            print(f"[worker {worker}] trial {trial.number} step {step}: {metric} {metrics[metric]:.2f}", flush=True)
            # A trial that has run its whole budget is complete: pruning it then would only hide its value.
            if not last and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {metric} {metrics[metric]:.2f}")

        try:
            final = run_stage(plan, suite, plan.overrides(values), plan.args, logger, report)
        except optuna.TrialPruned as err:
            if isinstance(err.__cause__, NonFiniteLossError):
                trial.set_user_attr("diverged", str(err.__cause__)[:500])
            raise
        return float(final[metric])

    return objective


def _progress(n_total: int, worker: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        if trial.state == TrialState.COMPLETE:
            what = f"{trial.value:.2f}"
        else:
            what = f"(last {trial.intermediate_values[max(trial.intermediate_values)]:.2f} at step " \
                   f"{max(trial.intermediate_values)})" if trial.intermediate_values else ""
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        print(f"[worker {worker}] trial {trial.number} {trial.state.name} {what} in {seconds:.0f} s; "
              f"{done}/{n_total} finished", flush=True)
    return callback


def work(sweep_file: str, scale: str, suite_params: str, storage: str, study_name: str, n_trials: int,
         n_total: int, worker: int, seed: int, parent: Any) -> None:
    """Run ``n_trials`` trials of the study in this process (a worker)."""
    plan = load_plan(sweep_file, scale)
    suite = dataclasses.replace(config.load_suite(suite_params), scale=scale)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines below say it shorter
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage),
                              sampler=make_sampler(plan.cfg.sampler, seed), pruner=make_pruner(plan.cfg.pruner))
    study.optimize(make_objective(plan, suite, study_name, parent, worker), n_trials=n_trials,
                   callbacks=[optuna.study.MaxTrialsCallback(n_total, states=FINISHED), _progress(n_total, worker)],
                   catch=(), gc_after_trial=True)


def split(n: int, workers: int) -> list[int]:
    """n trials over workers, the first n % workers taking one more: [5, 5, 4] for 14 over 3."""
    return [n // workers + (w < n % workers) for w in range(workers)]


def run_references(plan: Plan, suite: config.SuiteConfig, study: optuna.Study, parent: tracking.Logger,
                   study_name: str) -> dict[str, dict]:
    """Each reference once at the trial budget; kept in the study (user attrs) and reused while the
    budget and arguments are unchanged."""
    metric, out = plan.cfg.objective.metric, {}
    for name, args in plan.references.items():
        key = f"reference:{name}"
        spec = {"args": config.to_dict(args), "overrides": plan.cfg.budget}
        stored = study.user_attrs.get(key)
        if stored and {k: stored[k] for k in spec} == json.loads(json.dumps(spec)):
            out[name] = stored
            print(f"reference {name}: {_fmt(stored['value'])} (stored in the study)", flush=True)
            continue
        print(f"reference {name}: {_short(config.to_dict(args))}", flush=True)
        curve: list[dict] = []
        start = time.time()
        logger = parent.child(f"reference {name}", _tags(plan, study_name, reference=name))
        try:
            final = run_stage(plan, suite, plan.cfg.budget, args, logger,
                              lambda step, metrics, last: curve.append({"step": step, metric: float(metrics[metric])}))
            value, diverged = float(final[metric]), None
        except optuna.TrialPruned as err:  # only divergence stops a reference: nothing prunes it
            value, diverged = None, str(err)[:500]
        out[name] = {**spec, "value": value, "diverged": diverged, "curve": curve,
                     "seconds": round(time.time() - start, 1)}
        study.set_user_attr(key, out[name])
        print(f"reference {name}: {_fmt(value) if diverged is None else diverged}", flush=True)
    return out


# --------------------------------------------------------------------------- outputs

def _trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    steps = sorted(trial.intermediate_values)
    # Optuna stores a pruned trial's last evaluation as its value: keep value for complete trials only.
    value = trial.value if trial.state == TrialState.COMPLETE else None
    return {"number": trial.number, "state": trial.state.name, "value": value,
            "last_step": steps[-1] if steps else None,
            "last_value": trial.intermediate_values[steps[-1]] if steps else None,
            "curve": {int(s): trial.intermediate_values[s] for s in steps}, "params": trial.params,
            "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
            "enqueued": bool(trial.user_attrs.get("enqueued")), "diverged": trial.user_attrs.get("diverged")}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def display_storage(url: str) -> str:
    """A SQLite URL inside the repository as a relative one, so committed summaries name no machine."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).resolve()
        if path.is_relative_to(REPO_ROOT):
            return f"sqlite:///{path.relative_to(REPO_ROOT).as_posix()}"
    return url


def summarise(plan: Plan, study: optuna.Study, storage: str, references: dict, importance: dict | None,
              suite_seed: int, wall_s: float) -> dict:
    trials = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    states = dict(collections.Counter(t["state"] for t in trials))
    best = study.best_trial if states.get("COMPLETE") else None
    enqueued = [t for t in trials if t["enqueued"]]
    source = plan.source.resolve()
    return {
        "paper": plan.stage.paper, "stage": plan.stage.stage, "study": study.study_name,
        "storage": display_storage(storage),
        "sweep_file": (source.relative_to(REPO_ROOT) if source.is_relative_to(REPO_ROOT) else source).as_posix(),
        "scale": plan.scale, "objective": dataclasses.asdict(plan.cfg.objective),
        "args": config.to_dict(plan.args), "budget": plan.cfg.budget,
        "seeds": {"suite_seed": suite_seed, "stage_seed": getattr(plan.args, "seed", None),
                  "sampler_seed": plan.cfg.sampler.seed,
                  "note": "every trial and reference trains with the same seeds (common random numbers)"},
        "sampler": dataclasses.asdict(plan.cfg.sampler), "pruner": dataclasses.asdict(plan.cfg.pruner),
        "space": {n: dataclasses.asdict(s) for n, s in plan.cfg.space.items()},
        "n_trials": plan.cfg.n_trials, "states": states,
        "best": None if best is None else {
            "trial": best.number, "value": best.value, "params": best.params,
            "params_yaml": nest({plan.cfg.space[n].key: v for n, v in best.params.items()})},
        "defaults": None if not enqueued else {k: enqueued[0][k] for k in ("number", "state", "value", "params")},
        "references": references, "importance": importance,
        "trials": trials, "trial_seconds": round(sum(t["seconds"] or 0 for t in trials), 1),
        "wall_s_this_command": round(wall_s, 1), "trials_made_by": study.user_attrs.get("commands", []),
        **tracking.provenance(),
    }


def to_markdown(s: dict, plan: Plan) -> str:
    metric = s["objective"]["metric"]
    made = "; ".join(f"`{c['command']}` ({c['trials']} trials on {c['workers']} worker(s), commit `{c['commit']}`)"
                     for c in s["trials_made_by"]) or "none yet"
    states = ", ".join(f"{v} {k.lower()}" for k, v in s["states"].items())
    lines = [f"# Optuna sweep `{s['study']}`: {s['paper']} / {s['stage']}, scale **{s['scale']}**", "",
             f"- objective: {s['objective']['direction']} `{metric}` at a run's last evaluation",
             f"- trial budget (params overrides at scale {s['scale']}): `{json.dumps(s['budget'])}`",
             f"- stage arguments: `{json.dumps(s['args'])}`",
             f"- seeds: suite {s['seeds']['suite_seed']} and stage {s['seeds']['stage_seed']} for every trial and "
             f"reference (one seed: differences below about a point are within seed noise); sampler "
             f"{s['sampler']['name']} seed {s['seeds']['sampler_seed']}, pruner {s['pruner']['name']} "
             f"(after {s['pruner']['n_startup_trials']} trials, from step {s['pruner']['n_warmup_steps']})",
             f"- trials: {sum(s['states'].values())} of n_trials {s['n_trials']} ({states}); "
             f"{s['trial_seconds'] / 60:.1f} min in trials",
             f"- trials made by {made}",
             f"- this summary by `{s['command']}` at commit `{s['commit']}` "
             f"({s['wall_s_this_command'] / 60:.1f} min wall); study `{s['study']}` in `{s['storage']}`",
             "", "## Best against the paper's settings, same budget", "",
             f"| run | {metric} | note |", "|---|---|---|"]
    if s["best"]:
        b = s["best"]
        lines.append(f"| best trial ({b['trial']}) | {b['value']:.2f} | {_short(b['params'])} |")
    if s["defaults"]:
        d = s["defaults"]
        value = f"{d['value']:.2f}" if d["value"] is not None else d["state"].lower()
        lines.append(f"| params.yaml defaults (trial {d['number']}, enqueued) | {value} | {_short(d['params'])} |")
    for name, ref in s["references"].items():
        value = "diverged" if ref["value"] is None else f"{ref['value']:.2f}"
        lines.append(f"| reference `{name}` (not a trial) | {value} | "
                     f"{_short(plan.cfg.references.get(name, {}))}, at the same budget |")
    if s["best"]:
        lines += ["", "## Best parameters", "", "| name | params key | params.yaml | best |", "|---|---|---|---|"]
        for name, spec in plan.cfg.space.items():
            default = s["defaults"]["params"].get(name) if s["defaults"] else plan.defaults.get(name)
            lines.append(f"| `{name}` | `{spec.key}` | {_fmt(default)} | {_fmt(s['best']['params'].get(name))} |")
        params_file = f"papers/{s['paper']}/params.yaml"
        sets = " ".join(f"-S '{params_file}:{plan.cfg.space[n].key}={v!r}'" for n, v in s["best"]["params"].items())
        lines += ["", "`best_params.yaml` holds them in params.yaml's shape (the stage's `--overrides`); "
                  f"as a DVC experiment: `dvc exp run {sets}`. They were tuned at the trial budget above: "
                  "the learning rate and warm-up in particular depend on the schedule's length."]
    if s["importance"]:
        lines += ["", f"Parameter importance (fANOVA over {s['states'].get('COMPLETE', 0)} complete trials; "
                  "indicative at this many): " + ", ".join(f"`{k}` {v:.2f}" for k, v in s["importance"].items())]
    names = list(plan.cfg.space)
    lines += ["", "## Trials", "", "| trial | state | " + " | ".join(f"`{n}`" for n in names)
              + f" | {metric} | curve (step: value) | s |", "|" + "---|" * (len(names) + 5)]
    for t in s["trials"]:
        state = t["state"].lower() + (" (defaults)" if t["enqueued"] else "") + (" (diverged)" if t["diverged"] else "")
        curve = ", ".join(f"{k}: {v:.2f}" for k, v in t["curve"].items())
        lines.append(f"| {t['number']} | {state} | " + " | ".join(_fmt(t["params"].get(n)) for n in names)
                     + f" | {_fmt(t['value'])} | {curve} | {_fmt(t['seconds'])} |")
    plots = ["optimization_history.png", "intermediate_values.png"]
    plots += ["param_importances.png"] if s["importance"] else []
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots) + "."]
    return "\n".join(lines) + "\n"


def write_plots(s: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metric, paths = s["objective"]["metric"], []
    sign = 1 if s["objective"]["direction"] == "maximize" else -1
    # ---- optimisation history: complete trials, pruned ones at their last value, best so far
    fig, ax = plt.subplots(figsize=(6.5, 4))
    best, xs, ys = None, [], []
    for t in s["trials"]:
        if t["state"] == "COMPLETE":
            ax.scatter(t["number"], t["value"], color="tab:blue", zorder=3)
            best = t["value"] if best is None else max(best * sign, t["value"] * sign) * sign
        elif t["state"] == "PRUNED" and t["last_value"] is not None:
            ax.scatter(t["number"], t["last_value"], marker="x", color="tab:gray", zorder=3)
        if best is not None:
            xs.append(t["number"])
            ys.append(best)
    ax.step(xs, ys, where="post", color="tab:blue", label="best so far")
    ax.scatter([], [], marker="x", color="tab:gray", label="pruned (last evaluation)")
    if s["defaults"] and s["defaults"]["value"] is not None:
        ax.axhline(s["defaults"]["value"], color="tab:orange", ls="--", label="params.yaml defaults (trial 0)")
    for i, (name, ref) in enumerate((n, r) for n, r in s["references"].items() if r["value"] is not None):
        ax.axhline(ref["value"], color=f"C{i + 3}", ls=":", label=f"reference {name}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel=f"{metric} (%)", title=f"{s['study']} ({s['scale']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "optimization_history.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    # ---- evaluation curves: what the pruner saw
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 20 trials in distinct colours
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for t in s["trials"]:
        if t["curve"]:
            style = "-" if t["state"] == "COMPLETE" else "--"
            ax.plot(list(map(int, t["curve"])), list(t["curve"].values()), style, marker=".", alpha=0.8,
                    label=f"{t['number']}" + (" (defaults)" if t["enqueued"] else ""))
    for name, ref in s["references"].items():
        ax.plot([c["step"] for c in ref["curve"]], [c[metric] for c in ref["curve"]], "k:", marker="s",
                label=f"reference {name}")
    ax.set(xlabel="step (epoch)", ylabel=f"{metric} (%)", title="evaluations (dashed: pruned)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(out / "intermediate_values.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    # ---- importances
    if s["importance"]:
        fig, ax = plt.subplots(figsize=(5, 3))
        names = list(s["importance"])[::-1]
        ax.barh(names, [s["importance"][n] for n in names])
        ax.set(xlabel="importance (fANOVA, normalised)",
               title=f"{s['states'].get('COMPLETE', 0)} complete trials")
        fig.tight_layout()
        paths.append(out / "param_importances.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def importances(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importances over the complete trials (None below 3 of them: nothing to say)."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


def write_outputs(plan: Plan, study: optuna.Study, storage: str, references: dict, out: Path,
                  suite_seed: int, wall_s: float) -> tuple[dict, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    s = summarise(plan, study, storage, references, importances(study), suite_seed, wall_s)
    paths = []
    if s["best"]:
        header = (f"# Best of Optuna study {s['study']} ({s['paper']} / {s['stage']}, scale {s['scale']}): "
                  f"{s['objective']['metric']} {s['best']['value']:.2f} at trial {s['best']['trial']},\n"
                  f"# tuned at the budget {json.dumps(s['budget'])}. Merge over params.yaml\n"
                  f"# (e.g. `--overrides` of the stage; see the paper README, \"Tuning with Optuna\").\n")
        paths.append(out / "best_params.yaml")
        atomic_write_text(paths[-1], header + yaml.safe_dump(s["best"]["params_yaml"], sort_keys=False))
    paths.append(out / "summary.json")
    atomic_write_text(paths[-1], json.dumps(s, indent=2) + "\n")
    paths.append(out / "summary.md")
    atomic_write_text(paths[-1], to_markdown(s, plan))
    paths += write_plots(s, out)
    return s, paths


# --------------------------------------------------------------------------- the command

def run_sweep(sweep_file: Path, *, scale: str | None = None, n_trials: int | None = None, workers: int = 1,
              storage: str = DEFAULT_STORAGE, study_name: str | None = None, out: Path | None = None,
              suite_params: Path = REPO_ROOT / "params.yaml", references: bool = True) -> dict:
    """Create or resume the study, run what is left of it on ``workers`` processes, then the
    references, and write the outputs; returns the summary."""
    start = time.time()
    suite = config.load_suite(suite_params)
    scale = scale or suite.scale
    suite = dataclasses.replace(suite, scale=scale)
    plan = load_plan(sweep_file, scale)
    if n_trials is not None:
        plan.cfg.n_trials = n_trials
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    study_name = study_name or f"{plan.cfg.name}-{scale}"
    out = Path(out) if out else REPO_ROOT / "papers" / plan.stage.paper / "results" / "sweeps" / scale
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rdb = make_storage(storage)
    study = optuna.create_study(study_name=study_name, storage=rdb, load_if_exists=True,
                                direction=plan.cfg.objective.direction)
    # A study measures one thing: refuse to add trials at another budget, objective or stage.
    identity = {"stage": plan.cfg.stage, "scale": scale, "args": config.to_dict(plan.args),
                "budget": plan.cfg.budget, "objective": dataclasses.asdict(plan.cfg.objective),
                "space": {n: s.key for n, s in plan.cfg.space.items()}}
    identity = json.loads(json.dumps(identity))
    if "sweep" in study.user_attrs and study.user_attrs["sweep"] != identity:
        raise config.ConfigError(f"{sweep_file}: study {study_name!r} in {storage} was made with another "
                                 f"sweep ({study.user_attrs['sweep']}); name a new one with --study")
    study.set_user_attr("sweep", identity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials of killed workers: FAIL, retried once (WAITING)
    if plan.cfg.enqueue_defaults:
        study.enqueue_trial(plan.defaults, user_attrs={"enqueued": "params.yaml defaults"}, skip_if_exists=True)
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    left = max(0, plan.cfg.n_trials - finished - running)
    # Enqueued trials (the defaults, retries) run here before any worker starts: with SQLite, Optuna
    # cannot hand one WAITING trial to exactly one of several processes (both may run it, and one
    # trial of the total is lost).
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    first = min(waiting, left) if workers > 1 else 0
    shares = [k for k in split(left - first, workers) if k]
    if shares or first:  # what made the trials, for the summary (a later outputs-only run is not it)
        made = {**tracking.provenance(), "workers": len(shares), "trials": left}
        study.set_user_attr("commands", study.user_attrs.get("commands", []) + [made])
    print(f"study {study_name} ({storage}): {finished} finished, {running} running elsewhere, "
          f"{left} to run ({first} enqueued first, here) on {len(shares)} worker(s) at scale {scale}", flush=True)

    experiment = plan.stage.paper
    sweep_dict = {"sweep": config.to_dict(plan.cfg), "scale": scale, "study": study_name, "storage": storage,
                  "workers": workers}
    with tracking.stage_logger(suite, experiment, f"sweep/{study_name}", sweep_dict,
                               **_tags(plan, study_name, kind="sweep")) as log:
        base_seed = plan.cfg.sampler.seed + 1000 * len(trials)  # a resumed study gets fresh random draws
        if first:
            work(str(sweep_file), scale, str(suite_params), storage, study_name, first, plan.cfg.n_trials,
                 0, base_seed, log)
        if len(shares) == 1:
            work(str(sweep_file), scale, str(suite_params), storage, study_name, shares[0], plan.cfg.n_trials,
                 0, base_seed, log)
        elif shares:
            remote = ChildRuns(suite.tracking.backend, experiment, getattr(log, "tracking_uri", suite.tracking.uri),
                               getattr(log, "run_id", None))
            ctx = multiprocessing.get_context("spawn")  # no forked SQLite/MLflow connections
            procs = [ctx.Process(target=work, name=f"sweep-worker-{w}",
                                 args=(str(sweep_file), scale, str(suite_params), storage, study_name, k,
                                       plan.cfg.n_trials, w, base_seed + w, remote))
                     for w, k in enumerate(shares)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            if failed := [p.name for p in procs if p.exitcode != 0]:
                raise RuntimeError(f"{', '.join(failed)} failed (see their output above); rerun the same "
                                   f"command to finish study {study_name}")
        refs = run_references(plan, suite, study, log, study_name) if references else {}
        summary, paths = write_outputs(plan, study, storage, refs, out, suite.seed, time.time() - start)
        metrics = {f"best/{plan.cfg.objective.metric}": summary["best"]["value"]} if summary["best"] else {}
        if summary["defaults"] and summary["defaults"]["value"] is not None:
            metrics[f"defaults/{plan.cfg.objective.metric}"] = summary["defaults"]["value"]
        metrics.update({f"reference_{n}/{plan.cfg.objective.metric}": r["value"] for n, r in refs.items()
                        if r["value"] is not None})
        if metrics:
            log.log_metrics(metrics)
        for path in paths:
            log.log_artifact(path)
    print(f"wrote {', '.join(p.name for p in paths)} to {out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep file, e.g. papers/gan_simclr/sweep.yaml")
    parser.add_argument("--scale", choices=config.SCALES, default=None, help="default: params.yaml's scale")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="the study's total of finished trials (default: the sweep file's; 0: outputs only)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the study (default 1)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB URL (default: %(default)s)")
    parser.add_argument("--study", default=None, help="study name (default: <the sweep's name>-<scale>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="outputs folder (default: papers/<paper>/results/sweeps/<scale>)")
    parser.add_argument("--suite-params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--no-references", action="store_true", help="skip the reference runs")
    args = parser.parse_args(argv)
    try:
        summary = run_sweep(args.sweep, scale=args.scale, n_trials=args.n_trials, workers=args.workers,
                            storage=args.storage, study_name=args.study, out=args.out,
                            suite_params=args.suite_params, references=not args.no_references)
    except (config.ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary["best"]:
        print(f"best {summary['objective']['metric']} {summary['best']['value']:.2f} "
              f"(trial {summary['best']['trial']}): {_short(summary['best']['params'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
