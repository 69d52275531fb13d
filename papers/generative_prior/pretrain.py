"""Stage `pretrain`: one SSL run of the registry (`pretrain.runs`), SimCLR or BYOL with or without a prior, and
its linear evaluation along the way.

    python -m papers.generative_prior.pretrain --run simclr_default --seeds 0 1 2 \
        --data papers/generative_prior/outputs/data --langevin papers/generative_prior/outputs/langevin \
        --discriminator papers/generative_prior/outputs/gan/discriminator.pt \
        --out papers/generative_prior/outputs/pretrain/simclr_default \
        --metrics papers/generative_prior/outputs/metrics/pretrain/simclr_default.json \
        --plots papers/generative_prior/outputs/plots/pretrain/simclr_default.json

(the DVC stage: seed i in ``<out>/seed<i>``; ``--seed i`` runs one seed in ``--out`` itself, e.g. two seeds in
two processes by hand).

The run's spec (`config.RunSpec`) says which method and which prior: a Langevin view (idea #1) read from the
precomputed snapshot ``<langevin>/<chain>/step<snapshot>.npy`` (one image per training row, written by the
Langevin stage; :class:`shared.view_sources.PrecomputedViews`), entering as

- ``aux_loss``: a third view ``vL = t(L(x))`` of every row, in the auxiliary loss (``methods.py``);
- ``add_to_dataset``: extra rows: the dataset is the real images plus their Langevin images, each row giving
  the two usual views (the slides' "add augmented images to the dataset"; spec 3.F risk 4);
- ``both``: the extra rows and the auxiliary view (a Langevin row's vL is the same Langevin image, augmented
  again: the Langevin image of its real image);

or the frozen GAN discriminator's view (idea #2, ``discriminator.load_discriminator``). A run loads only the file it
uses. Every run makes the same number of steps: an epoch is ``floor(N_real / batch)`` batches whatever the
dataset holds (with the Langevin rows added, each epoch draws its batches from a fresh permutation of all
2 N_real rows, so a row is seen every other epoch on average).

Evaluation (one protocol for every run, `pretrain.evaluate`): features of the un-augmented SSL training set and
the test set, a linear head (`shared.trainers.linear_eval`, Adam 3e-4, 100 epochs at paper scale) trained on the
former and scored on the latter (top-1 %), and the weighted kNN top-1 (%) beside it; every
``<method>.eval_every`` epochs and at the end (the curve).

Writes in ``--out``: ``metrics.json`` (table ``runs``, row = the run's name: ``linear_eval_acc``, ``knn_acc``,
and ``curve``, ``run``, ``assumptions``, ``steps``, ``images``, ...), ``encoder.pt``, ``checkpoint.pt``
(resumed after a kill with the same config), ``config.yaml``; ``--metrics`` / ``--plots`` for DVC. A seed at or
beyond ``runs.n_seeds``, or a run not in ``pretrain.run_names``, writes the skip marker instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from papers.generative_prior import data as gp_data
from papers.generative_prior.discriminator import initial_discriminator, load_discriminator
from papers.generative_prior.config import (PARAMS, RUN_NAMES, DiscUse, GANStageConfig, LangevinUse, RunSpec,
                                            RunsConfig, check_run_name)
from papers.generative_prior.ebm import LangevinConfig, snapshot_file
from papers.generative_prior.methods import MethodConfig, build_method
from shared import checkpoint, config
from shared.cli import run_stage, stage_parser
from shared.data import DeviceLoader
from shared.device import to_device
from shared.models import resnet18
from shared.stage import start, write_seed_files
from shared.trainers.linear_eval import LinearEvalConfig, linear_eval
from shared.trainers.ssl import SSLConfig, train_ssl
from shared.view_sources import ClassicViews, PipelineConfig, PrecomputedViews, classic_view
from shared.views import SimCLRViewConfig

LANGEVIN_STAGE = "papers/generative_prior/dvc.yaml:langevin"
ENCODER_FILE = "encoder.pt"
ENCODER_FORMAT = "generative_prior/encoder"


# ---------------------------------------------------------------- config

def _run_spec(name: str) -> RunSpec:
    """The spec a run name stands for: ``<method>_baseline``, ``_default`` (the slides' default Langevin view),
    ``_steps<N>`` (snapshot N of the default chain), ``_alpha<a>`` / ``_std<s>`` / ``_stepsize<s>`` (the chain of
    that name), ``_lambda<l>`` (lambda), ``_disc<c>`` (the discriminator view's coefficient), ``_discinit<c>``
    (the same with D at its initialisation: the control); ``p`` is the decimal point."""
    method, variant = name.split("_", 1)
    if variant == "baseline":
        return RunSpec(method=method)
    if variant == "default":
        return RunSpec(method=method, langevin=LangevinUse())
    match = re.fullmatch(r"(stepsize|steps|alpha|std|lambda|discinit|disc)([0-9p]+)", variant)
    if match is None:
        raise ValueError(f"run name {name!r} follows no known pattern")
    kind, number = match.groups()
    value = float(number.replace("p", "."))
    if kind == "steps":
        return RunSpec(method=method, langevin=LangevinUse(snapshot=int(value)))
    if kind == "lambda":
        return RunSpec(method=method, langevin=LangevinUse(lam=value))
    if kind == "disc":
        return RunSpec(method=method, disc=DiscUse(coeff=value))
    if kind == "discinit":
        return RunSpec(method=method, disc=DiscUse(coeff=value, source="init"))
    return RunSpec(method=method, langevin=LangevinUse(chain=variant))  # alpha0p5, std2, stepsize20, ...


def default_runs() -> dict[str, RunSpec]:
    """Every run of ``config.RUN_NAMES`` with the spec its name stands for (params.yaml may list them instead)."""
    return {name: _run_spec(name) for name in RUN_NAMES}


def _adam(batch_size: int, epochs: int = 1000) -> SSLConfig:
    # "base lr 3e-3" read as Adam's, scaled by batch / 256 (spec 3.C); wd 1e-6, 10-epoch warm-up, cosine
    return SSLConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=3e-3 * batch_size / 256,
                     weight_decay=1e-6, warmup_epochs=10.0, schedule="cosine", eval_every=50, checkpoint_every=1,
                     log_every=50)


@dataclasses.dataclass
class EvaluateConfig:
    """One evaluation protocol for every run: a linear head (gan_simclr's Adam 3e-4, 100 epochs) and kNN."""
    linear: LinearEvalConfig = dataclasses.field(default_factory=LinearEvalConfig)
    knn_k: int = 200  # weighted kNN (Wu et al. 2018; temperature 0.1, linear_eval's)

    def __post_init__(self):
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.knn_k}")


@dataclasses.dataclass
class PretrainConfig:
    """The SSL protocol (spec 3.C's assumptions where the slides are silent) and the registry of runs."""
    width: float = 1.0  # CIFAR-stem ResNet-18 channel multiplier (512-d features at 1)
    heads: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    simclr: SSLConfig = dataclasses.field(default_factory=lambda: _adam(512))  # "batch size ... 512 for SimCLR"
    byol: SSLConfig = dataclasses.field(default_factory=lambda: _adam(256))  # "256 for BYOL"
    # SimCLR's CIFAR augmentations (crop 0.08-1, flip, jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale 0.2, no blur),
    # for both methods and for the Langevin view
    views: SimCLRViewConfig = dataclasses.field(default_factory=lambda: SimCLRViewConfig(
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.0))
    runs: dict[str, RunSpec] = dataclasses.field(default_factory=default_runs)
    run_names: list[str] = dataclasses.field(default_factory=lambda: list(RUN_NAMES))  # run at this scale
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        for name, spec in self.runs.items():
            if name not in RUN_NAMES:
                raise ValueError(f"runs.{name}: not a run of config.RUN_NAMES ({', '.join(RUN_NAMES)})")
            if name.split("_", 1)[0] != spec.method:
                raise ValueError(f"runs.{name}: method {spec.method!r} does not match the run's name")
        if missing := [n for n in self.run_names if n not in self.runs]:
            raise ValueError(f"run_names: {missing[0]!r} has no definition in runs")

    def ssl(self, method: str) -> SSLConfig:
        return {"simclr": self.simclr, "byol": self.byol}[method]


def langevin_file(root: str | Path, use: LangevinUse) -> Path:
    """The precomputed snapshot of a Langevin use: ``<root>/<chain>/step<snapshot>.npy`` (``ebm.snapshot_file``)."""
    return snapshot_file(Path(root) / use.chain, use.snapshot)


# ---------------------------------------------------------------- data and views

def load_langevin(path: Path, real_x: Tensor, chunk: int = 2048) -> PrecomputedViews:
    """The precomputed Langevin images of ``real_x``'s rows, checked row by row against them once."""
    source = PrecomputedViews(path, stage=LANGEVIN_STAGE)
    if len(source) != len(real_x):
        raise ValueError(f"{path} holds {len(source)} Langevin images, the SSL training set {len(real_x)} images: "
                         f"made from another data set; rerun `dvc repro {LANGEVIN_STAGE}`")
    for start_row in range(0, len(real_x), chunk):  # chunked: the fingerprint is a float64 matmul
        rows = torch.arange(start_row, min(start_row + chunk, len(real_x)))
        source.check_alignment(real_x[rows], rows)
    return source


class LangevinViews:
    """View source ``[t(x), t(x), t(L(x))]``: two SSL views of each row and the SSL augmentation ``t`` of the
    Langevin image of the row's real image (row ``index mod N_real``: a Langevin row of the "both" mode maps to
    its own image). ``real`` are the N_real real images on the training device; the lookup checks their
    fingerprints (``PrecomputedViews``). Draws: the two views first (one batched call), then vL's."""

    def __init__(self, pipeline: PipelineConfig, source: PrecomputedViews, real: Tensor):
        self.pair = ClassicViews.symmetric(pipeline, 2)
        self.pipeline = pipeline
        self.source = source
        self.real = real

    def __call__(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        views = self.pair(x, index, generator)
        rows = index.remainder(len(self.real))
        langevin = self.source.generated(self.real.index_select(0, rows), rows, generator)
        return [*views, classic_view(langevin, self.pipeline, generator)]


class EqualStepsLoader(DeviceLoader):
    """A :class:`DeviceLoader` whose epoch is ``floor(real_rows / batch)`` batches of a permutation of all rows:
    the same steps per epoch as the real set alone, with the Langevin rows added to what is drawn."""

    def __init__(self, x, y, *, real_rows: int, **kw):
        super().__init__(x, y, drop_last=True, **kw)
        self.real_rows = real_rows

    def __len__(self) -> int:
        return self.real_rows // self.batch_size


# ---------------------------------------------------------------- the stage

def assumptions(cfg: PretrainConfig, ssl: SSLConfig, method: str) -> dict[str, str]:
    linear = cfg.evaluate.linear
    return {
        "dataset": "CIFAR-10 (assumed; the slides name none)",
        "encoder": f"ResNet-18, CIFAR stem, width {cfg.width} ({int(512 * cfg.width)}-d features) (assumed; the "
                   f"slides name none)",
        "metric": f"linear-eval top-1 (%) on the test set: a linear head ({linear.optimizer}, lr {linear.lr}, "
                  f"{linear.epochs} epochs) on the frozen features of the SSL training set (assumed; the slides "
                  f"name none); weighted kNN top-1 (k {cfg.evaluate.knn_k}) beside it",
        "optimizer": f"{ssl.optimizer}, lr {ssl.lr:g} (3e-3 x batch {ssl.batch_size} / 256: the slides' 'base lr "
                     f"3e-3' read as Adam's), weight decay {ssl.weight_decay:g}, {ssl.warmup_epochs:g}-epoch warm-up, "
                     f"{ssl.schedule} ({method})",
    }


def save_encoder(path: Path, encoder: torch.nn.Module, width: float, **meta) -> None:
    checkpoint.save(path, {"format": ENCODER_FORMAT, "width": float(width), "feature_dim": int(encoder.feature_dim),
                           "encoder": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
                           "meta": meta})


def run(args: argparse.Namespace) -> dict | None:
    name = check_run_name(args.run)
    stage = start("generative_prior", "pretrain", suite_params=args.suite_params, out=args.out, trial=args.seed,
                  metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    cfg = stage.section(PretrainConfig, args.params, "pretrain")
    if name not in cfg.run_names:
        return stage.skip(f"run {name} is not run at scale {stage.scale} (pretrain.run_names)")
    spec = cfg.runs[name]
    ssl = cfg.ssl(spec.method)
    device = stage.device

    # ---- data: the SSL training set (also the linear head's), the test set; the run's prior only
    train_x, train_y = gp_data.load(args.data, "train")
    test_x, test_y = gp_data.load(args.data, "test")
    n_real = len(train_x)
    if n_real < ssl.batch_size:
        raise ValueError(f"the SSL training set holds {n_real} images, fewer than pretrain.{spec.method}.batch_size="
                         f"{ssl.batch_size}")
    rows_x, rows_y, langevin_path, source, disc, d_file = train_x, train_y, None, None, None, None
    if spec.langevin is not None:
        # the chain must be one the langevin stage runs at this scale, with this snapshot
        stage.section(LangevinConfig, args.params, "langevin").check_use(spec.langevin.chain, spec.langevin.snapshot)
        langevin_path = langevin_file(args.langevin, spec.langevin)
        source = load_langevin(langevin_path, train_x)
        if spec.langevin.mode in ("add_to_dataset", "both"):  # rows N.. 2N-1: the Langevin images of rows 0.. N-1
            rows_x = torch.cat([train_x, torch.from_numpy(np.array(source.images))])
            rows_y = torch.cat([train_y, train_y])
    if spec.disc is not None:
        # loading D draws a random init before its weights are read: outside the run's RNG stream, so that runs
        # with and without a prior start from the same encoder and heads under one seed
        with torch.random.fork_rng(devices=[]):
            if spec.disc.source == "trained":
                disc, d_file = load_discriminator(args.discriminator, device), str(args.discriminator)
            else:  # the control: train_gan's D before its first step (section `gan`, the suite seed)
                gan = stage.section(GANStageConfig, args.params, "gan")
                disc = initial_discriminator(gan.discriminator, gan.width, gan.z_dim, stage.suite.seed, device)
                d_file = "none: train_gan's D at initialisation (section gan, the suite seed)"
    loader = EqualStepsLoader(rows_x, rows_y, real_rows=n_real, batch_size=ssl.batch_size, shuffle=True,
                              seed=stage.seed, device=device)
    pipeline = PipelineConfig.from_simclr(cfg.views)
    views = ClassicViews.symmetric(pipeline, 2)
    if spec.langevin is not None and spec.langevin.mode in ("aux_loss", "both"):
        views = LangevinViews(pipeline, source, loader.x[:n_real])

    # ---- the encoder, then the method's heads (h_D after them), on the device
    encoder = resnet18(width=cfg.width)
    method = to_device(build_method(spec, cfg.heads, encoder, disc), device)

    def evaluate(enc: torch.nn.Module) -> dict[str, float]:
        out = linear_eval(enc, (train_x, train_y), (test_x, test_y), cfg.evaluate.linear, device,
                          knn_k=cfg.evaluate.knn_k)
        return {"linear_eval_acc": out["linear_test_acc"], "knn_acc": out["knn_test_acc"],
                "linear_train_acc": out["linear_train_acc"]}

    resolved = {"run": name, "spec": config.to_dict(spec), "seed": args.seed, "width": cfg.width,
                "heads": config.to_dict(cfg.heads), "ssl": config.to_dict(ssl), "views": config.to_dict(cfg.views),
                "evaluate": config.to_dict(cfg.evaluate), "data": str(args.data),
                "langevin": None if langevin_path is None else str(langevin_path),
                "discriminator": d_file}
    with stage.tracked(resolved, f"pretrain/{name}/seed{args.seed}", table="runs", row=name) as log:
        result = train_ssl(ssl, method, views, loader, out_dir=stage.out, logger=log, device=device,
                           evaluate=evaluate)
        save_encoder(stage.out / ENCODER_FILE, method.encoder, cfg.width, run=name, seed=args.seed,
                     steps=result.steps)
        curve = [{"epoch": h["epoch"], "step": h["epoch"] * len(loader), "linear_eval_acc": h["linear_eval_acc"],
                  "knn_acc": h["knn_acc"]} for h in result.history]
        final = result.final
        record = stage.record(
            {"linear_eval_acc": final["linear_eval_acc"], "knn_acc": final["knn_acc"]}, table="runs", row=name,
            curve=curve, run=config.to_dict(spec), assumptions=assumptions(cfg, ssl, spec.method),
            steps=result.steps, images=len(rows_x), real_images=n_real, test_images=len(test_x),
            epochs=ssl.epochs, steps_per_epoch=len(loader), batch_size=ssl.batch_size,
            linear_train_acc=final["linear_train_acc"], feature_dim=encoder.feature_dim,
            langevin=None if source is None else {"file": str(langevin_path), "meta": source.meta.get("meta")},
            discriminator=None if disc is None else {"file": d_file, "source": spec.disc.source,
                                                     "head": spec.disc.head, "features": "D.features(2 v - 1)"})
        stage.write(record, logger=log)
        stage.write_metrics(record.metrics)
        stage.write_plot("linear_eval_acc", curve, x="step")
    print(f"pretrain {name} seed {args.seed}: {result.steps} steps; linear eval {final['linear_eval_acc']:.2f}%, "
          f"kNN {final['knn_acc']:.2f}% ({stage.scale})")
    return record.to_dict()


def run_seeds(args: argparse.Namespace) -> list[dict | None]:
    """``run`` for each of ``args.seeds`` in turn: seed i in ``<out>/seed<i>``; then DVC's files for all of them.

    One process per run name (the DVC matrix is over the runs, not the seeds): the seeds a scale does not run
    cost a skip marker each, not a process start. ``--metrics`` gets ``seed<i>/linear_eval_acc`` and
    ``seed<i>/knn_acc`` per seed that ran; ``--plots`` one row per evaluation step with ``seed<i>`` columns.
    """
    done = []
    for seed in args.seeds:
        one = argparse.Namespace(**{**vars(args), "seed": seed, "out": args.out / f"seed{seed}", "metrics": None,
                                    "plots": None})
        done.append(run(one))
    ran = {seed: rec for seed, rec in zip(args.seeds, done, strict=True) if rec is not None}
    write_seed_files(args.metrics, args.plots, ran, "curve", "step", "linear_eval_acc")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--run", required=True, help=f"a run of pretrain.runs ({', '.join(RUN_NAMES)})")
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seed", type=int, help="one trial index (0, 1, 2): its outputs in --out itself")
    seeds.add_argument("--seeds", type=int, nargs="+",
                       help="several trial indices in one process, seed i in <out>/seed<i> (the DVC stage)")
    parser.add_argument("--data", type=Path, default=Path("papers/generative_prior/outputs/data"),
                        help="the prepare stage's folder (train.npz, test.npz)")
    parser.add_argument("--langevin", type=Path, default=Path("papers/generative_prior/outputs/langevin"),
                        help="the Langevin stage's folder (<chain>/step<k>.npy); read only by Langevin runs")
    parser.add_argument("--discriminator", type=Path,
                        default=Path("papers/generative_prior/outputs/gan/discriminator.pt"),
                        help="the GAN stage's frozen D; read only by discriminator-view runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    parser.add_argument("--plots", type=Path, default=None, help="the linear-eval curve for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args) if args.seeds is None else run_seeds(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
