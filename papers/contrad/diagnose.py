"""Image statistics of each GAN run's best G_ema beside the CIFAR-10 test set's (a diagnostic, not a stage).

    python -m papers.contrad.diagnose --train-dir papers/contrad/outputs/train --prepared data/prepared/cifar10 \
        --out papers/contrad/results/mini/diagnostics/image_stats.json

Why two FIDs can rank the same generators differently: ContraD's D sees every image through strong colour
jitter, so a G whose colours or texture drift may be penalised less than under a D that sees the images as they
are, and the in-domain extractor (at mini a 3-epoch CIFAR-10 classifier, 74% accurate) may care less about such
drift than Inception.
For every run folder under `--train-dir` holding `best.pt`, `--n` samples of that G_ema (the latent prior of
its config, sampling seed 0) and `--n` test images (a stratified draw, seed 0) get the same statistics
(:func:`image_stats`): per-channel mean and standard deviation of the pixel values in [0, 1], the mean HSV
saturation, the mean per-image standard deviation (contrast), the mean absolute difference between
neighbouring pixels (sharpness) and the mean absolute response of every 2x2 window to the checkerboard filter
[[1, -1], [-1, 1]] / 4 (checkerboard: the pixel-period pattern a strided transposed convolution leaves; 0 on any
image that is a sum of a row profile and a column profile, such as a ramp or an edge, and the amplitude a on a
checkerboard of +-a). `checkerboard_in_view` is the checkerboard statistic of one ContraD view of each image
(`train.views` at the scale: random-resized crop + flip, colour jitter, grayscale; seeded): how much of the
pattern ContraD's D, which sees every image only through that augmentation, is still shown.
Writes one JSON file: {"test": stats, "runs": {run: stats}, "n": n, "provenance": ...}, and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from papers.contrad.config import PARAMS, TrainStageConfig
from papers.contrad.models import build_models
from shared import checkpoint, config, data, records
from shared.io import atomic_write_text
from shared.provenance import provenance
from shared.trainers.gan import sample_images
from shared.views import SimCLRViewConfig, simclr_view

STATS = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation", "contrast", "sharpness",
         "checkerboard")


def _checkerboard(f: Tensor) -> float:
    """Mean absolute response of every 2x2 window of float images (..., H, W) to [[1, -1], [-1, 1]] / 4."""
    return ((f[..., :-1, :-1] - f[..., :-1, 1:] - f[..., 1:, :-1] + f[..., 1:, 1:]).abs() / 4).mean().item()


def image_stats(x: Tensor) -> dict[str, float]:
    """Statistics of uint8 RGB images (N, 3, H, W), pixel values scaled to [0, 1] (module docstring)."""
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
    f = x.double() / 255
    channel_mean, channel_std = f.mean(dim=(0, 2, 3)), f.std(dim=(0, 2, 3))
    high, low = f.amax(dim=1), f.amin(dim=1)
    saturation = torch.where(high > 0, (high - low) / high.clamp(min=1e-12), torch.zeros_like(high))
    neighbours = torch.cat([(f[..., 1:, :] - f[..., :-1, :]).abs().flatten(1),
                            (f[..., :, 1:] - f[..., :, :-1]).abs().flatten(1)], dim=1)
    values = [*channel_mean.tolist(), *channel_std.tolist(), saturation.mean().item(),
              f.flatten(1).std(dim=1).mean().item(), neighbours.mean().item(), _checkerboard(f)]
    return dict(zip(STATS, values, strict=True))


def checkerboard_in_view(x: Tensor, views: SimCLRViewConfig, seed: int = 0) -> float:
    """The checkerboard statistic of one SimCLR view (`views`) per uint8 image, drawn from `seed`."""
    view = simclr_view(x.float() / 255, views, generator=torch.Generator().manual_seed(seed))
    return _checkerboard((view * 255).round().double() / 255)  # the view quantised to uint8 levels, as samples are


def run_samples(run_dir: Path, n: int, device: torch.device) -> Tensor | None:
    """`n` uint8 samples of the run's best G_ema (None: no best.pt, e.g. a D-only run)."""
    best = checkpoint.load(run_dir / "best.pt", map_location=device)
    if best is None:
        return None
    record = records.read(run_dir / "metrics.json")
    trained, cfg = record.extra, config.load_section(TrainStageConfig, PARAMS, "train", record.scale)
    G, _ = build_models(trained["architecture"], trained["method"], cfg)
    G.load_state_dict(best["G_ema"])
    prior = trained.get("latent_prior") or cfg.architectures[trained["architecture"]].latent_prior
    return sample_images(G.to(device), n, batch_size=250, seed=0, device=device, latent_prior=prior)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-dir", type=Path, required=True, help="the train stage's run folders")
    parser.add_argument("--prepared", type=Path, required=True, help="the prepared CIFAR-10 (its test split)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--n", type=int, default=2000, help="samples per run and test images")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    x, y = data.load_prepared(args.prepared, "test")  # in class order: a stratified draw, as evaluate's subsets
    test = torch.from_numpy(x[data.stratified_subset(y, args.n // len(np.unique(y)), seed=0)])
    views = config.load_section(TrainStageConfig, PARAMS, "train", config.load_suite().scale).views
    result = {"n": args.n, "views": dataclasses.asdict(views),
              "test": {**image_stats(test), "checkerboard_in_view": checkerboard_in_view(test, views)}, "runs": {}}
    for run_dir in sorted(p for p in args.train_dir.iterdir() if (p / "metrics.json").is_file()):
        samples = run_samples(run_dir, args.n, device)
        if samples is not None:
            result["runs"][run_dir.name] = {**image_stats(samples),
                                            "checkerboard_in_view": checkerboard_in_view(samples, views)}
    if not result["runs"]:
        raise SystemExit(f"error: no run folder under {args.train_dir} holds best.pt")
    result["provenance"] = provenance()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    columns = (*STATS, "checkerboard_in_view")
    print("| images | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, stats in [("CIFAR-10 test", result["test"]), *result["runs"].items()]:
        print(f"| {name} | " + " | ".join(f"{stats[k]:.4f}" for k in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
