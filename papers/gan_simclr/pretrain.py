"""Stage `pretrain`: SimCLR on 5k real CIFAR-10 images plus k GAN samples, linear eval along the way.

    python -m papers.gan_simclr.pretrain --fakes 2500 --optimizer lars --seed 0 \
        --samples papers/gan_simclr/outputs/samples/fake_2500.npz \
        --out papers/gan_simclr/outputs/pretrain/lars_fake2500_seed0

Writes `<out>/metrics.json` (the final linear-eval accuracy and the curve, for the
report stage), `<out>/config.yaml` (the resolved config) and `<out>/checkpoint.pt`
(resumed if the stage is re-run after a kill with the same config).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from papers.gan_simclr.config import PARAMS, PretrainConfig
from shared import checkpoint, config, data, tracking
from shared.device import pick_device, to_device
from shared.io import atomic_write_text
from shared.losses import nt_xent
from shared.mixing import MixedLoader
from shared.models import resnet18, simclr_projector
from shared.trainers.linear_eval import linear_eval
from shared.trainers.ssl import train_ssl
from shared.views import SimCLRViews

PAPER_REAL_COUNT = 5000  # the paper's small CIFAR-10 (Sec. 5)


def load_samples(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GAN samples not found; make them with "
                                f"`dvc repro papers/gan_simclr/dvc.yaml` (stage generate)")
    with np.load(path) as f:
        return f["x"]


def run(args: argparse.Namespace) -> dict | None:
    suite = config.load_suite(args.suite_params)
    cfg = config.load_section(PretrainConfig, args.params, "pretrain", suite.scale)
    out = Path(args.out)
    if args.seed >= cfg.n_seeds:
        # The DVC matrix lists the paper's 3 seeds; smaller scales run only the first n_seeds.
        atomic_write_text(out / "metrics.json", json.dumps(
            {"skipped": f"seed {args.seed} is not run at scale {suite.scale} (n_seeds={cfg.n_seeds})"}) + "\n")
        return None
    if args.optimizer not in cfg.optimizers:
        raise config.ConfigError(f"{args.params}: no optimiser 'pretrain.optimizers.{args.optimizer}'")
    ssl_cfg = cfg.optimizers[args.optimizer]
    device = pick_device(suite.device)
    # Loader orders are a function of (seed + epoch): space trials 1000 epochs apart so no two share one.
    seed = suite.seed * 1_000_000 + args.seed * 1000
    checkpoint.seed_everything(seed)

    # ---- data: the 5k real subset, the GAN samples, the full test set
    real_x, real_y = data.load_prepared(args.prepared, "train")
    subset = data.load_indices(args.subset)
    real_x, real_y = torch.from_numpy(real_x[subset]), torch.from_numpy(real_y[subset])
    # Fake counts are the paper's, for its 5,000 real images; a smaller real set (smoke) keeps the
    # paper's fake:real ratios (0.5, 1, 2) with proportionally fewer fakes.
    fakes_used = round(args.fakes * len(real_x) / PAPER_REAL_COUNT)
    fake_x = torch.from_numpy(load_samples(Path(args.samples))[:fakes_used]) if fakes_used else None
    if fake_x is not None and len(fake_x) < fakes_used:
        raise ValueError(f"{args.samples} holds {len(fake_x)} samples, fewer than the {fakes_used} needed")
    test_x, test_y = data.load_prepared(args.prepared, "test")
    if cfg.test_limit:  # a stratified subset: the prepared test split is sorted by class
        keep = data.stratified_subset(test_y, cfg.test_limit // len(np.unique(test_y)), seed=0)
        test_x, test_y = test_x[keep], test_y[keep]
    test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    loader = MixedLoader(real_x.to(device), None if fake_x is None else fake_x.to(device),
                         batch_size=ssl_cfg.batch_size, sampler=cfg.sampler, seed=seed, device=device)

    # ---- model, views, loss
    encoder = to_device(resnet18(width=cfg.width), device)
    projector = to_device(simclr_projector(encoder.feature_dim, encoder.feature_dim, cfg.projection_dim), device)
    views = SimCLRViews(cfg.views)
    loss_fn = lambda z1, z2: nt_xent(z1, z2, cfg.temperature)  # noqa: E731
    # The linear head is trained on the 5k real images it was pre-trained on (paper Sec. 2).
    evaluate = lambda enc: linear_eval(enc, (real_x, real_y), (test_x, test_y), cfg.linear, device)  # noqa: E731

    resolved = {"scale": suite.scale, "fakes": args.fakes, "optimizer": args.optimizer, "seed": args.seed,
                "pretrain": config.to_dict(cfg), "ssl": config.to_dict(ssl_cfg)}
    checkpoint.fresh_start_if_config_changed(out, resolved)
    row = f"{args.optimizer}_fake{args.fakes}"
    with tracking.stage_logger(suite, "gan_simclr", f"pretrain/{row}/seed{args.seed}", resolved,
                               stage="pretrain", table="table1", row=row) as log:
        result = train_ssl(ssl_cfg, encoder, projector, views, loss_fn, loader, out_dir=out, logger=log,
                           device=device, evaluate=evaluate)
        acc = result.final["linear_test_acc"]
        metrics = {
            "paper": "gan_simclr", "table": "table1", "row": row, "scale": suite.scale, "seed": args.seed,
            "metrics": {"linear_eval_acc": acc},
            "fake_count": args.fakes, "fakes_used": fakes_used, "real_count": len(real_x),
            "optimizer": args.optimizer,
            "epochs": ssl_cfg.epochs, "steps": result.steps, "test_images": len(test_x),
            "curve": [{"epoch": h["epoch"], "linear_test_acc": h["linear_test_acc"]} for h in result.history],
            **tracking.provenance(),
        }
        log.log_metrics({"final/linear_eval_acc": acc})
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(f"{row} seed {args.seed}: linear eval {acc:.2f}% ({suite.scale})")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fakes", type=int, required=True, help="number of GAN samples added (0: baseline)")
    parser.add_argument("--optimizer", required=True, help="a key of pretrain.optimizers (adam, lars)")
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", default=None, help="npz of GAN samples (x: uint8 NCHW); needed if --fakes > 0")
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    parser.add_argument("--subset", default="data/subsets/cifar10_5k.npy")
    parser.add_argument("--params", type=Path, default=PARAMS)
    parser.add_argument("--suite-params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    if args.fakes > 0 and not args.samples:
        parser.error("--samples is needed when --fakes > 0")
    try:
        run(args)
    except (config.ConfigError, data.DataNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
