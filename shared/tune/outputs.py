"""What a sweep leaves behind: ``summary.json`` / ``summary.md``, ``best_params.yaml`` (params.yaml's
shape) and PNG plots of the optimisation history, the evaluation curves and the importances.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml
from optuna.trial import TrialState

from shared import config
from shared.config import REPO_ROOT
from shared.io import atomic_write_text
from shared.provenance import provenance
from shared.tune.spec import Plan, nest


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


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def format_values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


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
        **provenance(),
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
        lines.append(f"| best trial ({b['trial']}) | {b['value']:.2f} | {format_values(b['params'])} |")
    if s["defaults"]:
        d = s["defaults"]
        value = f"{d['value']:.2f}" if d["value"] is not None else d["state"].lower()
        lines.append(f"| params.yaml defaults (trial {d['number']}, enqueued) | {value} | {format_values(d['params'])} |")
    for name, ref in s["references"].items():
        value = "diverged" if ref["value"] is None else f"{ref['value']:.2f}"
        lines.append(f"| reference `{name}` (not a trial) | {value} | "
                     f"{format_values(plan.cfg.references.get(name, {}))}, at the same budget |")
    if s["best"]:
        lines += ["", "## Best parameters", "", "| name | params key | params.yaml | best |", "|---|---|---|---|"]
        for name, spec in plan.cfg.space.items():
            default = s["defaults"]["params"].get(name) if s["defaults"] else plan.defaults.get(name)
            lines.append(f"| `{name}` | `{spec.key}` | {format_value(default)} | {format_value(s['best']['params'].get(name))} |")
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
        lines.append(f"| {t['number']} | {state} | " + " | ".join(format_value(t["params"].get(n)) for n in names)
                     + f" | {format_value(t['value'])} | {curve} | {format_value(t['seconds'])} |")
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
