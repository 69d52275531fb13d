"""Stage `pretrain`: SimCLR on 5k real CIFAR-10 images plus k GAN samples, linear eval along the way.

    python -m papers.gan_simclr.pretrain --fakes 2500 --optimizer lars --seed 0 \
        --samples papers/gan_simclr/outputs/samples/fake_2500.npz \
        --out papers/gan_simclr/outputs/pretrain/lars_fake2500_seed0

Writes `<out>/metrics.json` (the final linear-eval accuracy and the curve, for the
report stage), `<out>/config.yaml` (the resolved config) and `<out>/checkpoint.pt`
(resumed if the stage is re-run after a kill with the same config). `--overrides FILE` merges a
params-shaped YAML over the pretrain section (a sweep's `best_params.yaml`). `shared.tune` runs
this stage in-process through :func:`sweep_stage`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from papers.gan_simclr.config import PARAMS, PretrainConfig
from shared import checkpoint, config, data, records, stage, tracking
from shared.cli import run_stage, stage_parser
from shared.device import pick_device, to_device
from shared.mixing import MixedLoader
from shared.methods import build_method
from shared.models import resnet18
from shared.provenance import provenance
from shared.trainers.linear_eval import linear_eval
from shared.trainers.ssl import OnEval, SSLResult, train_ssl
from shared.views import SimCLRViews

PAPER_REAL_COUNT = 5000  # the paper's small CIFAR-10 (Sec. 5)


def load_samples(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GAN samples not found; make them with "
                                f"`dvc repro papers/gan_simclr/dvc.yaml` (stage generate)")
    with np.load(path) as f:
        return f["x"]


def load_config(params: Path, scale: str, overrides: Path | Mapping | None = None) -> PretrainConfig:
    """The ``pretrain`` section of ``params`` at ``scale``, with ``overrides`` merged over it.

    ``overrides`` is a params-shaped mapping or YAML file (``{pretrain: {optimizers: {lars:
    {lr: 0.3}}}}``, e.g. a sweep's ``best_params.yaml``); its keys are checked like the
    params file's, and errors name the file they came from.
    """
    source = str(params)
    section = config.section_at_scale(config.load_yaml(params), "pretrain", scale, source)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            source = f"{overrides} (merged over {params})"
            overrides = config.load_yaml(overrides)
        if unknown := [k for k in overrides if k != "pretrain"]:
            raise config.ConfigError(f"{source}: unknown key '{unknown[0]}' (allowed: pretrain)")
        if not isinstance(overrides.get("pretrain") or {}, Mapping):
            raise config.ConfigError(f"{source}: key 'pretrain' must be a mapping")
        section = config.deep_merge(section, overrides.get("pretrain") or {})
    return config.build(PretrainConfig, section, source=source, prefix="pretrain.")


def pretrain(suite: config.SuiteConfig, cfg: PretrainConfig, *, fakes: int, optimizer: str, seed: int,
             out: Path, logger: tracking.Logger, samples: str | None = None,
             prepared: str = "data/prepared/cifar10", subset: str = "data/subsets/cifar10_5k.npy",
             on_eval: OnEval | None = None, progress: bool = True) -> tuple[SSLResult, records.MetricsRecord]:
    """Pre-train one setup and evaluate it; returns the trainer's result and its metrics record.

    ``on_eval(epoch, metrics)`` sees every linear evaluation (a sweep reports it to Optuna).
    """
    if optimizer not in cfg.optimizers:
        raise config.ConfigError(f"no optimiser 'pretrain.optimizers.{optimizer}' "
                                 f"(have: {', '.join(cfg.optimizers)})")
    ssl_cfg = cfg.optimizers[optimizer]
    device = pick_device(suite.device)
    run_seed = stage.run_seed(suite.seed, seed)
    checkpoint.seed_everything(run_seed)

    # ---- data: the 5k real subset, the GAN samples, the full test set
    real_x, real_y = data.load_prepared(prepared, "train")
    indices = data.load_indices(subset)
    real_x, real_y = torch.from_numpy(real_x[indices]), torch.from_numpy(real_y[indices])
    # Fake counts are the paper's, for its 5,000 real images; a smaller real set (smoke) keeps the
    # paper's fake:real ratios (0.5, 1, 2) with proportionally fewer fakes.
    fakes_used = round(fakes * len(real_x) / PAPER_REAL_COUNT)
    fake_x = torch.from_numpy(load_samples(Path(samples))[:fakes_used]) if fakes_used else None
    if fake_x is not None and len(fake_x) < fakes_used:
        raise ValueError(f"{samples} holds {len(fake_x)} samples, fewer than the {fakes_used} needed")
    test_x, test_y = data.load_prepared(prepared, "test")
    if cfg.test_limit:  # a stratified subset: the prepared test split is sorted by class
        keep = data.stratified_subset(test_y, cfg.test_limit // len(np.unique(test_y)), seed=0)
        test_x, test_y = test_x[keep], test_y[keep]
    test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    loader = MixedLoader(real_x.to(device), None if fake_x is None else fake_x.to(device),
                         batch_size=ssl_cfg.batch_size, sampler=cfg.sampler, seed=run_seed, device=device)

    # ---- model (encoder, then SimCLR's projector 512 -> 512 -> projection_dim), views
    encoder = to_device(resnet18(width=cfg.width), device)
    method = to_device(build_method("simclr", encoder, projection_dim=cfg.projection_dim,
                                    hidden_dim=encoder.feature_dim, temperature=cfg.temperature), device)
    views = SimCLRViews(cfg.views)
    # The linear head is trained on the 5k real images it was pre-trained on (paper Sec. 2).
    evaluate = lambda enc: linear_eval(enc, (real_x, real_y), (test_x, test_y), cfg.linear, device)  # noqa: E731

    row = f"{optimizer}_fake{fakes}"
    result = train_ssl(ssl_cfg, method, views, loader, out_dir=out, logger=logger, device=device,
                       evaluate=evaluate, on_eval=on_eval, progress=progress)
    acc = result.final["linear_test_acc"]
    record = records.MetricsRecord(
        paper="gan_simclr", stage="pretrain", scale=suite.scale, seed=seed, table="table1", row=row,
        metrics={"linear_eval_acc": acc}, provenance=provenance(device), extra={
            "fake_count": fakes, "fakes_used": fakes_used, "real_count": len(real_x), "optimizer": optimizer,
            "epochs": ssl_cfg.epochs, "steps": result.steps, "test_images": len(test_x),
            "curve": [{"epoch": h["epoch"], "linear_test_acc": h["linear_test_acc"]} for h in result.history]})
    logger.log_metrics({"final/linear_eval_acc": acc})
    return result, record


def run(args: argparse.Namespace) -> dict | None:
    st = stage.start("gan_simclr", "pretrain", suite_params=args.suite_params, out=args.out, trial=args.seed,
                     metrics=args.metrics, plots=args.plots)
    cfg = load_config(args.params, st.scale, args.overrides)
    if args.seed >= cfg.n_seeds:
        # The DVC matrix lists the paper's 3 seeds; smaller scales run only the first n_seeds.
        return st.skip(f"seed {args.seed} is not run at scale {st.scale} (n_seeds={cfg.n_seeds})")
    if args.optimizer not in cfg.optimizers:
        raise config.ConfigError(f"{args.params}: no optimiser 'pretrain.optimizers.{args.optimizer}'")

    resolved = {"fakes": args.fakes, "optimizer": args.optimizer, "seed": args.seed,
                "pretrain": config.to_dict(cfg), "ssl": config.to_dict(cfg.optimizers[args.optimizer])}
    if args.overrides is not None:
        resolved["overrides"] = str(args.overrides)
    row = f"{args.optimizer}_fake{args.fakes}"
    with st.tracked(resolved, f"pretrain/{row}/seed{args.seed}", table="table1", row=row) as log:
        _, record = pretrain(st.suite, cfg, fakes=args.fakes, optimizer=args.optimizer, seed=args.seed,
                             out=st.out, logger=log, samples=args.samples, prepared=args.prepared,
                             subset=args.subset)
        st.write(record)
        st.write_metrics(record.metrics)
        st.write_plot("linear_test_acc", record.extra["curve"], x="epoch")
    print(f"{row} seed {args.seed}: linear eval {record.metrics['linear_eval_acc']:.2f}% ({st.scale})")
    return record.to_dict()


# ---- the sweep's view of this stage (python -m shared.tune papers/gan_simclr/sweep.yaml)

@dataclasses.dataclass
class SweepArgs:
    """The fixed arguments of a swept run: the sweep file's `args` (the CLI's flags)."""
    fakes: int = 0
    optimizer: str = "lars"
    seed: int = 0
    samples: str | None = None
    prepared: str = "data/prepared/cifar10"
    subset: str = "data/subsets/cifar10_5k.npy"


def _sweep_resolve(scale: str, overrides: Mapping, args: SweepArgs) -> dict:
    cfg = load_config(PARAMS, scale, overrides)
    if args.optimizer not in cfg.optimizers:
        raise config.ConfigError(f"{PARAMS}: no optimiser 'pretrain.optimizers.{args.optimizer}'")
    if args.fakes > 0 and not args.samples:
        raise config.ConfigError(f"args: fakes={args.fakes} needs samples (an npz of GAN samples)")
    return {"pretrain": config.to_dict(cfg)}


def _sweep_run(suite: config.SuiteConfig, overrides: Mapping, args: SweepArgs, *, logger: tracking.Logger,
               report: Callable[[int, Mapping[str, float], bool], None]) -> dict[str, float]:
    cfg = load_config(PARAMS, suite.scale, overrides)
    epochs = cfg.optimizers[args.optimizer].epochs
    resolved = {"scale": suite.scale, **dataclasses.asdict(args), "pretrain": config.to_dict(cfg),
                "ssl": config.to_dict(cfg.optimizers[args.optimizer])}
    logger.log_params(resolved)
    logger.log_dict(resolved, "config.yaml")
    with tempfile.TemporaryDirectory(prefix="sweep_pretrain_") as out:  # a trial's checkpoints are not kept
        result, _ = pretrain(suite, cfg, fakes=args.fakes, optimizer=args.optimizer, seed=args.seed, out=Path(out),
                             logger=logger, samples=args.samples, prepared=args.prepared, subset=args.subset,
                             on_eval=lambda epoch, metrics: report(epoch, metrics, epoch == epochs), progress=False)
    return result.final


def sweep_stage():
    """This stage as `shared.tune` runs it (sweep.yaml: `stage: papers.gan_simclr.pretrain:sweep_stage`)."""
    from shared.tune.spec import SweepStage  # imported here: only sweeps need it

    return SweepStage(paper="gan_simclr", stage="pretrain", args_type=SweepArgs, resolve=_sweep_resolve,
                      run=_sweep_run)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--fakes", type=int, required=True, help="number of GAN samples added (0: baseline)")
    parser.add_argument("--optimizer", required=True, help="a key of pretrain.optimizers (adam, lars)")
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", default=None, help="npz of GAN samples (x: uint8 NCHW); needed if --fakes > 0")
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    parser.add_argument("--subset", default="data/subsets/cifar10_5k.npy")
    parser.add_argument("--overrides", type=Path, default=None,
                        help="params-shaped YAML merged over the pretrain section (e.g. a sweep's best_params.yaml)")
    parser.add_argument("--metrics", default=None,
                        help="the run's headline numbers for DVC (a flat JSON, outside --out)")
    parser.add_argument("--plots", default=None, help="the run's curve for DVC (a JSON list of rows, outside --out)")
    args = parser.parse_args(argv)
    if args.fakes > 0 and not args.samples:
        parser.error("--samples is needed when --fakes > 0")
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
