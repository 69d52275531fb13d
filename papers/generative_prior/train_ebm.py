"""Stage `train_ebm`: idea #1's energy-based model, trained once on the SSL training set (unlabelled).

    python -m papers.generative_prior.train_ebm --data papers/generative_prior/outputs/data \
        --out papers/generative_prior/outputs/ebm --metrics <flat json> --plots <json>

IGEBM's contrastive divergence with a replay buffer (`ebm.train_ebm`), section `ebm` of params.yaml
(`ebm.EBMConfig`: IGEBM's CIFAR-10 protocol at scale paper, spec 3.D's small ConvNet at mini). The stage has no
seed matrix: it runs once with the suite seed. Writes in `--out`:

- `energy.pt`: the final weights with the architecture and config (`ebm.load_energy`),
- `checkpoint.pt`: net, Adam, replay buffer, iteration, loader position, RNGs (resumed after a kill),
- `samples.png`: a grid of the `n_sample_grid` newest replay-buffer images (the model's samples),
- `buffer.npz`: the whole replay buffer, oldest first, as uint8 `images` (N, 3, 32, 32),
- `metrics.json` (no table): the last log interval's loss, E+ and E- means, and the energy check: mean
  energies of held-out real images (the test split), of buffer samples and of U(0, 1) noise, each on
  `n_check` images, with the AUCs of telling them apart by energy (`auc_real_vs_noise` near 1 means the model
  gives real images clearly lower energy than noise); the training curve in `history`.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from papers.generative_prior import data as gp_data
from papers.generative_prior.config import PARAMS
from papers.generative_prior.ebm import EBMConfig, auc, build_energy, energies, save_energy, train_ebm
from shared import config
from shared.cli import run_stage, stage_parser
from shared.data import DeviceLoader
from shared.device import to_device
from shared.io import atomic_write
from shared.stage import start
from shared.trainers.gan import image_grid, png_bytes

CHECK_SEED = 0  # the U(0, 1) images of the energy check


def energy_check(energy, test_x: torch.Tensor, buffer_images: torch.Tensor, n: int) -> dict[str, float]:
    """Mean energies of real (held-out, spread over the test split), buffer (the newest) and U(0, 1) images (n of
    each at most), and the AUCs of telling real from noise, real from buffer and buffer from noise by energy
    (lower energy = judged more real). `test_x` and `buffer_images` are uint8 (N, C, H, W), oldest buffer row
    first; the energy sees all three in [0, 1]."""
    for name, x in (("test_x", test_x), ("buffer_images", buffer_images)):
        if x.dtype != torch.uint8:
            raise ValueError(f"energy_check: {name} must be uint8 images, got {x.dtype}")
    real = test_x[torch.linspace(0, len(test_x) - 1, min(n, len(test_x))).round().long().unique()].float() / 255
    buffer = buffer_images[-n:].float().cpu() / 255  # the newest samples
    noise = torch.rand(n, *real.shape[1:], generator=torch.Generator().manual_seed(CHECK_SEED))
    e = {name: energies(energy, images) for name, images in (("real", real), ("buffer", buffer), ("noise", noise))}
    return {"e_real_test": float(e["real"].mean()), "e_buffer": float(e["buffer"].mean()),
            "e_noise": float(e["noise"].mean()),
            "auc_real_vs_noise": auc(e["real"], e["noise"]),  # P(E(real) < E(noise))
            "auc_real_vs_buffer": auc(e["real"], e["buffer"]),  # 0.5: samples as likely as data
            "auc_buffer_vs_noise": auc(e["buffer"], e["noise"])}


def run(args: argparse.Namespace) -> dict:
    stage = start("generative_prior", "train_ebm", suite_params=args.suite_params, out=args.out,
                  metrics=args.metrics, plots=args.plots)
    cfg = stage.section(EBMConfig, args.params, "ebm")
    device = stage.device
    train_x, train_y = gp_data.load(args.data, "train")
    test_x, _ = gp_data.load(args.data, "test")
    if len(train_x) < cfg.batch_size:
        raise ValueError(f"the training set holds {len(train_x)} images, fewer than ebm.batch_size={cfg.batch_size}")
    loader = DeviceLoader(train_x, train_y, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                          seed=stage.seed, device=device)
    energy = to_device(build_energy(cfg.arch, cfg.width), device)

    resolved = {"ebm": config.to_dict(cfg), "data": str(args.data)}
    with stage.tracked(resolved, "train_ebm") as log:
        result = train_ebm(cfg, energy, loader, out_dir=stage.out, logger=log, device=device)
        save_energy(stage.out / "energy.pt", energy, cfg, result.steps)
        stored = (result.buffer.stored() * 255).round().to(torch.uint8).cpu()
        atomic_write(stage.out / "buffer.npz", lambda f: np.savez(f, images=stored.numpy()))
        newest = stored[-cfg.n_sample_grid:]
        grid = image_grid(newest, nrow=math.ceil(math.sqrt(len(newest))))
        atomic_write(stage.out / "samples.png", lambda f: f.write(png_bytes(grid)))
        log.log_image(grid, "samples.png")

        last = result.history[-1]
        headline = {"loss": last["loss"], "e_pos": last["e_pos"], "e_neg": last["e_neg"],
                    **energy_check(energy, test_x, stored, cfg.n_check)}
        record = stage.record(headline, arch=cfg.arch, width=cfg.width, steps=result.steps,
                              langevin_steps=cfg.langevin_steps, batch_size=cfg.batch_size,
                              buffer_images=len(stored), train_images=len(train_x),
                              train_seconds=round(result.train_seconds), check_images=cfg.n_check,
                              history=result.history)
        stage.write(record, logger=log)
        stage.write_metrics(headline)
        stage.write_plot("loss", result.history)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in headline.items())
    print(f"train_ebm: {result.steps} iterations; {shown} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--data", type=Path, default=Path("papers/generative_prior/outputs/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    parser.add_argument("--plots", type=Path, default=None, help="the loss curve for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
