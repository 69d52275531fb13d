"""Stage `train`: one GAN (or, for `simclr`, one D) on CIFAR-10 for an (architecture, method, seed).

    python -m papers.contrad.train --architecture sndcgan --method contrad --seed 0 \
        --out papers/contrad/outputs/train/sndcgan_contrad_seed0

Methods: `baseline` (non-saturating, no augmentation), `diffaugment` (DiffAugment
translation,cutout on every D input), `contrad` (ContraD) and `simclr` (D trained by
L_con+ alone, Table 3's reference; G is not trained). Writes `<out>/best.pt` (G_ema at
the best FID), `<out>/discriminator.pt` (D at the end of training, for the linear
evaluation), `<out>/checkpoint.pt` (resumable), `<out>/samples/*.png`,
`<out>/metrics.json` and `<out>/config.yaml`. A combination the scale does not run
(`train.run_architectures`, `train.run_methods`, `train.n_seeds`) writes only a
`{"skipped": ...}` metrics.json, so the DVC matrix is the paper's at every scale.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from papers.contrad.config import ARCHITECTURES, METHODS, PARAMS, TrainStageConfig
from papers.contrad.method import ContraDDiscriminator, contrad, simclr_only
from shared import checkpoint, config, data, metrics, tracking
from shared.cli import run_stage, stage_parser
from shared.device import pick_device, to_device
from shared.gan_losses import GANMethod, nonsaturating
from shared.io import atomic_write_text
from shared.models.sngan import sngan
from shared.trainers.gan import fid_evaluate, train_gan

CONTRASTIVE = ("contrad", "simclr")  # methods whose D carries ContraD's three heads


def build_method(name: str, cfg: TrainStageConfig) -> GANMethod:
    if name == "baseline":
        return nonsaturating("")
    if name == "diffaugment":
        return nonsaturating(cfg.diffaugment_policy)
    if name == "contrad":
        return contrad(cfg.views, cfg.temperature, cfg.lambda_a)
    if name == "simclr":
        return simclr_only(cfg.views, cfg.temperature)
    raise ValueError(f"unknown method {name!r}; allowed: {list(METHODS)}")


def build_models(architecture: str, method: str, cfg: TrainStageConfig) -> tuple[nn.Module, nn.Module]:
    """G (SNDCGAN) and D (`architecture`); the contrastive methods wrap D with ContraD's heads."""
    arch = cfg.architectures[architecture]
    contrastive = method in CONTRASTIVE
    G, D = sngan(architecture, width=arch.width, z_dim=arch.z_dim, linear_head=not contrastive)
    if contrastive:  # the official SNDCGAN heads start at N(0, 0.02); SNResNet-18's keep PyTorch's init
        D = ContraDDiscriminator(D, score_hidden=arch.score_hidden,
                                 init_std=0.02 if architecture == "sndcgan" else None)
    return G, D


def skipped_reason(cfg: TrainStageConfig, architecture: str, method: str, seed: int, scale: str) -> str | None:
    if architecture not in cfg.run_architectures:
        return f"architecture {architecture} is not run at scale {scale} (run_architectures={cfg.run_architectures})"
    if method not in cfg.run_methods:
        return f"method {method} is not run at scale {scale} (run_methods={cfg.run_methods})"
    if seed >= cfg.n_seeds:
        return f"seed {seed} is not run at scale {scale} (n_seeds={cfg.n_seeds})"
    return None


def run(args: argparse.Namespace) -> dict | None:
    suite = config.load_suite(args.suite_params)
    cfg = config.load_section(TrainStageConfig, args.params, "train", suite.scale)
    out = Path(args.out)
    if reason := skipped_reason(cfg, args.architecture, args.method, args.seed, suite.scale):
        atomic_write_text(out / "metrics.json", json.dumps({"skipped": reason}) + "\n")
        print(f"train: {reason}; wrote a skipped marker")
        return None
    device = pick_device(suite.device)
    seed = suite.seed * 1_000_000 + args.seed * 1000  # loader orders are f(seed + epoch): keep runs apart
    checkpoint.seed_everything(seed)

    x, y = data.load_prepared(args.prepared, "train")
    loader = data.DeviceLoader(torch.from_numpy(x), torch.from_numpy(y), batch_size=cfg.train.batch_size,
                               shuffle=True, drop_last=True, seed=seed, device=device)
    G, D = build_models(args.architecture, args.method, cfg)
    G, D = to_device(G, device), to_device(D, device)
    method = build_method(args.method, cfg)
    z_dim = cfg.architectures[args.architecture].z_dim

    evaluate, scorer, train_cfg = None, None, cfg.train
    if method.g_loss is not None:  # a D-only run has no generator worth scoring
        test_x, _ = data.load_prepared(args.prepared, "test")
        scorer = metrics.make_scorer(test_x, cfg.metrics.inception_weights, cfg.metrics.extractor, device,
                                     cfg.metrics.is_splits)
        train_cfg = dataclasses.replace(cfg.train, best_key=f"fid_{scorer.kind}")
        evaluate = fid_evaluate(scorer, cfg.fid_samples, 500, device, z_dim)

    resolved = {"scale": suite.scale, "architecture": args.architecture, "method": args.method, "seed": args.seed,
                "train": config.to_dict(cfg), "fid": None if scorer is None else scorer.label}
    checkpoint.fresh_start_if_config_changed(out, resolved)
    name = f"{args.architecture}_{args.method}"
    start = time.perf_counter()
    with tracking.stage_logger(suite, "contrad", f"train/{name}/seed{args.seed}", resolved, stage="train",
                               architecture=args.architecture, method=args.method, row=name,
                               seed=args.seed) as log:
        result = train_gan(train_cfg, G, D, method, loader, out_dir=out, logger=log, device=device, z_dim=z_dim,
                           evaluate=evaluate)
        checkpoint.save(out / "discriminator.pt", {"D": D.state_dict(), "architecture": args.architecture,
                                                   "method": args.method, "steps": result.steps})
        summary = {
            "paper": "contrad", "stage": "train", "scale": suite.scale, "architecture": args.architecture,
            "method": args.method, "method_name": method.name, "seed": args.seed,
            "fid_label": None if scorer is None else scorer.label, "fid_samples": cfg.fid_samples,
            "fid_reference": "CIFAR-10 test set", "reference_is": None if scorer is None else scorer.reference_is,
            "best": result.best, "history": result.history, "steps": result.steps,
            "kimg": result.steps * cfg.train.batch_size / 1000, "train_seconds": round(time.perf_counter() - start),
            **tracking.provenance(),
        }
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        log.log_dict(summary, "metrics.json")
    print(f"train {name} seed {args.seed}: best {result.best} ({suite.scale})")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--architecture", required=True, choices=ARCHITECTURES)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
