"""Stage `langevin`: idea #1's views, one Langevin chain per training image, precomputed once per chain.

    python -m papers.generative_prior.langevin --chain default --data papers/generative_prior/outputs/data \
        --energy papers/generative_prior/outputs/ebm/energy.pt --out papers/generative_prior/outputs/langevin/default \
        --metrics <flat json> --plots <json>

For every image x of the SSL training set (`data.load(data_dir, "train")`, row i = dataset index i): the
slides' start I_0 = beta x + (1 - beta) eps, eps ~ U(0, 1), then IGEBM's Langevin steps with the trained
energy (`ebm.langevin_chain`; the chain's settings are `langevin.chains.<chain>`), and the images after each
of the chain's `snapshots` steps, from that one chain. The randomness of row i (eps, and the noise of step k)
is a pure function of (the suite's run seed, i, k) (`ebm.counter_uniform` / `counter_normal`), so a view
does not depend on the batch size, the batch it ran in or the device, and every chain draws the same eps and
the same N(0, 1) draws (common random numbers: two chains differ only by their settings). A chain not in
`langevin.run_chains` at the scale writes a skip marker. Writes in `--out`:

- `step<k>.npy` (+ `.fingerprint.npy`, `.meta.json`) per snapshot k: uint8 (N, 3, 32, 32), row i made from
  training image i (`shared.view_sources.precomputed`; read with `PrecomputedViews(<out>/step<k>.npy)` and
  the loader's index); the chain continues in float, only the stored copy is rounded to uint8,
- `chain.png`: rows = `n_grid` training images (spread over the set), columns = x, I_0, then each snapshot
  after 0 steps,
- `metrics.json` (no table): per snapshot k (`*_step<k>`), the mean energy, the mean absolute pixel distance
  to I_0 (`dist_i0`) and to the clean image (`dist_x`), and the mean PSNR (dB) to the clean image; plus the
  mean energy of the clean images (`energy_clean`). A chain that only denoises I_0 lowers the energy and
  moves towards x (dist_x falls, PSNR rises); one that only adds noise moves away from both.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from papers.generative_prior import data as gp_data
from papers.generative_prior.config import PARAMS
from papers.generative_prior.ebm import (ChainConfig, LangevinConfig, counter_normal, counter_uniform, energies,
                                         interpolated_start, langevin_chain, load_energy, snapshot_file)
from shared import config
from shared.cli import run_stage, stage_parser
from shared.data import evenly_spaced
from shared.io import atomic_write
from shared.stage import start
from shared.trainers.gan import image_grid, png_bytes
from shared.view_sources.precomputed import write_precomputed

EPS_STREAM = 0  # the U(0, 1) of I_0; the noise of Langevin step k is stream k (k >= 1)
STATS = ("energy", "dist_i0", "dist_x", "psnr")  # per snapshot, means over the images (see the module doc)


def chain_views(energy, x: Tensor, rows: Tensor, chain: ChainConfig, seed: int) -> dict[int, Tensor]:
    """{k: float images after k steps} for each snapshot, and -1: I_0; x: float images in [0, 1] of dataset
    rows `rows` (on the energy's device). Row i's draws depend only on (seed, i): see the module doc."""
    shape = tuple(x.shape[1:])
    eps = counter_uniform(seed, rows, EPS_STREAM, shape)
    i0 = interpolated_start(x, chain.beta, eps=eps)
    out = langevin_chain(energy, i0, chain.steps, chain.step_lr, chain.noise_scale, chain.grad_clip,
                         snapshots=chain.snapshots, noise=lambda k: counter_normal(seed, rows, k, shape))
    return {-1: i0, **out}


def to_uint8(x: Tensor) -> Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def psnr(x: Tensor, ref: Tensor) -> Tensor:
    """Per-image PSNR (dB) of x against ref, both in [0, 1] (peak 1); an exact copy counts as 100 dB."""
    mse = (x - ref).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: argparse.Namespace) -> dict | None:
    stage = start("generative_prior", "langevin", suite_params=args.suite_params, out=args.out,
                  metrics=args.metrics, plots=args.plots)
    cfg = stage.section(LangevinConfig, args.params, "langevin")
    chain = cfg.chain(args.chain)
    if args.chain not in cfg.run_chains:
        return stage.skip(f"chain {args.chain} is not run at scale {stage.scale} (langevin.run_chains: "
                          f"{', '.join(cfg.run_chains)})")
    device = stage.device
    train_x, _ = gp_data.load(args.data, "train")
    energy = load_energy(args.energy, device)
    n = len(train_x)

    resolved = {"langevin": {"chain": args.chain, **config.to_dict(chain), "batch_size": cfg.batch_size},
                "data": str(args.data), "energy": str(args.energy), "energy_sha256": file_sha256(Path(args.energy))}
    with stage.tracked(resolved, f"langevin/{args.chain}", checkpointed=False) as log:
        views = {k: np.empty((n, *train_x.shape[1:]), np.uint8) for k in chain.snapshots}
        grid_rows = evenly_spaced(n, cfg.n_grid)
        shown = (-1, *(k for k in chain.snapshots if k != 0))  # chain.png's columns after x: I_0, then the steps
        grid_cols = {}  # k -> the grid rows' images after k steps (-1: I_0)
        sums = {f"{stat}_step{k}": 0.0 for k in chain.snapshots for stat in STATS}
        sums["energy_clean"] = 0.0
        for start_row in tqdm(range(0, n, cfg.batch_size), desc=f"langevin {args.chain}", unit="batch"):
            rows = torch.arange(start_row, min(start_row + cfg.batch_size, n))
            x = train_x[rows].to(device).float() / 255
            out = chain_views(energy, x, rows.to(device), chain, stage.seed)
            sums["energy_clean"] += float(energies(energy, x).sum())
            for k in chain.snapshots:
                xk = out[k]
                views[k][rows.numpy()] = to_uint8(xk).cpu().numpy()
                sums[f"energy_step{k}"] += float(energies(energy, xk).sum())
                sums[f"dist_i0_step{k}"] += float((xk - out[-1]).abs().flatten(1).mean(1).sum())
                sums[f"dist_x_step{k}"] += float((xk - x).abs().flatten(1).mean(1).sum())
                sums[f"psnr_step{k}"] += float(psnr(xk, x).sum())
            in_batch = grid_rows[(grid_rows >= rows[0]) & (grid_rows <= rows[-1])] - start_row
            for k in shown:
                grid_cols.setdefault(k, []).append(to_uint8(out[k][in_batch.to(device)]).cpu())
        metrics = {key: value / n for key, value in sums.items()}

        # ---- the views, one precomputed file per snapshot; the grid
        meta = {"chain": args.chain, **config.to_dict(chain), "seed": stage.seed, "energy": str(args.energy),
                "energy_sha256": resolved["energy_sha256"], "stage": "papers/generative_prior/dvc.yaml:langevin"}
        for k in chain.snapshots:
            write_precomputed(snapshot_file(stage.out, k), views[k], train_x, meta={**meta, "snapshot": k})
        columns = [train_x[grid_rows]] + [torch.cat(grid_cols[k]) for k in shown]
        grid = image_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns))
        atomic_write(stage.out / "chain.png", lambda f: f.write(png_bytes(grid)))
        log.log_image(grid, "chain.png")

        per_snapshot = [{"step": k, **{stat: metrics[f"{stat}_step{k}"] for stat in STATS}} for k in chain.snapshots]
        columns_shown = ["x", "I_0", *(f"step {k}" for k in shown[1:])]
        record = stage.record(metrics, chain=args.chain, settings=config.to_dict(chain), images=n,
                              grid_rows=grid_rows.tolist(), grid_columns=columns_shown,
                              per_snapshot=per_snapshot, seeding="counter-based: (run seed, dataset row, step)")
        stage.write(record, logger=log)
        stage.write_metrics(metrics)
        stage.write_plot("energy", per_snapshot)
    print(f"langevin {args.chain}: {n} images, snapshots {chain.snapshots}; " + ", ".join(
        f"step {r['step']}: E {r['energy']:.3g}, |x_k - x| {r['dist_x']:.3f}, PSNR {r['psnr']:.1f} dB"
        for r in per_snapshot))
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--chain", required=True, help="a key of langevin.chains")
    parser.add_argument("--data", type=Path, default=Path("papers/generative_prior/outputs/data"))
    parser.add_argument("--energy", type=Path, default=Path("papers/generative_prior/outputs/ebm/energy.pt"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="per-snapshot statistics as a flat JSON for DVC")
    parser.add_argument("--plots", type=Path, default=None, help="energy per snapshot for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
