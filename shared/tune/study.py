"""The study: RDB storage, sampler, pruner, the objective around a stage's run, worker processes,
references, and :func:`run_sweep`, which ties them together (the command's body).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import TrialState

from shared import config, tracking
from shared.config import REPO_ROOT
from shared.provenance import provenance
from shared.trainers.common import NonFiniteLossError
from shared.tune.outputs import display_storage, format_value, format_values, write_outputs
from shared.tune.spec import ParamSpec, Plan, PrunerConfig, Report, SamplerConfig, load_plan

DEFAULT_STORAGE = f"sqlite:///{(REPO_ROOT / 'mlflow' / 'optuna.db').as_posix()}"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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
        print(f"[worker {worker}] trial {trial.number} starts: {format_values(values)}", flush=True)
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
            print(f"reference {name}: {format_value(stored['value'])} (stored in the study)", flush=True)
            continue
        print(f"reference {name}: {format_values(config.to_dict(args))}", flush=True)
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
        print(f"reference {name}: {format_value(value) if diverged is None else diverged}", flush=True)
    return out


# --------------------------------------------------------------------------- the sweep

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
    # The objective's name, so optuna-dashboard and `optuna trials` label the value (not "Objective 0").
    if study.metric_names != [plan.cfg.objective.metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([plan.cfg.objective.metric])
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
        made = {**provenance(), "workers": len(shares), "trials": left}
        study.set_user_attr("commands", study.user_attrs.get("commands", []) + [made])
    print(f"study {study_name} ({storage}): {finished} finished, {running} running elsewhere, "
          f"{left} to run ({first} enqueued first, here) on {len(shares)} worker(s) at scale {scale}", flush=True)

    # One MLflow run per study: a resumed or finished study's command reopens the study's run (found
    # by its name and tags) rather than adding an empty one. Its params are what the study refuses to
    # change (MLflow params never change); the settings a later command may change (n_trials,
    # workers, sampler, pruner, references) are the artifact sweep.yaml and tags.
    experiment = plan.stage.paper
    sweep_dict = {"sweep": config.to_dict(plan.cfg), "scale": scale, "study": study_name,
                  "storage": display_storage(storage), "workers": workers}
    with tracking.stage_logger(suite, experiment, f"sweep/{study_name}",
                               {"study": study_name, "storage": display_storage(storage), **identity},
                               resume=tracking.SAME_TAGS, **_tags(plan, study_name, kind="sweep")) as log:
        log.log_dict(sweep_dict, "sweep.yaml")
        log.set_tags({"n_trials": plan.cfg.n_trials, "workers": workers})
        # a summary the rebuild loaded for this study is replaced by the study's own run
        tracking.delete_rebuilt(log, {"study": study_name, "scale": scale, "paper": plan.stage.paper})
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
        summary_md = next((p for p in paths if p.name == "summary.md"), None)
        if summary_md is not None:
            log.set_tags({tracking.NOTE_TAG: tracking.note(summary_md.read_text(), summary_md.name)})
    print(f"wrote {', '.join(p.name for p in paths)} to {out}", flush=True)
    return summary
