"""Stage `evaluate`: one trained run's Table 1 cell (best FID, IS) and Table 3 cell (linear evaluation of D).

    python -m papers.contrad.evaluate --run papers/contrad/outputs/train/sndcgan_contrad_seed0 \
        --out papers/contrad/outputs/eval/sndcgan_contrad_seed0

Table 1: the FID and IS of G at its best-FID evaluation, read from the train stage's
history (FID picks the checkpoint, as the paper's "best FID"); when the train stage gave that
checkpoint its one Inception FID (`fid_inception` in its `best`), that is the table's FID, the
in-domain one staying in the history (the IS is the in-domain one either way). Table 3 (ContraD and
SimCLR runs): D's penultimate features of the CIFAR-10 train and test images are
computed once (un-augmented, D's [-1, 1] input range), then `evaluate.repeats` linear
heads are trained on them with different seeds (plain SGD 0.1, 100 epochs, x0.1 at
60/75/90); the cell is their mean test accuracy, with the spread over repeats kept.
Writes `<out>/table1_fid.json` and `<out>/table1_is.json` (each with the evaluation
history) and/or `<out>/table3.json` in the suite's metrics-file format (paper, table, row, scale, seed, metrics) and `<out>/samples.png`
(G's last sample grid), or the skip marker `<out>/skipped.json` for a run the scale does not make.
Every record carries what its run used from the train record (`RUN_SETTINGS`: G's `latent_prior`, D's
colour `jitter`, None for a method without the views) and whether its best G_ema collapsed (`RUN_OUTCOMES`:
`diversity`, `collapse_threshold`, `collapsed`; None for a D-only run); a train record older than those keys
gives none.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from papers.contrad.config import PARAMS, EvaluateConfig, TrainStageConfig
from papers.contrad.models import CONTRASTIVE, build_models
from shared import checkpoint, config, data, records
from shared.cli import run_stage, stage_parser
from shared.device import to_device
from shared.io import atomic_write
from shared.metrics import FID_RECORD_KEYS
from shared.models.sngan import DiscriminatorFeatures
from shared.stage import start
from shared.trainers.linear_eval import extract_features, train_linear

RUN_SETTINGS = ("latent_prior", "jitter")  # copied from the train record into every record of the run
RUN_OUTCOMES = ("diversity", "collapse_threshold", "collapsed")  # likewise: the report leaves collapsed runs out


def row_id(architecture: str, method: str) -> str:
    return f"{architecture}_{method}_c10"


def _limited(x: np.ndarray, y: np.ndarray, limit: int | None) -> tuple[Tensor, Tensor]:
    if limit:  # a stratified subset: the same images for every run
        keep = data.stratified_subset(y, limit // len(np.unique(y)), seed=0)
        x, y = x[keep], y[keep]
    return torch.from_numpy(x), torch.from_numpy(y)


def table1_cell(train_metrics: dict) -> dict[str, float]:
    """FID and IS (with their detector's key suffix) at the best-FID evaluation of the run."""
    best = train_metrics["best"]
    if not best:
        raise ValueError(f"the run has no evaluation to take the best FID from (history: {train_metrics['history']})")
    at_best = next(h for h in train_metrics["history"] if h["step"] == best["step"])
    cell = {k: float(v) for k, v in at_best.items() if k != "step"}
    if "fid_inception" in best:  # the final Inception FID of the best checkpoint: one FID per table cell
        cell = {**{k: v for k, v in cell.items() if not k.startswith("fid_")}, "fid_inception": float(best["fid_inception"])}
    return cell


def linear_eval_of_d(D: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                     cfg: EvaluateConfig, device: torch.device) -> dict:
    """Features once, then `cfg.repeats` linear heads (seeds 0..repeats-1); accuracies in %."""
    encoder = DiscriminatorFeatures(D)
    bs = cfg.linear.feature_batch_size
    train_f, test_f = extract_features(encoder, train[0], device, bs), extract_features(encoder, test[0], device, bs)
    train_y, test_y = train[1].to(device), test[1].to(device)
    runs = [train_linear(train_f, train_y, test_f, test_y, dataclasses.replace(cfg.linear, seed=k))
            for k in range(cfg.repeats)]
    accs = [r["linear_test_acc"] for r in runs]
    return {"linear_eval_acc": statistics.fmean(accs),
            "linear_eval_acc_std_over_repeats": statistics.stdev(accs) if len(accs) > 1 else None,
            "repeats": accs, "train_accs": [r["linear_train_acc"] for r in runs],
            "feature_dim": train_f.shape[1], "train_images": len(train_y), "test_images": len(test_y)}


def run(args: argparse.Namespace) -> dict:
    stage = start("contrad", "evaluate", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    train_cfg = stage.section(TrainStageConfig, args.params, "train")
    cfg = stage.section(EvaluateConfig, args.params, "evaluate")
    run_dir = Path(args.run)
    trained = records.read(run_dir / "metrics.json")
    stage.trial = trained.seed
    if trained.is_skip:
        return stage.skip(trained.skipped, "skipped.json")
    if trained.scale != stage.scale:
        raise ValueError(f"{run_dir / 'metrics.json'} is from scale {trained.scale!r}, evaluating at {stage.scale!r}")
    t = trained.extra
    arch, method, seed = t["architecture"], t["method"], trained.seed
    row, written = row_id(arch, method), {}
    settings = {k: t[k] for k in (*RUN_SETTINGS, *RUN_OUTCOMES) if k in t}  # prior, jitter; collapsed or not

    if method != "simclr":  # a GAN: its FID and IS at the best-FID evaluation, one file per reported table
        cell = table1_cell(t)
        common = dict(best_step=t["best"]["step"], fid_samples=t["fid_samples"], steps=t["steps"], kimg=t["kimg"],
                      **{k: t[k] for k in FID_RECORD_KEYS if k in t},  # label, sample counts, reference, IS
                      **settings)
        for name in ("fid", "is"):
            values = {k: v for k, v in cell.items() if k.startswith(f"{name}_")}
            written[f"table1_{name}.json"] = stage.record(values, table=f"table1_{name}", row=row, **common,
                                                          history=t["history"])
    if method in CONTRASTIVE:  # Table 3: the linear evaluation of D
        device = stage.device
        state = checkpoint.load(run_dir / "discriminator.pt", map_location=device)
        if state is None:
            raise FileNotFoundError(f"{run_dir / 'discriminator.pt'}: the trained D is missing")
        _, D = build_models(arch, method, train_cfg)
        D = to_device(D, device)
        D.load_state_dict(state["D"])
        x, y = data.load_prepared(args.prepared, "train")
        tx, ty = data.load_prepared(args.prepared, "test")
        result = linear_eval_of_d(D, _limited(x, y, cfg.train_limit), _limited(tx, ty, cfg.test_limit), cfg, device)
        acc = result.pop("linear_eval_acc")
        written["table3.json"] = stage.record({"linear_eval_acc": acc}, table="table3", row=row, **settings,
                                              linear_eval=result, protocol=config.to_dict(cfg))
        print(f"evaluate {row} seed {seed}: linear eval {acc:.2f}% over {cfg.repeats} heads ({stage.scale})")
    for name, record in written.items():
        stage.write(record, name)
    stage.write_metrics({k: v for record in written.values() for k, v in record.metrics.items()})
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    if method != "simclr" and grids:  # the last grid, for the report's sample figure
        atomic_write(stage.out / "samples.png", lambda f: f.write(grids[-1].read_bytes()))
    return {name: record.to_dict() for name, record in written.items()}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--run", required=True, help="a train stage's output folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    parser.add_argument("--metrics", default=None,
                        help="the run's headline numbers for DVC (a flat JSON, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
