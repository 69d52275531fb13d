"""Optuna studies over a stage's parameters, trials logged to MLflow.

    python -m shared.tune papers/<paper>/sweep.yaml [--scale mini] [--n-trials N]
        [--workers N] [--storage URL] [--study NAME] [--out DIR]

A sweep file (`papers/<paper>/sweep.yaml`, read by :mod:`shared.tune.spec`) names its stage as
`module:function` (the stage module's function that returns a :class:`~shared.tune.spec.SweepStage`),
the stage's fixed arguments, a search space of dotted params keys (`pretrain.optimizers.lars.lr`),
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
when the study reaches `n_trials`, so the total can then exceed it by the trials in flight
(:mod:`shared.tune.study`).

Outputs in `--out` (default `papers/<paper>/results/sweeps/<scale>`, :mod:`shared.tune.outputs`):
`best_params.yaml` (params.yaml's shape: `python -m papers.<paper>.<stage> ... --overrides
best_params.yaml`, or `dvc exp run -S` per key, or paste it), `summary.md` / `summary.json`, and
PNG plots of the optimisation history, the evaluation curves and the parameter importances.

Modules: `spec` (the sweep file and the stage contract; no Optuna, so a stage module can import
it), `study` (storage, sampler, pruner, objective, workers, :func:`~shared.tune.study.run_sweep`),
`outputs` (summary, Markdown, plots, best parameters), `__main__` (the command line).
"""
