"""GenCL's noise-based generator: an instance-conditioned GAN (IC-GAN, Casanova et al. 2021), trained here.

Three stages, one command each (papers/gencl/dvc.yaml's `icgan_features`, `icgan_train`, `noise_augment`):

    python -m papers.gencl.icgan features --encoder <baseline encoder.pt> --prepared data/prepared/tinyimagenet100 \
        [--indices <rows.npy>] --out papers/gencl/outputs/icgan/features
    python -m papers.gencl.icgan train --features papers/gencl/outputs/icgan/features \
        --prepared data/prepared/tinyimagenet100 --out papers/gencl/outputs/icgan/train
    python -m papers.gencl.icgan augment --generator papers/gencl/outputs/icgan/train \
        --features papers/gencl/outputs/icgan/features --prepared data/prepared/tinyimagenet100 \
        [--indices <ssl rows.npy>] --out papers/gencl/outputs/icgan/augment

(each also takes `--params` (section `icgan`), `--suite-params`, `--metrics`, `--plots` and `--debug`).

`features`: the instance features h = L2-normalised penultimate features of an **unsupervised** encoder (the
gamma = 0 VICReg baseline, the analogue of IC-GAN's SwAV; never a supervised network: that would put labels
into the generator), computed once for the GAN's training images (the prepared train split, or the rows of
`--indices`), and every instance's k nearest neighbours by cosine similarity
(`shared.trainers.conditions.knn_neighbourhoods`, the instance itself left out). Writes `instances.npz`
(`features` float32 (N, d), `neighbours` int64 (N, k) as positions 0..N-1 into these rows, `rows` int64 (N,)
the prepared train rows; `load_instances`) and a record: k, the feature size and the neighbourhoods' label
purity (the fraction of neighbours of an instance's class, beside its chance level). The labels are read for
that diagnostic only; nothing the GAN trains on ever sees them.

`train`: G(z, h) (`shared.models.conditional.ConditionalGenerator`: conditional batch norm on [z, SN-Linear(h)])
against the projection D(x, h) = psi(phi(x)) + <SN-Linear(h), phi(x)>, hinge loss, Adam betas (0, 0.999), EMA
of G, with `shared.trainers.gan.train_gan` and `InstanceConditions`: for each instance i of a batch D sees
a real drawn uniformly from i's neighbourhood and the fake G(z, h_i), both judged with h_i. The loader carries
images and row indices only (its label slot is a zero placeholder). Checkpoint and resume are the trainer's.
Writes `generator.pt` (the final G_ema, `papers.gencl.generator.load_generator`), the trainer's `checkpoint.pt`, `best.pt` (only
with an FID) and `samples/`, `neighbourhoods.png` (per row: a conditioning instance | G_ema(z, h) for several
z | a few of its real neighbours: the samples should look like the neighbours), `losses.png`, and a record
with the loss means per evaluation interval and, with `icgan.fid_samples` > 0, the in-domain FID of G_ema
during training (conditioned on training instances, against the prepared test split).

`augment`: one G_ema(z_i, h(x_i)) per SSL-set image x_i, z_i ~ N(0, I) from numpy's generator seeded with
(`icgan.augment.seed`, x_i's prepared train row), so an image's augmentation does not depend on the batch size
or on which other images are generated. Row i of the output belongs to the i-th row of `--indices` (all
train rows without it): an SSL loader must index the SSL set by position (0..n-1), with the images of
`prepared train[indices]` in that order; `shared.view_sources.PrecomputedViews` checks each lookup against
the stored fingerprints of those source images. The features are looked up by prepared row
(`instance_positions`): the features stage may cover more rows than the SSL set (the GAN's training set),
never fewer. Writes `noise.npy` (+ `noise.fingerprint.npy`, `noise.meta.json`: `write_precomputed`, uint8,
lossless), `pairs.png` (original | generated pairs) and a record (seconds per image at the stage's batch and
at batch 1, n).

Deviations from the paper's IC-GAN (a pre-trained 256 px BigGAN-backbone model on ImageNet with SwAV features):
trained from scratch on the suite's data; SNDCGAN-layout G and D instead of BigGAN's residual blocks with
self-attention; the whole z (not one chunk per block, BigGAN's `hier`) is concatenated with the feature
embedding as every CBN's input; no feature augmentation (IC-GAN's 64 px config also conditions on the
features of flipped images); the fakes' conditions are the batch's instances (the trainer's rule, see
`shared.trainers.gan`); truncation none. Official code read for semantics, not copied:
facebookresearch/ic_gan (BigGAN_PyTorch/config_files/ImageNet/IC-GAN/icgan_res64.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from papers.gencl.encoder import load_encoder
from papers.gencl.generator import GENERATOR_FILE, load_generator, save_generator
from shared import config, data, metrics
from shared.cli import add_debug_argument, run_stage
from shared.device import autocast, prepare_batch, to_device
from shared.gan_losses import GANMethod, hinge
from shared.io import atomic_write
from shared.metrics import MetricsConfig
from shared.models.conditional import ConditionalGenerator, conditional_gan
from shared.stage import start
from shared.trainers.conditions import InstanceConditions, knn_neighbourhoods
from shared.trainers.gan import GANConfig, fid_evaluate, image_grid, png_bytes, to_uint8, train_gan
from shared.view_sources.precomputed import write_precomputed

PAPER = "gencl"
PARAMS = Path(__file__).with_name("params.yaml")
SECTION = "icgan"
INSTANCES_FILE = "instances.npz"
AUGMENT_FILE = "noise.npy"
FEATURES_STAGE = "papers/gencl/dvc.yaml:icgan_features"
LABELS_NOTE = ("labels are read only for this diagnostic (neighbourhood label purity); the features, the "
               "neighbourhoods and the GAN never see them")


# ---------------------------------------------------------------- config

@dataclasses.dataclass
class FeaturesConfig:
    """The instance features and their neighbourhoods."""
    k: int = 50  # neighbours per instance (IC-GAN `k_nn`)
    batch_size: int = 256  # encoder forward
    chunk_size: int = 1024  # rows per cosine-similarity chunk of the kNN search (memory chunk x N)

    def __post_init__(self):
        for key in ("k", "batch_size", "chunk_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"icgan.features.{key} must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass
class GridConfig:
    """`neighbourhoods.png`: per row an instance, `samples` G_ema(z, h) and `neighbours` of its real neighbours."""
    instances: int = 8
    samples: int = 6
    neighbours: int = 4
    seed: int = 0  # which instances and which z

    def __post_init__(self):
        if min(self.instances, self.samples) < 1 or self.neighbours < 0:
            raise ValueError(f"icgan.grid: need instances, samples >= 1 and neighbours >= 0, got {self}")


@dataclasses.dataclass
class AugmentConfig:
    """The precomputed noise-based augmentations."""
    batch_size: int = 256
    seed: int = 0  # z_i is drawn from a generator seeded with (seed, prepared row of x_i)
    timing_images: int = 100  # images generated one at a time for the batch-1 time (Table 4 times 1,000)
    grid_pairs: int = 32  # (original, generated) pairs in pairs.png

    def __post_init__(self):
        if self.batch_size < 1 or self.timing_images < 0 or self.grid_pairs < 1 or self.seed < 0:
            raise ValueError(f"icgan.augment: need batch_size, grid_pairs >= 1, timing_images >= 0 and "
                             f"seed >= 0, got {self}")


@dataclasses.dataclass
class ICGANTrainConfig(GANConfig):
    """`shared.trainers.gan.GANConfig` with IC-GAN's defaults as the class's own, so that `icgan.train` in
    params.yaml (or a scale's override of it) that names only some keys keeps these for the others."""
    # IC-GAN trains up to 3000 epochs with early stopping on FID; 100k steps is this suite's choice
    steps: int = 100_000
    batch_size: int = 256
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    r1_gamma: float = 0.0  # hinge + spectral norm, no R1
    r1_interval: int = 0
    style_mixing_prob: float = 0.0
    mirror: bool = True  # icgan_res64.json `hflips`
    # EMA decay 0.9999 per step at batch 256 = a half-life of 6931 steps = 1774 kimg, started after 20k steps
    # (BigGAN's launch scripts' ema_start; not re-checked for IC-GAN)
    ema_kimg: float = 1774.4
    ema_start_kimg: float = 5120.0
    log_every: int = 100
    sample_every: int = 5000
    checkpoint_every: int = 5000
    eval_every: int = 5000


@dataclasses.dataclass
class ICGANConfig:
    """Section `icgan` of papers/gencl/params.yaml. Defaults: IC-GAN's ImageNet 64 px recipe
    (`icgan_res64.json`: k_nn 50, shared_dim_feat 512, batch 256, G_lr = D_lr = 1e-4, hflips, one D step)
    where it maps onto the SNDCGAN layout; Adam betas (0, 0.999) and EMA decay 0.9999 from BigGAN's code."""
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    discriminator: Literal["sndcgan", "snresnet18"] = "sndcgan"
    width: float = 1.0  # channel multiplier of G and D (SNDCGAN: 64 * width base channels)
    z_dim: int = 128
    embed_dim: int = 512  # SN-Linear(h) size, IC-GAN `shared_dim_feat`
    train: ICGANTrainConfig = dataclasses.field(default_factory=ICGANTrainConfig)
    fid_samples: int = 10_000  # G_ema samples per in-domain FID during training; 0: no FID
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.z_dim < 1 or self.embed_dim < 1 or self.fid_samples < 0:
            raise ValueError(f"icgan: need z_dim, embed_dim >= 1 and fid_samples >= 0, got z_dim={self.z_dim}, "
                             f"embed_dim={self.embed_dim}, fid_samples={self.fid_samples}")
        if self.train.checkpoint_every % self.train.eval_every:
            # the loss curve is kept per evaluation in the trainer's checkpoint: a checkpoint between two
            # evaluations would lose the losses since the last one when the run resumes
            raise ValueError(f"icgan.train.checkpoint_every ({self.train.checkpoint_every}) must be a multiple of "
                             f"icgan.train.eval_every ({self.train.eval_every})")


# ---------------------------------------------------------------- features and neighbourhoods

class Instances(NamedTuple):
    features: Tensor  # float32 (N, d), L2-normalised
    neighbours: Tensor  # int64 (N, k): positions 0..N-1 into these rows, most similar first
    rows: np.ndarray  # int64 (N,): the prepared train row of each instance


@torch.no_grad()
def instance_features(encoder: nn.Module, images: Tensor, batch_size: int, device: torch.device,
                      progress: bool = True) -> Tensor:
    """h = L2-normalised encoder(x) of uint8 images (N, C, H, W), fed as float in [0, 1]: float32 (N, d) on the CPU.

    The encoder runs in eval mode (its mode is restored afterwards) and normalises its input itself.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for chunk in tqdm(images.split(batch_size), desc="icgan features", unit="batch", disable=not progress):
            x = prepare_batch(chunk.to(device).float().div_(255), device)
            with autocast(device):
                f = encoder(x)
            if f.ndim != 2 or f.shape[0] != chunk.shape[0]:
                raise ValueError(f"the encoder must return (B, d) features, got {tuple(f.shape)} "
                                 f"for B={chunk.shape[0]}")
            out.append(F.normalize(f.float(), dim=1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def label_purity(neighbours: Tensor, labels: Tensor | np.ndarray) -> tuple[float, float]:
    """(fraction of all neighbours that share their instance's class, the same for neighbours drawn at random).

    The chance level is sum_c n_c (n_c - 1) / (N (N - 1)): a neighbour drawn uniformly among the others.
    """
    y = torch.as_tensor(labels, dtype=torch.long)
    purity = (y[neighbours] == y[:, None]).double().mean().item()
    n_c = torch.bincount(y).double()
    n = float(len(y))
    return purity, float((n_c * (n_c - 1)).sum() / (n * (n - 1)))


def save_instances(out_dir: Path, instances: Instances) -> Path:
    path = Path(out_dir) / INSTANCES_FILE
    atomic_write(path, lambda f: np.savez(f, features=instances.features.numpy().astype(np.float32),
                                          neighbours=instances.neighbours.numpy().astype(np.int64),
                                          rows=np.asarray(instances.rows, np.int64)))
    return path


def load_instances(features_dir: str | Path) -> Instances:
    """The features stage's `instances.npz`, checked (shapes, unit norms, neighbours in range, unique rows)."""
    path = Path(features_dir) / INSTANCES_FILE
    how = f"it is made by `python -m papers.gencl.icgan features` (`dvc repro {FEATURES_STAGE}`)"
    if not path.is_file():
        raise data.DataNotFoundError(f"{path} does not exist: {how}")
    try:
        with np.load(path, allow_pickle=False) as z:
            features, neighbours, rows = z["features"], z["neighbours"], z["rows"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise data.CorruptDataError(f"{path}: unreadable ({type(e).__name__}: {e}); delete it, {how}") from e
    n = len(features)
    if (features.ndim != 2 or neighbours.ndim != 2 or neighbours.shape[0] != n or rows.shape != (n,)
            or (n and (neighbours.min() < 0 or neighbours.max() >= n)) or len(np.unique(rows)) != n):
        raise data.CorruptDataError(f"{path}: features {features.shape}, neighbours {neighbours.shape}, rows "
                                    f"{rows.shape}: expected (N, d), (N, k) in [0, N) and N unique rows; {how}")
    h = torch.from_numpy(features).float()
    if not torch.allclose(h.norm(dim=1), torch.ones(n), atol=1e-4):
        raise data.CorruptDataError(f"{path}: the features are not L2-normalised; {how}")
    return Instances(h, torch.from_numpy(neighbours).long(), rows.astype(np.int64))


def make_instances(encoder: nn.Module, images: Tensor, rows: np.ndarray, cfg: FeaturesConfig,
                   device: torch.device, progress: bool = True) -> Instances:
    """Features of `images` (the prepared train rows `rows`) and their k-NN neighbourhoods (cosine, self excluded)."""
    h = instance_features(encoder, images, cfg.batch_size, device, progress)
    neighbours = knn_neighbourhoods(h.to(device), cfg.k, cfg.chunk_size).cpu()
    return Instances(h, neighbours, np.asarray(rows, np.int64))


def _rows(indices: Path | None, n_train: int) -> np.ndarray:
    """The prepared train rows of `--indices` (all rows without it), checked."""
    rows = np.arange(n_train, dtype=np.int64) if indices is None else data.load_indices(indices)
    if len(rows) == 0 or rows.max() >= n_train or len(np.unique(rows)) != len(rows):
        raise ValueError(f"{indices}: need distinct rows of the prepared train split (0..{n_train - 1}), got "
                         f"{len(rows)} rows, max {rows.max() if len(rows) else None}")
    return rows


def run_features(args: argparse.Namespace) -> dict:
    stage = start(PAPER, "icgan_features", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    cfg = stage.section(ICGANConfig, args.params, SECTION)
    x, y = data.load_prepared(args.prepared, "train")
    rows = _rows(args.indices, len(x))
    encoder = load_encoder(args.encoder, stage.device)
    resolved = {"icgan": {"features": config.to_dict(cfg.features)}, "encoder": str(args.encoder),
                "prepared": str(args.prepared), "indices": None if args.indices is None else str(args.indices)}
    with stage.tracked(resolved, "icgan/features", checkpointed=False) as log:
        started = time.perf_counter()
        instances = make_instances(encoder, torch.from_numpy(x[rows]), rows, cfg.features, stage.device)
        seconds = time.perf_counter() - started
        save_instances(stage.out, instances)
        purity, chance = label_purity(instances.neighbours, y[rows])  # the only use of the labels
        headline = {"label_purity": purity, "label_purity_chance": chance}
        record = stage.record(headline, k=cfg.features.k, feature_dim=int(instances.features.shape[1]),
                              n=len(rows), encoder=str(args.encoder), seconds=round(seconds, 1),
                              labels=LABELS_NOTE, similarity="cosine of L2-normalised encoder features",
                              neighbours_exclude_self=True)
        stage.write(record, logger=log)
        stage.write_metrics(headline)
    print(f"icgan features: n {len(rows)}, d {instances.features.shape[1]}, k {cfg.features.k}, label purity "
          f"{purity:.3f} (chance {chance:.3f})")
    return record.to_dict()


# ---------------------------------------------------------------- training

class LossTally:
    """Running sums of the GAN losses' logs since the last `means()`."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.n[k] = self.n.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.n[k] for k in sorted(self.sums)}
        self.sums, self.n = {}, {}
        return means


def tallied(method: GANMethod, tally: LossTally) -> GANMethod:
    """`method` whose D and G losses also add their logs to `tally`; the numbers are unchanged."""
    def d_loss(D, real, fake, augment, **conditions):
        value, logs = method.d_loss(D, real, fake, augment, **conditions)
        tally.add(logs)
        return value, logs

    def g_loss(D, fake, augment, **conditions):
        value, logs = method.g_loss(D, fake, augment, **conditions)
        tally.add(logs)
        return value, logs

    return dataclasses.replace(method, d_loss=d_loss, g_loss=g_loss)


def generator_arch(cfg: ICGANConfig, instance_dim: int, img_channels: int, resolution: int) -> dict:
    """`ConditionalGenerator`'s keyword arguments of the config (what `generator.pt` stores to rebuild G)."""
    return {"z_dim": cfg.z_dim, "instance_dim": instance_dim, "embed_dim": cfg.embed_dim, "width": cfg.width,
            "img_channels": img_channels, "resolution": resolution}


def build_gan(cfg: ICGANConfig, instance_dim: int, img_channels: int, resolution: int
              ) -> tuple[ConditionalGenerator, nn.Module]:
    """G(z, h) and the projection D(x, h) of the config, for features of size `instance_dim`."""
    return conditional_gan(cfg.discriminator, width=cfg.width, z_dim=cfg.z_dim, instance_dim=instance_dim,
                           embed_dim=cfg.embed_dim, img_channels=img_channels, resolution=resolution)


def gan_data(images: Tensor, instances: Instances, batch_size: int, seed: int, device: torch.device
             ) -> tuple[data.DeviceLoader, InstanceConditions]:
    """The GAN's loader and condition provider, made of the training images and their features only.

    `images` are the instances' images in the instances' order (row i is instance i). The loader's
    label slot is a zero placeholder (`DeviceLoader` needs one): no label reaches training.
    """
    if len(images) != len(instances.features):
        raise ValueError(f"need one image per instance, got {len(images)} images for {len(instances.features)}")
    placeholder = torch.zeros(len(images), dtype=torch.long)
    loader = data.DeviceLoader(images, placeholder, batch_size=batch_size, shuffle=True, drop_last=True, seed=seed,
                               device=device)
    condition = InstanceConditions(images, instances.features, k=instances.neighbours.shape[1],
                                   neighbours=instances.neighbours, device=device)
    return loader, condition


@torch.no_grad()
def neighbourhood_grid(G_ema: nn.Module, images: Tensor, instances: Instances, cfg: GridConfig,
                       device: torch.device) -> Tensor:
    """uint8 (H, W, C) grid: per row an instance | black | `samples` G_ema(z, h) | black | `neighbours` real
    neighbours (the most similar first). Instances and z come from a CPU generator seeded with `cfg.seed`."""
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(images)
    pick = torch.randperm(n, generator=g)[:cfg.instances]
    z = torch.randn(len(pick) * cfg.samples, G_ema.z_dim, generator=g)
    h = instances.features[pick].repeat_interleave(cfg.samples, dim=0)
    was_training = G_ema.training
    G_ema.eval()
    with autocast(device):
        fakes = to_uint8(G_ema(z.to(device), h.to(device))).cpu().view(len(pick), cfg.samples, *images.shape[1:])
    G_ema.train(was_training)
    k = min(cfg.neighbours, instances.neighbours.shape[1])
    reals = images[instances.neighbours[pick, :k]].cpu()  # (instances, k, C, H, W)
    black = images.new_zeros(len(pick), 1, *images.shape[1:]).cpu()
    rows = torch.cat([images[pick].cpu()[:, None], black, fakes, black, reals], dim=1)
    return image_grid(rows.flatten(0, 1), nrow=rows.shape[1])


def losses_figure(history: list[dict], path: Path) -> None:
    from shared.report import figure, save_png  # matplotlib only here
    fig, (ax,) = figure(1)
    steps = [row["step"] for row in history]
    for key, label in (("d/loss", "D hinge loss"), ("g/loss", "G loss (-D(G(z, h)))")):
        ax.plot(steps, [row.get(key, float("nan")) for row in history], marker="o", markersize=3, label=label)
    ax.set_xlabel("G step")
    ax.set_ylabel("mean over the interval")
    ax.set_title("IC-GAN losses")
    ax.legend()
    save_png(fig, path)


def run_train(args: argparse.Namespace) -> dict:
    stage = start(PAPER, "icgan_train", suite_params=args.suite_params, out=args.out, metrics=args.metrics,
                  plots=args.plots)
    cfg = stage.section(ICGANConfig, args.params, SECTION)
    device = stage.device
    instances = load_instances(args.features)
    x, _ = data.load_prepared(args.prepared, "train")  # the labels are not used
    if instances.rows.max() >= len(x):
        raise ValueError(f"{args.features}: rows up to {instances.rows.max()} but {args.prepared} has {len(x)} "
                         f"train images: features of another dataset")
    images = torch.from_numpy(x[instances.rows])
    del x  # 30k 64 x 64 images are 370 MB: keep one copy
    loader, condition = gan_data(images, instances, cfg.train.batch_size, stage.seed, device)
    G, D = build_gan(cfg, instances.features.shape[1], images.shape[1], images.shape[2])
    G, D = to_device(G, device), to_device(D, device)

    tally = LossTally()
    train_cfg, fid_label, final_evaluate, scorer_eval = cfg.train, None, None, None
    if cfg.fid_samples > 0:
        test_x, _ = data.load_prepared(args.prepared, "test")
        scorer, final_scorer = metrics.gan_scorers(test_x, cfg.metrics, device,
                                                   reference=f"{args.prepared} test split")
        train_cfg = dataclasses.replace(cfg.train, best_key=f"fid_{scorer.kind}")
        scorer_eval = fid_evaluate(scorer, cfg.fid_samples, 500, device, cfg.z_dim, condition=condition)
        if final_scorer is not None:
            final_evaluate = fid_evaluate(final_scorer, cfg.metrics.inception_samples, 500, device, cfg.z_dim,
                                          condition=condition)
        fid_label = scorer.label if final_scorer is None else {"during_training": scorer.label,
                                                               "final_best_g_ema": final_scorer.label}

    def evaluate(G_ema: nn.Module, step: int) -> dict[str, float]:
        return {**tally.means(), **(scorer_eval(G_ema, step) if scorer_eval is not None else {})}

    resolved = {"icgan": config.to_dict(cfg), "features": str(args.features), "prepared": str(args.prepared),
                "fid": fid_label}
    with stage.tracked(resolved, "icgan/train") as log:
        result = train_gan(train_cfg, G, D, tallied(hinge(""), tally), loader, out_dir=stage.out, logger=log,
                           device=device, z_dim=cfg.z_dim, evaluate=evaluate, condition=condition,
                           final_evaluate=final_evaluate)
        arch = generator_arch(cfg, instances.features.shape[1], images.shape[1], images.shape[2])
        save_generator(stage.out / GENERATOR_FILE, result.G_ema, arch, result.steps)
        grid = neighbourhood_grid(result.G_ema, images, instances, cfg.grid, device)
        atomic_write(stage.out / "neighbourhoods.png", lambda f: f.write(png_bytes(grid)))
        log.log_image(grid, "neighbourhoods.png")
        losses_figure(result.history, stage.out / "losses.png")
        last = result.history[-1]
        headline = {"d_loss": last["d/loss"], "g_loss": last["g/loss"]}
        if result.best is not None:
            headline.update({k: v for k, v in result.best.items() if k != "step"})
        if result.final is not None:
            headline.update({k: v for k, v in result.final.items() if k.startswith("fid_")})
        record = stage.record(
            headline, history=result.history, steps=result.steps, train_seconds=round(result.train_seconds),
            seconds_per_step=result.train_seconds / max(result.steps, 1), best_step=(result.best or {}).get("step"),
            fid=fid_label or "not computed at this config (icgan.fid_samples = 0): the losses only",
            fid_samples=cfg.fid_samples, n_train_images=len(images), k=int(instances.neighbours.shape[1]),
            feature_dim=int(instances.features.shape[1]),
            parameters={"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())},
            generator="generator.pt: the final G_ema (best.pt: the best-FID G_ema, when an FID is computed)",
            labels="not used: the loader's label slot is a zero placeholder")
        stage.write(record, logger=log)
        stage.write_metrics(headline)
        stage.write_plot("d/loss", result.history)
    print(f"icgan train: {headline} ({stage.scale}, {result.steps} steps, {result.train_seconds:.0f} s)")
    return record.to_dict()


# ---------------------------------------------------------------- augmentation

def instance_positions(instance_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each prepared row in `rows`, its position in `instance_rows` (the features stage's rows).

    A ValueError names the rows the features do not cover.
    """
    instance_rows, rows = np.asarray(instance_rows, np.int64), np.asarray(rows, np.int64)
    order = np.argsort(instance_rows, kind="stable")
    sorted_rows = instance_rows[order]
    at = np.searchsorted(sorted_rows, rows).clip(max=max(len(sorted_rows) - 1, 0))
    found = (sorted_rows[at] == rows) if len(sorted_rows) else np.zeros(len(rows), bool)
    if not found.all():
        missing = rows[~found]
        raise ValueError(f"the features cover {len(instance_rows)} rows but not {len(missing)} of the "
                         f"{len(rows)} rows to augment (e.g. {missing[:5].tolist()}): compute the features for a "
                         f"set that contains them (`icgan features --indices`)")
    return order[at]


def per_index_latents(rows: Sequence[int] | np.ndarray, z_dim: int, seed: int) -> Tensor:
    """z (n, z_dim) ~ N(0, I), float32: row i drawn by numpy's `default_rng([seed, rows[i]])` alone, so an
    image's latent depends on the seed and its prepared row only, not on the batch or the other rows.

    (numpy's SeedSequence takes both numbers whole; torch's CPU generator keeps only the low 32 bits of
    a seed, so seed * 2^32 + row would give every seed the same latents.)
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) and rows.min() < 0:
        raise ValueError(f"rows must be >= 0, got {rows.min()}")
    z = np.empty((len(rows), z_dim), np.float32)
    for i, row in enumerate(rows.tolist()):  # one generator per image: ~20 us each
        z[i] = np.random.default_rng([seed, row]).standard_normal(z_dim)
    return torch.from_numpy(z)


@torch.no_grad()
def generate(G: nn.Module, z: Tensor, h: Tensor, batch_size: int, device: torch.device,
             progress: bool = True) -> Tensor:
    """uint8 G(z_i, h_i) (n, C, H, W) on the CPU, G in eval mode (batch norm with running statistics: each
    image depends on its own z and h only)."""
    if z.shape[0] != h.shape[0]:
        raise ValueError(f"need one feature per latent, got {h.shape[0]} for {z.shape[0]}")
    was_training = G.training
    G.eval()
    out = []
    for zc, hc in tqdm(list(zip(z.split(batch_size), h.split(batch_size))), desc="icgan augment", unit="batch",
                       disable=not progress):
        with autocast(device):
            out.append(to_uint8(G(zc.to(device), hc.to(device))).cpu())
    G.train(was_training)
    return torch.cat(out)


def batch1_seconds(G: nn.Module, z: Tensor, h: Tensor, device: torch.device) -> float | None:
    """Seconds per image generating one image at a time (Table 4's protocol), over the given rows."""
    if len(z) == 0:
        return None
    generate(G, z[:1], h[:1], 1, device, progress=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    generate(G, z, h, 1, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / len(z)


def pairs_grid(originals: Tensor, generated: Tensor, pairs_per_row: int = 8) -> Tensor:
    """uint8 grid of (original, generated) pairs side by side, `pairs_per_row` pairs a row."""
    interleaved = torch.stack([originals, generated], dim=1).flatten(0, 1)
    return image_grid(interleaved, nrow=2 * pairs_per_row)


def run_augment(args: argparse.Namespace) -> dict:
    stage = start(PAPER, "noise_augment", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    cfg = stage.section(ICGANConfig, args.params, SECTION).augment
    device = stage.device
    x, _ = data.load_prepared(args.prepared, "train")  # the labels are not used
    rows = _rows(args.indices, len(x))
    instances = load_instances(args.features)
    h = instances.features[instance_positions(instances.rows, rows)]
    G = load_generator(args.generator, device)
    if G.embed.instance_dim != h.shape[1] or tuple(x.shape[1:]) != (G.img_channels, G.resolution, G.resolution):
        raise ValueError(f"{args.generator} makes {G.img_channels} x {G.resolution}^2 images from "
                         f"{G.embed.instance_dim}-d features; {args.features} has {h.shape[1]}-d features, "
                         f"{args.prepared} {tuple(x.shape[1:])} images")
    z = per_index_latents(rows, G.z_dim, cfg.seed)
    resolved = {"icgan": {"augment": config.to_dict(cfg)}, "generator": str(args.generator),
                "features": str(args.features), "prepared": str(args.prepared),
                "indices": None if args.indices is None else str(args.indices)}
    with stage.tracked(resolved, "icgan/augment", checkpointed=False) as log:
        started = time.perf_counter()
        generated = generate(G, z, h, cfg.batch_size, device)
        seconds = time.perf_counter() - started
        sources = x[rows]
        write_precomputed(stage.out / AUGMENT_FILE, generated, sources, meta={
            "generator": "IC-GAN G_ema(z, h(x))", "generator_file": str(args.generator), "seed": cfg.seed,
            "z": f"N(0, I): per image numpy.random.default_rng([{cfg.seed}, prepared train row])"
                 f".standard_normal(z_dim)",
            "rows": "row i = the i-th row of --indices (all prepared train rows without it)",
            "indices": None if args.indices is None else str(args.indices),
            "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest()})
        n_grid = min(cfg.grid_pairs, len(rows))
        grid = pairs_grid(torch.from_numpy(sources[:n_grid]), generated[:n_grid])
        atomic_write(stage.out / "pairs.png", lambda f: f.write(png_bytes(grid)))
        log.log_image(grid, "pairs.png")
        n_time = min(cfg.timing_images, len(rows))
        batch1 = batch1_seconds(G, z[:n_time], h[:n_time], device)
        headline = {"seconds_per_image": seconds / len(rows)}
        if batch1 is not None:
            headline["seconds_per_image_batch1"] = batch1
        record = stage.record(headline, n=len(rows), batch_size=cfg.batch_size, timing_images=n_time,
                              generator_parameters=sum(p.numel() for p in G.parameters()),
                              timing_note="G only, features precomputed (the encoder's forward is not timed)",
                              output=AUGMENT_FILE, z_seed=cfg.seed)
        stage.write(record, logger=log)
        stage.write_metrics(headline)
    print(f"icgan augment: {len(rows)} images, {headline}")
    return record.to_dict()


# ---------------------------------------------------------------- command line

def _stage_arguments(p: argparse.ArgumentParser, plots: bool = False) -> None:
    p.add_argument("--params", type=Path, default=PARAMS, help="the paper's params file (section icgan)")
    p.add_argument("--suite-params", type=Path, default=Path("params.yaml"), help="scale, seed, device, ...")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    if plots:
        p.add_argument("--plots", type=Path, default=None, help="the loss curve for DVC (outside --out)")
    add_debug_argument(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.gencl.icgan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("features", help="instance features of the unsupervised encoder and their k-NN")
    p.add_argument("--encoder", type=Path, required=True, help="the gamma = 0 VICReg baseline's encoder file")
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--indices", type=Path, default=None, help="prepared train rows (default: all)")
    _stage_arguments(p)
    p = sub.add_parser("train", help="train the IC-GAN on the instances")
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--prepared", type=Path, required=True)
    _stage_arguments(p, plots=True)
    p = sub.add_parser("augment", help="one G_ema(z, h(x)) per SSL-set image")
    p.add_argument("--generator", type=Path, required=True, help="the train stage's folder or its generator.pt")
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--indices", type=Path, default=None, help="the SSL set's prepared train rows (default: all)")
    _stage_arguments(p)
    args = parser.parse_args(argv)
    run = {"features": run_features, "train": run_train, "augment": run_augment}[args.command]
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
