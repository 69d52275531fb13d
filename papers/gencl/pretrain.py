"""Stage `pretrain`: one VICReg run of GenCL's registry (`runs.py`), with the generated views at rate gamma.

    python -m papers.gencl.pretrain --run noise_g0p25 --seeds 0 1 2 --params papers/gencl/params.yaml \
        --prepared data/prepared/tinyimagenet100 [--indices data/subsets/tinyimagenet100_ssl10k.npy] \
        [--noise <noise_augment's folder>] [--mask <mask_augment's folder>] \
        --out papers/gencl/outputs/pretrain/noise_g0p25 \
        [--metrics <flat json for DVC>] [--plots <loss curves for DVC>]

(the DVC stage: seed i in ``<out>/seed<i>``, one process per run; ``--seed i`` instead runs one seed in ``--out``
itself.)

The SSL training set is the prepared train split, or its rows ``--indices`` in that order (row i of the SSL set =
the i-th index). The precomputed augmentations (``--noise`` / ``--mask``: the augment stage's folder or its
``.npy``) hold one generated image per SSL-set row, in that order; every row is checked against its source image
once at the start and every lookup again (`shared.view_sources.PrecomputedViews`'s fingerprints), so a shuffled
or misaligned file is refused instead of pairing images with other images' augmentations (spec 1.F risk 13). A
run reads only its own generator's file; a missing one is a one-line error naming the path and the stage.

Method (spec 1.C, VICReg's official ``main_vicreg.py``): a ResNet (`shared.models.resnet`; the ImageNet stem by
default, `papers.gencl.encoder`) with zero-initialised residual branches, the expander ``pretrain.vicreg.mlp``
(8192-8192-8192 in the paper), `shared.losses.vicreg` (sim_coeff 25, std_coeff 25, cov_coeff 1), LARS (eta 0.001,
momentum 0.9, weight decay 1e-6, 1-D parameters excluded) at lr = base_lr x batch / 256 with a linear warm-up
and a cosine decay, `shared.trainers.ssl` (checkpoint and resume).

Views (every convention the paper leaves open is a key of ``pretrain.views``, recorded in the results):
VICReg's asymmetric pair at ``image_size`` (`shared.view_sources.vicreg_pipelines`); for gamma > 0,
`shared.view_sources.GammaMix`: an independent Bernoulli(gamma) draw per sample per step (``gamma_sampling``)
replaces the input of the ``generated_branch`` (second: view R is VICReg's view 1, blur p 1.0, solarisation 0)
by the precomputed generated image, followed by T^G = ``generated_ops`` (crop, flip, jitter, solarisation) with
the parameters of ``generated_params_from`` (view 2: solarisation p 0.2). Gamma 0 is VICReg's
`ClassicViews` itself. Table 1's pairwise runs put their single family on both branches
(``pairwise_branches: both``, spec 1.C PROPOSE: view 1's probabilities on R, view 2's on G) or on the generated
branch only (``generated``; R is then the image itself).

Writes in each seed's folder: ``encoder.pt`` (read with `papers.gencl.encoder.load_encoder`), ``metrics.json``
(table ``pretrain``, row = the run: ``final_loss``, with ``curve``, ``run``, ``conventions``, ``steps``, ...),
``loss_curve.json`` (kept across a resume), ``checkpoint.pt``, ``config.yaml``. A seed at or beyond
``runs.n_seeds``, or a run not in ``pretrain.run_names``, writes the skip marker instead. ``--metrics`` (flat,
for DVC): ``final_loss``, or with ``--seeds`` ``seed<i>/final_loss`` per seed that ran; ``--plots``: the loss
per logged step, with ``--seeds`` one ``seed<i>`` column per seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch

from papers.gencl.encoder import ENCODER_FILE, EncoderConfig, build_encoder, save_encoder
from papers.gencl.runs import GENERATED_OPS, RUN_NAMES, Run, get_run
from shared import config
from shared.cli import run_stage, stage_parser
from shared.config import RunsConfig
from shared.data import DeviceLoader, load_indices, load_prepared
from shared.device import to_device
from shared.io import atomic_write_text
from shared.methods import build_method
from shared.optim import vicreg_lr
from shared.stage import start, write_seed_files
from shared.trainers.ssl import SSLConfig, train_ssl
from shared.view_sources import (ClassicViews, GammaMix, GammaMixConfig, PipelineConfig, PrecomputedViews,
                                 vicreg_pipelines)
from shared.views import blur_kernel_size

PARAMS = Path(__file__).with_name("params.yaml")
CURVE_FILE = "loss_curve.json"
# The stages that write each generator's precomputed augmentations (papers/gencl/dvc.yaml) and the file in
# their output folder.
AUGMENT_STAGES = {"noise": "papers/gencl/dvc.yaml:noise_augment", "mask": "papers/gencl/dvc.yaml:mask_augment"}
AUGMENT_FILES = {"noise": "noise.npy", "mask": "mask.npy"}


# ---------------------------------------------------------------- config

@dataclasses.dataclass
class VICRegConfig:
    """The expander and the loss's coefficients, by the official names (``--mlp``, ``--sim-coeff``, ...)."""
    mlp: str = "8192-8192-8192"
    sim_coeff: float = 25.0  # lambda
    std_coeff: float = 25.0  # mu
    cov_coeff: float = 1.0  # nu


@dataclasses.dataclass
class OptimConfig:
    """LARS with the official warm-up + cosine. Paper: batch 800, 100 epochs (GenCL's changes to VICReg's
    protocol); base_lr 0.3 is the official 100-epoch command's (README; the script's default 0.2 belongs to the
    1,000-epoch recipe), so lr = 0.3 x 800 / 256 = 0.9375 (spec 1.C)."""
    epochs: int = 100
    batch_size: int = 800
    base_lr: float = 0.3  # per 256 images
    weight_decay: float = 1e-6
    eta: float = 0.001
    momentum: float = 0.9
    warmup_epochs: float = 10.0
    checkpoint_every: int = 1
    log_every: int = 10  # steps between loss points (the curve)
    sync_batchnorm: bool = True  # under torchrun (the official runs use SyncBN); nothing on one process

    def __post_init__(self):
        if self.base_lr <= 0:
            raise ValueError(f"optim.base_lr must be > 0, got {self.base_lr}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"optim.warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}")

    @property
    def lr(self) -> float:
        return vicreg_lr(self.batch_size, self.base_lr)

    def ssl(self) -> SSLConfig:
        """The shared trainer's config: LARS, cosine, no evaluation inside pre-training (the evaluate stage's)."""
        return SSLConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer="lars", lr=self.lr,
                         momentum=self.momentum, weight_decay=self.weight_decay, eta=self.eta,
                         warmup_epochs=self.warmup_epochs, schedule="cosine", eval_every=self.epochs,
                         checkpoint_every=self.checkpoint_every, log_every=self.log_every,
                         sync_batchnorm=self.sync_batchnorm)


@dataclasses.dataclass
class ViewsConfig:
    """How views are made: the conventions the paper leaves open (spec 1.C, 1.F risks 1, 2, 11)."""
    image_size: int = 224  # the crops' output side (RandomResizedCrop(224) in the paper; 64 on Tiny-ImageNet)
    gamma_sampling: Literal["bernoulli_per_sample_per_step"] = "bernoulli_per_sample_per_step"
    generated_branch: Literal["first", "second"] = "second"  # whose input the generated image replaces
    generated_ops: tuple[str, ...] = GENERATED_OPS  # T^G (the paper: crop, flip, solarisation, colour jitter)
    generated_params_from: Literal["first", "second"] = "second"  # the VICReg view whose parameters T^G takes
    pairwise_branches: Literal["both", "generated"] = "both"  # Table 1: the family on both branches or on G only
    blur_kernel_frac: float = 0.1  # blur kernel side / image side (PIL's blur has no kernel size; risk 11)

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"views.image_size must be >= 1, got {self.image_size}")
        self.generated_ops = tuple(self.generated_ops)
        PipelineConfig().only(*self.generated_ops)  # names checked: an unknown op is an error naming it
        if not self.blur_kernel_frac > 0:
            raise ValueError(f"views.blur_kernel_frac must be > 0, got {self.blur_kernel_frac}")


@dataclasses.dataclass
class PretrainConfig:
    """Section ``pretrain`` of papers/gencl/params.yaml (defaults: the paper's protocol)."""
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    vicreg: VICRegConfig = dataclasses.field(default_factory=VICRegConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    run_names: list[str] = dataclasses.field(default_factory=lambda: list(RUN_NAMES))  # run at this scale

    def __post_init__(self):
        for name in self.run_names:
            get_run(name)  # an unknown name is an error listing the runs


# ---------------------------------------------------------------- views

def branch_pipelines(views: ViewsConfig) -> tuple[PipelineConfig, PipelineConfig]:
    """VICReg's (view 1, view 2) at ``image_size`` with the configured blur kernel."""
    return tuple(dataclasses.replace(p, blur=dataclasses.replace(p.blur, kernel_frac=views.blur_kernel_frac))
                 for p in vicreg_pipelines(views.image_size))


def run_pipelines(run: Run, views: ViewsConfig) -> tuple[list[PipelineConfig], PipelineConfig | None]:
    """(the two branch pipelines, T^G) of ``run``; T^G is None for a run without a generator."""
    v = branch_pipelines(views)
    g = 0 if views.generated_branch == "first" else 1
    source = v[0] if views.generated_params_from == "first" else v[1]
    if run.policy == "vicreg":
        return list(v), (source.only(*views.generated_ops) if run.generator != "none" else None)
    family = [p.only(*run.ops) for p in v]  # view 1's probabilities on branch 1, view 2's on branch 2
    generated = family[g]
    if views.pairwise_branches == "generated":
        family[1 - g] = PipelineConfig.identity()  # R is the image itself
    return family, generated


def build_views(run: Run, views: ViewsConfig, source: Any = None):
    """The run's view source: VICReg's `ClassicViews` at gamma 0, else `GammaMix` over ``source``."""
    branches, generated = run_pipelines(run, views)
    if run.gamma == 0:
        return ClassicViews(branches)
    if source is None:
        raise ValueError(f"run {run.name} needs the precomputed {run.generator}-based augmentations")
    mix = GammaMixConfig(gamma=run.gamma, branch=views.generated_branch, generated_pipeline=generated)
    return GammaMix(mix, branches, source)


def augment_file(path: Path, generator: str) -> Path:
    """The generator's precomputed ``.npy``: ``path`` itself, or ``path/<noise|mask>.npy`` for a folder."""
    return path if path.suffix == ".npy" else path / AUGMENT_FILES[generator]


def load_generated(path: Path, generator: str, ssl_x: torch.Tensor, chunk: int = 2048) -> PrecomputedViews:
    """The precomputed images of the SSL set's rows, each row checked against its source image once."""
    stage = AUGMENT_STAGES[generator]
    source = PrecomputedViews(path, stage=stage)
    if len(source) != len(ssl_x):
        raise ValueError(f"{path} holds {len(source)} generated images, the SSL training set {len(ssl_x)}: made for "
                         f"another set (its --indices differ); rerun `dvc repro {stage}`")
    for first in range(0, len(ssl_x), chunk):  # chunked: the fingerprint is a float64 matmul
        rows = torch.arange(first, min(first + chunk, len(ssl_x)), device=ssl_x.device)
        source.check_alignment(ssl_x.index_select(0, rows), rows)
    return source


def conventions(run: Run, cfg: PretrainConfig) -> dict[str, Any]:
    """Every convention the run depends on that the paper leaves open, for the record (spec 1.F risks 1, 2, 11)."""
    v, o = cfg.views, cfg.optim
    branches, generated = run_pipelines(run, v)
    return {
        "views": run.describe(),
        "gamma": run.gamma,
        "gamma_sampling": f"{v.gamma_sampling}: each sample independently with probability gamma, redrawn every step",
        "generated_branch": v.generated_branch,
        "real_branch": "first" if v.generated_branch == "second" else "second",
        "generated_pipeline": None if generated is None else generated.enabled_ops(),
        "generated_params_from": f"VICReg view {1 if v.generated_params_from == 'first' else 2}",
        "branch_ops": [b.enabled_ops() for b in branches],
        "pairwise_branches": v.pairwise_branches if run.policy == "pairwise" else None,
        "image_size": v.image_size,
        "blur_kernel": blur_kernel_size(v.blur_kernel_frac, v.image_size),
        "crop": "bilinear (official: bicubic)",
        "augmentations": "one precomputed image per SSL-set row, reused every epoch (Sec. 3.2)",
        "lr": f"{o.lr:g} = base_lr {o.base_lr:g} x batch {o.batch_size} / 256; LARS eta {o.eta:g}, weight decay "
              f"{o.weight_decay:g}; {o.warmup_epochs:g}-epoch linear warm-up, cosine to 0 (official: to 0.001 x)",
        "encoder": f"{cfg.encoder.arch} width {cfg.encoder.width:g}, {cfg.encoder.stem} stem",
        "expander": cfg.vicreg.mlp,
    }


# ---------------------------------------------------------------- loss curve

class CurveLogger:
    """Forwards to the stage's logger and keeps every logged ``train/loss`` in ``path`` (atomic, per log), so the
    curve survives a kill: a resumed run overwrites the points after its checkpoint with the same steps."""

    def __init__(self, logger, path: Path, fresh: bool):
        self.logger, self.path = logger, path
        self.points: dict[int, float] = {}
        if not fresh and path.is_file():
            self.points = {int(p["step"]): float(p["loss"]) for p in json.loads(path.read_text())}

    def log_metrics(self, metrics, step=None):
        self.logger.log_metrics(metrics, step=step)
        if "train/loss" in metrics and step is not None:
            self.points[int(step)] = float(metrics["train/loss"])
            atomic_write_text(self.path, json.dumps(self.curve()) + "\n")

    def curve(self) -> list[dict[str, float]]:
        return [{"step": s, "loss": self.points[s]} for s in sorted(self.points)]

    def __getattr__(self, name):
        return getattr(self.logger, name)


# ---------------------------------------------------------------- the stage

def run(args: argparse.Namespace) -> dict | None:
    spec = get_run(args.run)
    stage = start("gencl", "pretrain", suite_params=args.suite_params, out=args.out, trial=args.seed,
                  metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    cfg = stage.section(PretrainConfig, args.params, "pretrain")
    if spec.name not in cfg.run_names:
        return stage.skip(f"run {spec.name} is not run at scale {stage.scale} (pretrain.run_names)")
    device, ssl = stage.device, cfg.optim.ssl()

    # ---- the SSL set (row i = the i-th index) on the device, and the run's generated images only
    x, y = load_prepared(args.prepared, "train")
    if args.indices is not None:
        rows = load_indices(args.indices)
        if len(rows) and int(rows.max()) >= len(x):
            raise ValueError(f"{args.indices}: indices up to {int(rows.max())}, the prepared train split "
                             f"{args.prepared} has {len(x)} rows")
        x, y = x[rows], y[rows]
    if len(x) < ssl.batch_size:
        raise ValueError(f"the SSL set holds {len(x)} images, fewer than pretrain.optim.batch_size={ssl.batch_size}")
    loader = DeviceLoader(x, y, batch_size=ssl.batch_size, shuffle=True, drop_last=True, seed=stage.seed,
                          device=device)
    source, generated_path = None, None
    if spec.generator != "none":
        given = getattr(args, spec.generator)
        if given is None:
            raise ValueError(f"run {spec.name} needs --{spec.generator}: the {spec.generator}-based augmentations "
                             f"({AUGMENT_FILES[spec.generator]}) made by `dvc repro {AUGMENT_STAGES[spec.generator]}`")
        generated_path = augment_file(Path(given), spec.generator)
        source = load_generated(generated_path, spec.generator, loader.x)
    views = build_views(spec, cfg.views, source)

    encoder = build_encoder(cfg.encoder)
    method = to_device(build_method("vicreg", encoder, **config.to_dict(cfg.vicreg)), device)

    resolved = {"run": config.to_dict(spec), "seed": args.seed, "pretrain": config.to_dict(cfg),
                "ssl": config.to_dict(ssl), "prepared": str(args.prepared),
                "indices": None if args.indices is None else str(args.indices),
                "generated": None if generated_path is None else str(generated_path)}
    with stage.tracked(resolved, f"pretrain/{spec.name}/seed{args.seed}", table="pretrain", row=spec.name) as log:
        curve = CurveLogger(log, stage.out / CURVE_FILE, fresh=not (stage.out / "checkpoint.pt").exists())
        began = time.perf_counter()
        result = train_ssl(ssl, method, views, loader, out_dir=stage.out, logger=curve, device=device)
        seconds = time.perf_counter() - began
        save_encoder(stage.out / ENCODER_FILE, method.encoder, cfg.encoder, run=spec.name, seed=args.seed,
                     steps=result.steps)
        points = curve.curve()
        final_loss = points[-1]["loss"] if points else float("nan")
        record = stage.record(
            {"final_loss": final_loss}, table="pretrain", row=spec.name, curve=points,
            run={**dataclasses.asdict(spec), "tables": dict(spec.rows)}, conventions=conventions(spec, cfg),
            steps=result.steps, epochs=ssl.epochs, steps_per_epoch=len(loader), batch_size=ssl.batch_size,
            lr=ssl.lr, images=len(x), feature_dim=encoder.feature_dim,
            train_seconds=seconds, images_per_second=result.steps * ssl.batch_size / seconds if seconds else None,
            generated=None if source is None else {"file": str(generated_path), "meta": source.meta.get("meta")})
        stage.write(record, logger=log)
        stage.write_metrics(record.metrics)
        stage.write_plot("loss", points, x="step")
    print(f"pretrain {spec.name} seed {args.seed}: {result.steps} steps, final loss {final_loss:.4f} "
          f"({stage.scale})")
    return record.to_dict()


def run_seeds(args: argparse.Namespace) -> list[dict | None]:
    """``run`` for each of ``args.seeds`` in turn, seed i in ``<out>/seed<i>``; then DVC's files for all of them.

    One process per run (the DVC matrix is over the runs, not the seeds): a seed the scale does not run costs a
    skip marker, not a process start. ``--metrics`` gets ``seed<i>/final_loss`` per seed that ran, ``--plots``
    one row per logged step with a ``seed<i>`` column of the loss per seed.
    """
    done = [run(argparse.Namespace(**{**vars(args), "seed": seed, "out": args.out / f"seed{seed}",
                                      "metrics": None, "plots": None})) for seed in args.seeds]
    ran = {seed: rec for seed, rec in zip(args.seeds, done, strict=True) if rec is not None}
    write_seed_files(args.metrics, args.plots, ran, "curve", "step", "loss")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--run", required=True, help=f"a run of runs.py ({', '.join(RUN_NAMES)})")
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seed", type=int, help="one trial index (0, 1, 2): its outputs in --out itself")
    seeds.add_argument("--seeds", type=int, nargs="+",
                       help="several trial indices in one process, seed i in <out>/seed<i> (the DVC stage)")
    parser.add_argument("--prepared", type=Path, required=True, help="the prepared dataset folder (train.npz)")
    parser.add_argument("--indices", type=Path, default=None, help="the SSL set's train rows (.npy / .json)")
    parser.add_argument("--noise", type=Path, default=None,
                        help=f"noise-based augmentations: {AUGMENT_STAGES['noise']}'s folder or its .npy")
    parser.add_argument("--mask", type=Path, default=None,
                        help=f"mask-based augmentations: {AUGMENT_STAGES['mask']}'s folder or its .npy")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    parser.add_argument("--plots", type=Path, default=None, help="the loss curve(s) for DVC (outside --out)")
    args = parser.parse_args(argv)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice")
    return run_stage(lambda: run(args) if args.seeds is None else run_seeds(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
