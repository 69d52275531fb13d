"""Stage `prepare`: the SSL training set and the test set, as one folder every later stage reads.

    python -m papers.generative_prior.prepare --prepared data/prepared/cifar10 \
        --out papers/generative_prior/outputs/data

Reads the suite's prepared CIFAR-10 (`prepare@cifar10`; the slides name no dataset: CIFAR-10 is the
package's assumption) and section `data` of the paper's params.yaml. Writes, each atomically:
`<out>/train.npz` and `<out>/test.npz` (see :mod:`papers.generative_prior.data`), `<out>/meta.json` (counts,
the subset rule and seed, the SHA-256 of the prepared files read) and `<out>/metrics.json` (the stage's record).
Nothing is drawn from the run seed: the output depends on the data and on `data` only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from papers.generative_prior import data as gp_data
from papers.generative_prior.config import PARAMS, DataConfig
from shared import config, data
from shared.cli import run_stage, stage_parser
from shared.io import atomic_write_many
from shared.stage import start


def select(y: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Rows of a stratified subset with ``per_class`` images of every class (all rows for None)."""
    return np.arange(len(y), dtype=np.int64) if per_class is None else data.stratified_subset(y, per_class, seed)


def run(args: argparse.Namespace) -> dict:
    stage = start("generative_prior", "prepare", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    cfg = stage.section(DataConfig, args.params, "data")
    splits = {}
    for split, per_class, seed in (("train", cfg.per_class, cfg.subset_seed),
                                   ("test", cfg.test_per_class, cfg.subset_seed + 1)):
        x, y = data.load_prepared(args.prepared, split)
        rows = select(y, per_class, seed)
        splits[split] = (x[rows], y[rows], rows)
    counts = {s: len(y) for s, (_, y, _) in splits.items()}
    meta = {"dataset": "CIFAR-10 (assumed: the slides name no dataset)", "counts": counts,
            "per_class": {s: np.bincount(y).tolist() for s, (_, y, _) in splits.items()},
            "subset": {"rule": "shared.data.stratified_subset per class; test drawn with subset_seed + 1",
                       **config.to_dict(cfg)},
            "source": {"path": str(args.prepared),
                       "sha256": {f"{s}.npz": data.sha256_file(Path(args.prepared) / f"{s}.npz") for s in splits}}}
    resolved = {"data": config.to_dict(cfg), "prepared": str(args.prepared)}
    with stage.tracked(resolved, "prepare", checkpointed=False) as log:
        text = (json.dumps(meta, indent=2) + "\n").encode()
        writers = {gp_data.split_file(stage.out, s): (lambda f, x=x, y=y, rows=rows: gp_data.save(x, y, rows, f))
                   for s, (x, y, rows) in splits.items()}
        atomic_write_many({**writers, stage.out / "meta.json": lambda f: f.write(text)})
        metrics = {"train_images": counts["train"], "test_images": counts["test"]}
        stage.write(stage.record(metrics, counts=counts, subset=meta["subset"], source=meta["source"]), logger=log)
        stage.write_metrics(metrics)
    print(f"prepare: {counts['train']} training / {counts['test']} test images -> {stage.out} ({stage.scale})")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/cifar10"),
                        help="the prepared CIFAR-10 (stage prepare@cifar10)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="the counts as a flat JSON for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
