"""Stage `train_gan`: StyleGAN2 with DiffAugment on the 5k CIFAR-10 subset (never the test images).

    python -m papers.gan_simclr.train_gan --out papers/gan_simclr/outputs/gan

Writes `<out>/best.pt` (G_ema at the best FID), `<out>/checkpoint.pt` (resumable),
`<out>/samples/*.png` (grids from G_ema), `<out>/metrics.json` and `<out>/config.yaml`.
Every evaluation during training scores `fid_samples` G_ema samples against the full CIFAR-10
test set with the suite's in-domain extractor (`fid_indomain`, `is_indomain`: the curve, and
the choice of the best checkpoint). When `metrics.inception_weights` names a file, the best
G_ema gets one Inception FID at the end (`fid_inception`, of `metrics.inception_samples`
samples against the precomputed `metrics.reference_stats`, the `fid_stats@cifar10_test`
stage's file): the table's number, in the record's `best` beside the in-domain one. The record's
`fid_*` description keys (shared.metrics.FIDScorer.describe) are the Inception FID's when it ran,
the in-domain one's under `indomain` (sample counts, reference set, detector).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from papers.gan_simclr.config import PARAMS, GANStageConfig
from shared import config, data, metrics
from shared.cli import run_stage, stage_parser
from shared.device import to_device
from shared.gan_losses import nonsaturating
from shared.models.stylegan2 import stylegan2
from shared.stage import start
from shared.trainers.gan import fid_evaluate, train_gan


def run(args: argparse.Namespace) -> dict:
    stage = start("gan_simclr", "train_gan", suite_params=args.suite_params, out=args.out, metrics=args.metrics,
                  plots=args.plots)
    cfg = stage.section(GANStageConfig, args.params, "gan")
    device = stage.device

    x, y = data.load_prepared(args.prepared, "train")
    subset = data.load_indices(args.subset)
    loader = data.DeviceLoader(torch.from_numpy(x[subset]), torch.from_numpy(y[subset]),
                               batch_size=cfg.train.batch_size, shuffle=True, drop_last=True, seed=stage.seed,
                               device=device)
    test_x, _ = data.load_prepared(args.prepared, "test")
    scorer, final_scorer = metrics.gan_scorers(test_x, cfg.metrics, device, reference="CIFAR-10 test set")
    fid_key = f"fid_{scorer.kind}"
    # The best checkpoint is the lowest FID under the detector actually used.
    train_cfg = dataclasses.replace(cfg.train, best_key=fid_key)

    G, D = stylegan2(cfg.architecture)
    G, D = to_device(G, device), to_device(D, device)
    method = nonsaturating(cfg.policy)
    evaluate = fid_evaluate(scorer, cfg.fid_samples, 250, device)
    final_evaluate = None if final_scorer is None else fid_evaluate(
        final_scorer, cfg.metrics.inception_samples, 250, device)

    resolved = {"gan": config.to_dict(cfg), "fid": scorer.label if final_scorer is None else
                {"during_training": scorer.label, "final_best_g_ema": final_scorer.label}}
    with stage.tracked(resolved, "train_gan", method=method.name) as log:
        result = train_gan(train_cfg, G, D, method, loader, out_dir=stage.out, logger=log, device=device,
                           z_dim=cfg.architecture.z_dim, evaluate=evaluate, final_evaluate=final_evaluate)
        # the best checkpoint's one Inception FID beside its in-domain one (its IS is the history's)
        at_best = {**result.best, **{k: v for k, v in (result.final or {}).items() if k.startswith("fid_")}}
        best = {k: v for k, v in at_best.items() if k != "step" and isinstance(v, (int, float))}
        described = scorer.describe(cfg.fid_samples) if final_scorer is None else {
            **final_scorer.describe(cfg.metrics.inception_samples), "indomain": scorer.describe(cfg.fid_samples)}
        record = stage.record(
            best, method=method.name, fid_samples=cfg.fid_samples, **described,
            best=at_best, final=result.history[-1],
            history=result.history, steps=result.steps, kimg=result.steps * cfg.train.batch_size / 1000,
            train_images=len(subset))
        stage.write(record, logger=log)
        stage.write_metrics(best)
        stage.write_plot(fid_key, result.history)
    print(f"train_gan: best {at_best} ({scorer.label}"
          + ("" if final_scorer is None else f"; {final_scorer.label} of {cfg.metrics.inception_samples} samples")
          + f"; {stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    parser.add_argument("--subset", default="data/subsets/cifar10_5k.npy")
    parser.add_argument("--metrics", default=None,
                        help="the run's headline numbers for DVC (a flat JSON, outside --out)")
    parser.add_argument("--plots", default=None, help="the run's curve for DVC (a JSON list of rows, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
