"""Stage `generate`: k images from the GAN's G_ema (best FID checkpoint) as uint8 arrays and a PNG grid.

    python -m papers.gan_simclr.generate --count 2500 --gan papers/gan_simclr/outputs/gan \
        --out papers/gan_simclr/outputs/samples/fake_2500.npz

Writes `<out>` (array `x`: uint8 (k, 3, 32, 32)) and `<out>.png` (the first images as a grid).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from papers.gan_simclr.config import PARAMS, GANStageConfig, GenerateConfig
from shared import checkpoint, config, tracking
from shared.cli import run_stage, stage_parser
from shared.device import to_device
from shared.io import atomic_write
from shared.models.stylegan2 import stylegan2
from shared.stage import start
from shared.trainers.gan import image_grid, sample_images


def load_generator(gan_dir: Path, cfg: GANStageConfig, device: torch.device) -> torch.nn.Module:
    """G_ema from `best.pt` (lowest FID), else from the final checkpoint."""
    G, _ = stylegan2(cfg.architecture)
    best = checkpoint.load(gan_dir / "best.pt", map_location=device)
    state = best if best is not None else checkpoint.load(gan_dir / "checkpoint.pt", map_location=device)
    if state is None:
        raise FileNotFoundError(f"no GAN in {gan_dir} (best.pt or checkpoint.pt): run the train_gan stage first")
    G.load_state_dict(state["G_ema"])
    return to_device(G, device).eval()


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    stage = start("gan_simclr", "generate", suite_params=args.suite_params, out=out.parent)
    gan_cfg = stage.section(GANStageConfig, args.params, "gan")
    cfg = stage.section(GenerateConfig, args.params, "generate")
    G = load_generator(Path(args.gan), gan_cfg, stage.device)
    # Smaller scales use proportionally fewer fakes (pretrain.py); draw only what they use.
    n = max(1, round(args.count * cfg.count_scale))
    images = sample_images(G, n, cfg.batch_size, seed=cfg.seed + args.count, device=stage.device,
                           truncation_psi=cfg.truncation_psi)
    atomic_write(out, lambda f: np.savez(f, x=images.numpy()))
    grid = image_grid(images[:cfg.grid], nrow=int(cfg.grid ** 0.5))
    png = io.BytesIO()
    Image.fromarray(grid.numpy()).save(png, format="PNG")
    atomic_write(out.with_suffix(".png"), lambda f: f.write(png.getvalue()))
    resolved = {"scale": stage.scale, "count": args.count, **config.to_dict(cfg)}
    with tracking.stage_logger(stage.suite, "gan_simclr", f"generate/{args.count}", resolved,
                               stage="generate") as log:
        log.log_image(grid.numpy(), f"fake_{args.count}.png")
    print(f"generate: {n} samples for fake count {args.count} -> {out} ({stage.scale})")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--gan", default="papers/gan_simclr/outputs/gan")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
