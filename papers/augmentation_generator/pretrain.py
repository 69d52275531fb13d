"""Stage `pretrain`: F pre-trained with MoCo v2 on X_p alone (Sec. 4.1, "the embedding network was first
pre-trained with the contrastive loss of MoCov2").

    python -m papers.augmentation_generator.pretrain --seed 0 --data papers/augmentation_generator/outputs/data \
        --out papers/augmentation_generator/outputs/pretrain/seed0

MoCo v2 as the official code runs it with --mlp --moco-t 0.2 --aug-plus --cos (`pretrain.moco`, `pretrain.ssl`,
`pretrain.views`): the query is F(t(x)), the key the momentum encoder's F(t'(x)), negatives from the queue;
split batch norm emulates the shuffled BN of several GPUs. Data: X_p only, in full batches (an epoch is
floor(|X_p| / batch) steps). Writes `<out>/encoder.pt` (F, plus the whole MoCo state for the re-training),
`<out>/metrics.json` (no table: the loss and the kNN monitor per evaluation, `history`), `<out>/checkpoint.pt`
(resumed after a kill with the same config), or the skip marker for a seed the scale does not run.
"""
from __future__ import annotations

import argparse
import sys

import torch

from papers.augmentation_generator.config import PARAMS, PretrainConfig, RunsConfig
from papers.augmentation_generator.data import load_splits
from papers.augmentation_generator.encoder import (DownstreamMonitor, LossMeter, build_encoder, build_moco,
                                                   save_encoder)
from shared import config
from shared.cli import run_stage, stage_parser
from shared.data import DeviceLoader
from shared.device import to_device
from shared.stage import start
from shared.trainers.ssl import train_ssl
from shared.view_sources import ClassicViews, PipelineConfig


def run(args: argparse.Namespace) -> dict | None:
    stage = start("augmentation_generator", "pretrain", suite_params=args.suite_params, out=args.out,
                  trial=args.seed, metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    cfg = stage.section(PretrainConfig, args.params, "pretrain")
    device = stage.device

    # ---- data: X_p in full batches (split BN needs batch % bn_splits == 0; MoCo's queue a fixed batch)
    splits = load_splits(args.data)
    xp = torch.as_tensor(splits.xp)
    if len(xp) < cfg.ssl.batch_size:
        raise ValueError(f"X_p holds {len(xp)} images, fewer than pretrain.ssl.batch_size={cfg.ssl.batch_size}")
    loader = DeviceLoader(xp, torch.as_tensor(splits.yp), batch_size=cfg.ssl.batch_size, shuffle=True,
                          drop_last=True, seed=stage.seed, device=device)

    # ---- F, MoCo v2 around it, aug-plus views (the same ops for the query and the key)
    encoder = build_encoder(cfg.width)
    method = to_device(build_moco(encoder, cfg.moco), device)
    views = ClassicViews.symmetric(PipelineConfig.from_simclr(cfg.views), 2)
    monitor = DownstreamMonitor((torch.as_tensor(splits.fine_dotted), torch.as_tensor(splits.fine_y)),
                                torch.as_tensor(splits.test_clean), torch.as_tensor(splits.test_dotted),
                                torch.as_tensor(splits.test_y), cfg.monitor, device)

    resolved = {"pretrain": config.to_dict(cfg), "seed": args.seed, "data": str(args.data)}
    with stage.tracked(resolved, f"pretrain/seed{args.seed}") as log:
        meter = LossMeter(log)
        result = train_ssl(cfg.ssl, method, views, loader, out_dir=stage.out, logger=meter, device=device,
                           evaluate=lambda enc: {"loss": meter.take(), **monitor(enc)})
        save_encoder(stage.out / "encoder.pt", method.encoder, cfg.width, method=method, stage="pretrain",
                     seed=args.seed, steps=result.steps)
        final = result.final
        record = stage.record({k: v for k, v in final.items()}, steps=result.steps, epochs=cfg.ssl.epochs,
                              steps_per_epoch=len(loader), batch_size=cfg.ssl.batch_size, images=len(xp),
                              feature_dim=encoder.feature_dim, monitor_classes=cfg.monitor.classes,
                              history=result.history)
        stage.write(record, logger=log)
        stage.write_metrics(record.metrics)
        stage.write_plot("loss", result.history, x="epoch")
    shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
    print(f"pretrain seed {args.seed}: {result.steps} steps; {shown} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--data", required=True, help="the prepare stage's folder (splits.npz)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", default=None, help="the run's headline numbers for DVC (flat JSON, outside --out)")
    parser.add_argument("--plots", default=None, help="the run's loss curve for DVC (JSON rows, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
