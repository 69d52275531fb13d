"""Stages of the top-level dvc.yaml: prepared uint8 arrays and the seeded subsets.

    python -m shared.prepare dataset cifar10 --out data/prepared/cifar10
    python -m shared.prepare subset cifar10_5k --prepared data/prepared/cifar10 --out data/subsets/cifar10_5k.npy

Settings come from the top-level params.yaml (``scale``, ``data``, ``prepare``); paths
are relative to the working folder, which DVC sets to the repository root.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from shared import config, data, tracking
from shared.cli import add_debug_argument, run_stage

@dataclasses.dataclass
class SubsetSpec:
    dataset: str = "cifar10"
    split: str = "train"
    per_class: int = 500  # the default subset: 5k CIFAR-10 train images, 500 per class
    seed: int = 0


@dataclasses.dataclass
class PrepareConfig:
    limit_per_class: int | None = None  # keep only the first k images per class (smoke scale)
    subsets: dict[str, SubsetSpec] = dataclasses.field(
        default_factory=lambda: {"cifar10_5k": SubsetSpec()})


def prepare_dataset(name: str, params: Path, out: Path) -> None:
    suite = config.load_suite(params)
    cfg = config.load_section(PrepareConfig, params, "prepare", suite.scale)
    resolved = {"scale": suite.scale, "dataset": name, "data": config.to_dict(suite.data), **config.to_dict(cfg)}
    with tracking.stage_logger(suite, "data", f"prepare/{name}", resolved, stage="prepare", dataset=name) as log:
        meta = data.prepare(name, out, path=suite.data.paths.get(name), download_dir=suite.data.download_dir,
                            limit_per_class=cfg.limit_per_class)
        config.save_resolved(resolved, out / "config.yaml")
        log.log_dict(meta, "meta.json")
    print(f"{name}: {meta}")


def make_subset(name: str, params: Path, prepared: Path, out: Path) -> None:
    suite = config.load_suite(params)
    cfg = config.load_section(PrepareConfig, params, "prepare", suite.scale)
    if name not in cfg.subsets:
        raise config.ConfigError(f"{params}: no subset 'prepare.subsets.{name}' (have: {', '.join(cfg.subsets)})")
    spec = cfg.subsets[name]
    resolved = {"scale": suite.scale, **config.to_dict(spec)}
    with tracking.stage_logger(suite, "data", f"subset/{name}", resolved, stage="subset", subset=name):
        _, labels = data.load_prepared(prepared, spec.split)
        indices = data.stratified_subset(labels, spec.per_class, spec.seed)
        data.save_indices(out, indices, resolved)
    print(f"{name}: {len(indices)} indices of {spec.dataset}/{spec.split} ({spec.per_class} per class, seed {spec.seed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["dataset", "subset"])
    parser.add_argument("name", help="dataset (cifar10, mnist, omniglot, tinyimagenet100) or subset name from "
                                     "prepare.subsets")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="output folder (dataset) or .npy file (subset)")
    parser.add_argument("--prepared", type=Path, help="subset: the prepared dataset folder it indexes")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.what == "subset" and args.prepared is None:
        parser.error("subset needs --prepared")
    if args.what == "dataset":
        return run_stage(lambda: prepare_dataset(args.name, args.params, args.out), debug=args.debug)
    return run_stage(lambda: make_subset(args.name, args.params, args.prepared, args.out), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
