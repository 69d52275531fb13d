"""Stage `prepare`: X_p, the Omniglot drawer split and the dotted copies, as one file every later stage reads.

    python -m papers.augmentation_generator.prepare --mnist data/prepared/mnist \
        --omniglot data/prepared/omniglot --out papers/augmentation_generator/outputs/data

Reads the suite's prepared MNIST (`prepare@mnist`) and Omniglot (`prepare@omniglot`) and section `data` of
the paper's params.yaml. Writes, each atomically:

- `<out>/splits.npz`: the arrays of :class:`papers.augmentation_generator.data.Splits` (read them with
  `data.load_splits(<out>)`);
- `<out>/meta.json`: counts, the drawer split rule, the dots config and statistics, the ink polarity of
  X_p and of Omniglot (clean, dotted), the resize, and the SHA-256 of the prepared files read;
- `<out>/dots_grid.png`: fine-tuning images, each clean one followed by its dotted copy;
- `<out>/metrics.json`: the stage's record (counts and ink statistics as metrics, no table), and with
  `--metrics` the same numbers as a flat JSON for DVC.

Everything runs on the CPU and nothing is drawn from the run seed: the output depends on the data and on
`data` (its `split_seed` and `dots.seed`) only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from papers.augmentation_generator import data as ag_data
from papers.augmentation_generator.config import PARAMS, DataConfig
from shared import config, data
from shared.cli import run_stage, stage_parser
from shared.io import atomic_write_many
from shared.stage import start
from shared.trainers.gan import image_grid, png_bytes

GRID_PAIRS = 24  # clean / dotted pairs in dots_grid.png, four pairs per row
GRID_ZOOM = 3  # nearest-neighbour zoom of the 28 x 28 images in the grid


def dots_grid(splits: ag_data.Splits, pairs: int = GRID_PAIRS, zoom: int = GRID_ZOOM) -> bytes:
    """PNG of ``pairs`` fine-tuning images spread over the characters, each clean one beside its dotted copy."""
    at = torch.from_numpy(np.unique(np.linspace(0, len(splits.fine_y) - 1, pairs).round().astype(np.int64)))
    images = torch.stack([splits.fine_clean[at], splits.fine_dotted[at]], dim=1).flatten(0, 1)
    images = images.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    return png_bytes(image_grid(images, nrow=8))


def _source(prepared: Path, splits: tuple[str, ...]) -> dict:
    """Where a prepared dataset came from: its files' SHA-256 and the archives its own meta.json names."""
    try:
        archives = json.loads((prepared / "meta.json").read_text())["source"]["archives"]
    except (OSError, ValueError, KeyError, TypeError):
        archives = None
    return {"path": str(prepared), "archives": archives,
            "sha256": {f"{s}.npz": data.sha256_file(prepared / f"{s}.npz") for s in splits}}


def describe(splits: ag_data.Splits, cfg: DataConfig, n_background: int) -> tuple[dict, dict[str, float]]:
    """``(meta, metrics)`` of the splits: counts, split rule, dots, polarity (checked: ink bright on 0)."""
    per_char = {name: np.bincount(y.numpy(), minlength=splits.n_classes)
                for name, y in (("fine", splits.fine_y), ("test", splits.test_y))}
    count, _, _ = ag_data.dot_layout(splits.fine_index.numpy(), cfg.dots, *splits.fine_clean.shape[-2:])
    changed = float((splits.fine_dotted != splits.fine_clean).float().mean())
    polarity = {"xp": ag_data.check_polarity(splits.xp, "X_p (MNIST train"
                                             + (" + Omniglot background)" if cfg.background_in_xp else ")")),
                "omniglot_fine_clean": ag_data.check_polarity(splits.fine_clean, "Omniglot (resized)"),
                "omniglot_fine_dotted": ag_data.polarity(splits.fine_dotted)}
    counts = {"xp": len(splits.yp), "xp_classes": int(splits.yp.max()) + 1 if len(splits.yp) else 0,
              "characters": splits.n_classes, "background_characters": n_background,
              "split_characters": int(splits.fine_y.unique().numel()),
              "fine": len(splits.fine_y), "test": len(splits.test_y),
              "fine_per_character": sorted(set(per_char["fine"].tolist())),
              "test_per_character": sorted(set(per_char["test"].tolist()))}
    drawers = (splits.fine_index % ag_data.DRAWERS).reshape(-1, cfg.fine_drawers)
    meta = {
        "counts": counts,
        "split": {"rule": cfg.drawer_split, "fine_drawers": cfg.fine_drawers,
                  "split_seed": cfg.split_seed if cfg.drawer_split == "seeded" else None,
                  "fine_drawers_of_first_characters": drawers[:5].tolist(),
                  "index": "position in background + evaluation, character-major: drawer = index % 20, "
                           "character = index // 20"},
        "resize": {"from": ag_data.OMNIGLOT_SIZE, "to": cfg.size,
                   "method": "exact area average (box filter with fractional pixel overlaps), rounded"},
        "dots": {**config.to_dict(cfg.dots), "mean_count": float(count.mean()), "min_count": int(count.min()),
                 "max_count": int(count.max()), "fine_pixels_changed": changed},
        "polarity": polarity,
        "pretrain_set": cfg.pretrain_set, "pretrain_limit_per_class": cfg.pretrain_limit_per_class,
        "background_in_xp": cfg.background_in_xp,
        "omniglot_limit_characters": cfg.omniglot_limit_characters,
    }
    metrics = {"xp_images": counts["xp"], "characters": counts["split_characters"], "fine_images": counts["fine"],
               "test_images": counts["test"], "dots_mean_count": meta["dots"]["mean_count"],
               "dots_fine_pixels_changed": changed, "ink_fraction_xp": polarity["xp"]["ink_fraction"],
               "ink_fraction_omniglot": polarity["omniglot_fine_clean"]["ink_fraction"],
               "ink_fraction_omniglot_dotted": polarity["omniglot_fine_dotted"]["ink_fraction"]}
    return meta, metrics


def write_outputs(out: Path, splits: ag_data.Splits, meta: dict, grid: bytes) -> None:
    """splits.npz, meta.json and dots_grid.png, all staged as temp files before the first is replaced."""
    text = (json.dumps(meta, indent=2) + "\n").encode()
    writers = {ag_data.SPLITS_FILE: lambda f: ag_data.save_splits(splits, f),
               "meta.json": lambda f: f.write(text), "dots_grid.png": lambda f: f.write(grid)}
    atomic_write_many({out / name: write for name, write in writers.items()})


def run(args: argparse.Namespace) -> dict:
    stage = start("augmentation_generator", "prepare", suite_params=args.suite_params, out=args.out,
                  metrics=args.metrics)
    cfg = stage.section(DataConfig, args.params, "data")
    began = time.perf_counter()
    xp, yp = ag_data.load_pretrain(args.mnist, cfg)
    omniglot, labels, index, n_background = ag_data.load_omniglot(args.omniglot, cfg.size,
                                                                  cfg.omniglot_limit_characters)
    splits = ag_data.build_splits(xp, yp, omniglot, labels, index, cfg, n_background)
    meta, metrics = describe(splits, cfg, n_background)
    meta["sources"] = {"mnist": _source(Path(args.mnist), ("train",)),
                       "omniglot": _source(Path(args.omniglot), ag_data.OMNIGLOT_SPLITS)}
    resolved = {"data": config.to_dict(cfg), "mnist": str(args.mnist), "omniglot": str(args.omniglot)}
    with stage.tracked(resolved, "prepare", checkpointed=False) as log:
        grid = dots_grid(splits)
        write_outputs(stage.out, splits, meta, grid)
        record = stage.record(metrics, counts=meta["counts"], split=meta["split"], dots=meta["dots"],
                              polarity=meta["polarity"], seconds=round(time.perf_counter() - began, 2))
        stage.write(record, logger=log)
        stage.write_metrics(metrics)
        log.log_dict(meta, "meta.json")
    c = meta["counts"]
    print(f"prepare: X_p {c['xp']} images; Omniglot {c['split_characters']} characters -> fine {c['fine']} / test "
          f"{c['test']} ({cfg.drawer_split} {cfg.fine_drawers} drawers); {meta['dots']['mean_count']:.1f} dots per "
          f"image -> {stage.out} ({stage.scale}, {time.perf_counter() - began:.1f} s)")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--mnist", type=Path, default=Path("data/prepared/mnist"),
                        help="the prepared MNIST (stage prepare@mnist)")
    parser.add_argument("--omniglot", type=Path, default=Path("data/prepared/omniglot"),
                        help="the prepared Omniglot (stage prepare@omniglot)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None,
                        help="the counts as a flat JSON for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
