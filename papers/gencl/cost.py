"""Stage `cost`: Table 4's cost-benefit measurements (FID, SSIM, inference time, parameters) per augmentation.

    python -m papers.gencl.cost --params papers/gencl/params.yaml --prepared data/prepared/tinyimagenet100 \
        [--indices <SSL set rows .npy>] --noise <noise.npy> --mask <mask.npy> \
        --tokenizer <tokenizer.pt> --inpainter <inpainter.pt> --icgan <IC-GAN train folder> \
        --encoder <the instance-feature encoder of the IC-GAN features stage> --out <folder> [--metrics <flat json>] \
        [--rows <a subset of noise mask crop jitter blur>]

For each of Table 4's rows, on the SSL set (`prepared train[indices]`, all train rows without `--indices`):

- noise, mask: the generated images the augment stages stored (`shared.view_sources.PrecomputedViews`, row i
  belonging to the i-th SSL image; every lookup checks the source images' fingerprints);
- crop, jitter, blur: VICReg's crop, colour jitter and blur (`vicreg_pipelines()`'s first branch: crop scale
  (0.08, 1), jitter 0.4/0.4/0.2/0.1, blur sigma U(0.1, 2) with a kernel of 10% of the side), each alone with
  p = 1 (spec 1.C PROPOSE: the paper does not say which parameters it measured), seeded from the run seed.

Measured (section `cost` of params.yaml, `CostConfig`):

- FID of the augmented images against their originals (set level: "for each image ... the FID ... between the
  original and augmented image", Sec. 4.3, read as one FID of the two sets; a per-image FID does not exist),
  on `fid_n` evenly spread SSL images: `shared.metrics.make_scorer`, the Inception pool3 network when
  `cost.metrics.inception_weights` is a file, else the in-domain extractor. The key names the detector
  (`fid_inception` / `fid_indomain`) and every FID record carries the scorer's `describe()` keys
  (`metrics.FID_RECORD_KEYS`: label, sample counts, reference set, detector file and SHA-1).
- SSIM (`ssim`: Wang et al. 2004, Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1, per channel,
  averaged) of each augmented image against its original, averaged over `ssim_n` evenly spread images.
- Inference time per image at batch 1 over `time_n` images (`time_per_image`; 1,000 in the paper), after
  `time_warmup` untimed calls, on the stage's device: for the generators the whole path from an image to its
  augmentation (IC-GAN: instance-feature encoder + normalisation + G(z, h); MaskGIT analogue: VQ encode, border
  mask, `parallel_decode`, VQ decode, with the border, iterations and choice temperature the mask augment stage
  stored in its file's meta); for crop / jitter / blur the batched op called on a batch of one. The paper's times
  are GPU times of other models: compare the ratios (mask / noise, mask / crop, mask / jitter, mask / blur),
  recorded beside the times.
- Parameters of each generator (`count_parameters`): the IC-GAN's encoder and G, the tokenizer (with its EMA
  codebook, `papers.gencl.vq.n_parameters`) and the in-painter.

`--rows` measures some rows alone (the DVC stage: all five), e.g. the mask-based row again after a new
in-painter without the IC-GAN's files; the time ratios are then those among the rows measured.

Writes in `--out`: per row one record per Table 4 column, `rows/<row>/table4_fid.json`, `table4_ssim.json`,
`table4_time_ms.json` (and `table4_params_m.json` for noise and mask: crop, jitter and blur print N/A), each with
`table` / `row` as in reported.yaml; `metrics.json` with every number flat (`fid_<kind>_<row>`, `ssim_<row>`,
`time_ms_<row>`, `params_m_<row>`, `time_ratio_mask_<other>`); `cost.png` (bars of FID, SSIM and ms per image).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from papers.gencl.encoder import load_encoder
from papers.gencl.generator import load_generator
from papers.gencl.inpainter import border_mask, load_inpainter, parallel_decode
from papers.gencl.vq import load_tokenizer, n_parameters
from shared import config, data
from shared.cli import run_stage, stage_parser
from shared.metrics import MetricsConfig, make_scorer
from shared.report import figure, save_png
from shared.stage import start
from shared.view_sources import PipelineConfig, PrecomputedViews, classic_view, vicreg_pipelines

PAPER = "gencl"
PARAMS = Path(__file__).with_name("params.yaml")
SECTION = "cost"
# Table 4's rows, in its order: id (reported.yaml) -> label as printed
ROWS = {"noise": "Noise-Based", "mask": "Mask-Based", "crop": "Crop", "jitter": "Color Jitter",
        "blur": "Gaussian Blur"}
GENERATORS = ("noise", "mask")
OPS = {"crop": "crop", "jitter": "jitter", "blur": "blur"}  # row -> the shared.views op it applies
# seed offsets of the random draws, per row (crop / jitter / blur draws, the generators' latents)
SEED_OFFSETS = {"noise": 1, "mask": 2, "crop": 3, "jitter": 4, "blur": 5}
MASK_SETTINGS = ("border", "iterations", "choice_temperature")  # read from the mask file's meta
SSIM_SETTINGS = {"window": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 1.0,
                 "per": "channel, valid (unpadded) positions, averaged over channels and positions, then images",
                 "reference": "Wang et al. 2004; = skimage structural_similarity(gaussian_weights=True, sigma=1.5, "
                              "use_sample_covariance=False, data_range=1, channel_axis=0)"}


@dataclasses.dataclass
class CostConfig:
    """Section `cost`. Defaults: scale paper (Sec. 4.3: every training image for FID and SSIM, 1,000 timed)."""
    fid_n: int | None = None  # images per FID set (originals, and each augmentation); None: the whole SSL set
    ssim_n: int | None = None  # images SSIM is averaged over; None: the whole SSL set
    time_n: int = 1000  # images augmented one at a time for the inference time (the paper: 1,000)
    time_warmup: int = 10  # untimed calls before timing (first-call allocation, kernel selection)
    batch_size: int = 256  # of the batched passes (augmenting for FID / SSIM, the detector); not the timing's
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)

    def __post_init__(self):
        for name in ("fid_n", "ssim_n"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"cost.{name} must be >= 2 or null (all), got {value}")
        if self.time_n < 1 or self.time_warmup < 0 or self.batch_size < 1:
            raise ValueError(f"need cost.time_n >= 1, cost.time_warmup >= 0, cost.batch_size >= 1; got "
                             f"{self.time_n}, {self.time_warmup}, {self.batch_size}")


# ---------------------------------------------------------------- SSIM

def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> Tensor:
    """The normalised 1-D Gaussian (size,) centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of each pair of images: float (N,).

    ``x``, ``y``: float (N, C, H, W) on a common scale of width ``data_range``. Local means, variances and the
    covariance come from a ``window`` x ``window`` Gaussian (``sigma``) applied separably per channel, at the
    valid positions only (no padding), with population (1/N-weighted) moments:

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
        C1 = (k1 L)^2, C2 = (k2 L)^2,

    averaged over positions and channels. This equals scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (its filter runs over the padded image, then
    it crops (window - 1) / 2 pixels per side before averaging: the valid positions). Computed in float64.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images {tuple(x.shape[-2:])} are smaller than the SSIM window ({window})")
    n, c = x.shape[:2]
    x, y = x.double(), y.double()
    g = gaussian_window(window, sigma, torch.float64, x.device)
    rows, cols = g.view(1, 1, window, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, window).repeat(c, 1, 1, 1)
    # one filter pass over the five maps: x, y, x^2, y^2, xy
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    filtered = F.conv2d(F.conv2d(stacked, rows, groups=c), cols, groups=c)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(n)
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------- timing and parameters

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_per_image(augment: Callable[[Tensor], Tensor], images: Tensor, n: int, warmup: int = 10,
                   progress: bool = True, desc: str = "time") -> dict[str, float]:
    """Milliseconds per image of ``augment`` called on one image at a time (a batch of one), over ``n`` calls.

    ``images`` (M, C, H, W) on the device ``augment`` runs on; call i gets ``images[i % M : i % M + 1]``, after
    ``warmup`` untimed calls. Each call is timed alone, between device synchronisations. Returns the mean (Table
    4's "average"), the median and the count.
    """
    if n < 1 or len(images) == 0:
        raise ValueError(f"need n >= 1 and at least one image, got n {n}, {len(images)} images")
    device = images.device
    m = len(images)
    for i in range(warmup):
        augment(images[i % m:i % m + 1])
    _synchronize(device)
    seconds = []
    for i in tqdm(range(n), desc=desc, unit="img", disable=not progress, leave=False):
        x = images[i % m:i % m + 1]
        started = time.perf_counter()
        augment(x)
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
    return {"time_ms": 1e3 * sum(seconds) / n, "time_ms_median": 1e3 * statistics.median(seconds), "time_n": n}


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module`` (every element of every parameter, frozen ones too)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- the augmentations

@dataclasses.dataclass
class Augmentation:
    """One of Table 4's rows: how its images for FID / SSIM are had, how one image is augmented for timing."""
    row: str
    # (uint8 originals (B, C, H, W) on the device, their SSL-set positions (B,)) -> uint8 augmented (B, C, H, W)
    batch: Callable[[Tensor, Tensor], Tensor]
    # one float image (1, C, H, W) in [0, 1] -> its augmentation: the path that is timed
    single: Callable[[Tensor], Tensor]
    parameters: dict[str, int] | None = None  # per part, generators only
    note: str = ""


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8, rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def vicreg_op(row: str) -> PipelineConfig:
    """VICReg's `row` op alone with p = 1 (its first branch's parameters: blur p is already 1 there)."""
    view = vicreg_pipelines()[0]
    op = OPS[row]
    cfg = view.only(op)
    return dataclasses.replace(cfg, **{op: dataclasses.replace(getattr(cfg, op), p=1.0)})


def classic_augmentation(row: str, device: torch.device, seed: int) -> Augmentation:
    cfg = vicreg_op(row)
    batch_rng = torch.Generator(device).manual_seed(seed)
    time_rng = torch.Generator(device).manual_seed(seed + 1)

    def batch(x: Tensor, positions: Tensor) -> Tensor:
        return to_uint8(classic_view(x.float() / 255, cfg, batch_rng))

    return Augmentation(row, batch, lambda x: classic_view(x, cfg, time_rng),
                        note=f"VICReg's {OPS[row]} alone with p = 1: {config.to_dict(getattr(cfg, OPS[row]))}")


def precomputed_batch(views: PrecomputedViews) -> Callable[[Tensor, Tensor], Tensor]:
    """The stored generated images of SSL-set positions, checked against the originals' fingerprints."""
    def batch(x: Tensor, positions: Tensor) -> Tensor:
        return to_uint8(views.generated(x, positions.to(x.device)))
    return batch


def noise_path(icgan_dir: Path, encoder_path: Path, device: torch.device,
               seed: int) -> tuple[Callable[[Tensor], Tensor], dict[str, int]]:
    """IC-GAN's full inference for one image: h = L2-normalised encoder(x), z ~ N(0, I), G(z, h); and the
    parameters of the encoder and G. The encoder from `papers.gencl.encoder`, G from the IC-GAN stage's loader
    (imported here, lazily)."""

    encoder, G = load_encoder(encoder_path, device).eval(), load_generator(icgan_dir, device)
    rng = torch.Generator().manual_seed(seed)  # latents drawn on the CPU, as the augment stage draws them

    def single(x: Tensor) -> Tensor:
        h = F.normalize(encoder(x).float(), dim=1)
        z = torch.randn(x.shape[0], G.z_dim, generator=rng).to(x.device)
        return G(z, h)

    return single, {"encoder": count_parameters(encoder), "generator": count_parameters(G)}


def mask_settings(views: PrecomputedViews) -> dict:
    """The decoding settings (border, iterations, choice temperature) the mask augment stage stored in its file's
    meta: the path timed here is the one that made the stored images."""
    meta = views.meta.get("meta", {})
    missing = [k for k in MASK_SETTINGS if k not in meta]
    if missing:
        raise ValueError(f"{views.path}: its meta has no {missing} (the mask augment stage's border, iterations, "
                         f"choice_temperature); remake it with `python -m papers.gencl.inpaint augment`")
    return {k: meta[k] for k in MASK_SETTINGS}


def mask_path(tokenizer_path: Path, inpainter_path: Path, settings: dict, device: torch.device,
              seed: int) -> tuple[Callable[[Tensor], Tensor], dict[str, int]]:
    """The mask-based inference for one image: VQ encode, GenCL's border mask, MaskGIT decoding, VQ decode, with
    the mask augment stage's `settings` (`mask_settings`); and the parameters of the tokenizer (codebook included)
    and the in-painter. A class-conditional in-painter gets a random class (its value does not change the work)."""
    tokenizer, inpainter = load_tokenizer(tokenizer_path, device), load_inpainter(inpainter_path, device)
    if inpainter.cfg.codebook_size != tokenizer.codebook_size:
        raise ValueError(f"{inpainter_path} predicts {inpainter.cfg.codebook_size} codes, {tokenizer_path} has "
                         f"{tokenizer.codebook_size}: not a pair")
    rng = torch.Generator().manual_seed(seed)  # parallel_decode draws its per-map seeds on the CPU
    masks: dict[tuple[int, int], Tensor] = {}

    def single(x: Tensor) -> Tensor:
        tokens = tokenizer.encode_indices(x)
        grid = tuple(tokens.shape[-2:])
        if grid != tuple(inpainter.cfg.grid):
            raise ValueError(f"images {tuple(x.shape[-2:])} make {grid} token maps; {inpainter_path} in-paints "
                             f"{tuple(inpainter.cfg.grid)} maps")
        if grid not in masks:
            masks[grid] = border_mask(*grid, border=settings["border"]).to(x.device)
        classes = None
        if inpainter.cfg.class_token != "none":
            classes = torch.randint(0, inpainter.cfg.num_classes, (x.shape[0],), generator=rng).to(x.device)
        out = parallel_decode(inpainter, tokens, masks[grid], settings["iterations"], settings["choice_temperature"],
                              generator=rng, classes=classes)
        return tokenizer.decode_indices(out)

    return single, {"tokenizer": n_parameters(tokenizer), "inpainter": count_parameters(inpainter)}


# ---------------------------------------------------------------- measuring

def augmented_set(aug: Augmentation, originals: Tensor, positions: Tensor, batch_size: int,
                  device: torch.device) -> Tensor:
    """uint8 augmented images of ``originals[positions]`` (on the CPU), batch by batch on ``device``."""
    out = []
    for chunk in positions.split(batch_size):
        out.append(aug.batch(originals[chunk].to(device), chunk).cpu())
    return torch.cat(out)


def mean_ssim(aug: Augmentation, originals: Tensor, positions: Tensor, batch_size: int,
              device: torch.device) -> float:
    """SSIM of each original with its augmentation (both as uint8 / 255), averaged over ``positions``."""
    total = 0.0
    for chunk in positions.split(batch_size):
        x = originals[chunk].to(device)
        y = aug.batch(x, chunk)
        total += float(ssim(x.double() / 255, y.double() / 255).sum())
    return total / len(positions)


def time_ratios(times: dict[str, float]) -> dict[str, float]:
    """mask's time over each other row's (the paper: 5x the IC-GAN's, 27-171x the geometry and colour ops')."""
    if "mask" not in times:
        return {}
    return {f"time_ratio_mask_{row}": times["mask"] / t for row, t in times.items() if row != "mask" and t > 0}


def cost_figure(fid: dict[str, float], fid_label: str, fid_n: int, ssims: dict[str, float], times: dict[str, float]):
    fig, axes = figure(3, width=4.2, height=3.6)
    rows = list(ROWS)
    for ax, values, title, log in ((axes[0], fid, f"FID vs originals, {fid_n} images\n{fid_label}", False),
                                   (axes[1], ssims, "SSIM vs originals", False),
                                   (axes[2], times, "ms per image, batch 1 (log)", True)):
        ax.bar([ROWS[r] for r in rows], [values.get(r, math.nan) for r in rows], color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if log:
            ax.set_yscale("log")
    fig.suptitle("gencl: Table 4's cost of each augmentation", fontsize=10)
    return fig


# ---------------------------------------------------------------- the stage

INPUTS = {"noise": ("noise", "icgan", "encoder"), "mask": ("mask", "tokenizer", "inpainter")}  # row -> its args


def check_inputs(args: argparse.Namespace) -> None:
    """Every input file the rows in ``--rows`` need was given (a generator's row needs its generator)."""
    for row in (r for r in INPUTS if r in args.rows):
        if missing := [f"--{n}" for n in INPUTS[row] if getattr(args, n) is None]:
            raise ValueError(f"--rows includes {row}: {', '.join(missing)} required")


def build_augmentations(args: argparse.Namespace, device: torch.device, seed: int,
                        n_rows: int) -> dict[str, Augmentation]:
    """The augmentations of ``args.rows`` (Table 4's order)."""
    views = {}
    for row, path, stage_name in (("noise", args.noise, "noise_augment"), ("mask", args.mask, "mask_augment")):
        if row not in args.rows:
            continue
        views[row] = PrecomputedViews(path, stage=f"papers/gencl/dvc.yaml:{stage_name}")
        if len(views[row]) != n_rows:
            raise ValueError(f"{path} holds {len(views[row])} generated images, the SSL set {n_rows}: made for "
                             f"another --indices")
    augs = {}
    if "noise" in views:
        noise_single, noise_params = noise_path(args.icgan, args.encoder, device, seed + SEED_OFFSETS["noise"])
        augs["noise"] = Augmentation("noise", precomputed_batch(views["noise"]), noise_single, noise_params,
                                     "stored IC-GAN images; timed: encoder + G")
    if "mask" in views:
        settings = mask_settings(views["mask"])
        mask_single, mask_params = mask_path(args.tokenizer, args.inpainter, settings, device,
                                             seed + SEED_OFFSETS["mask"])
        augs["mask"] = Augmentation("mask", precomputed_batch(views["mask"]), mask_single, mask_params,
                                    f"stored in-painted images; timed: VQ encode + border-{settings['border']} "
                                    f"mask + {settings['iterations']}-iteration decode + VQ decode")
    for row in OPS:
        if row in args.rows:
            augs[row] = classic_augmentation(row, device, seed + 100 * SEED_OFFSETS[row])
    return augs


def run(args: argparse.Namespace) -> dict:
    check_inputs(args)
    stage = start(PAPER, SECTION, suite_params=args.suite_params, out=args.out, trial=args.seed,
                  metrics=args.metrics)
    cfg = stage.section(CostConfig, args.params, SECTION)
    device = stage.device
    x, _ = data.load_prepared(args.prepared, "train")  # labels are not used
    rows = np.arange(len(x)) if args.indices is None else data.load_indices(args.indices)
    if len(rows) and rows.max() >= len(x):
        raise ValueError(f"{args.indices}: row {rows.max()} is beyond the prepared train split ({len(x)} rows)")
    originals = torch.from_numpy(x[rows])
    augs = build_augmentations(args, device, stage.seed, len(originals))

    fid_pos, ssim_pos = data.evenly_spaced(len(originals), cfg.fid_n), data.evenly_spaced(len(originals), cfg.ssim_n)
    time_pos = data.evenly_spaced(len(originals), cfg.time_n)
    timing_images = originals[time_pos].to(device).float() / 255
    resolved = {SECTION: config.to_dict(cfg), "prepared": str(args.prepared),
                "indices": None if args.indices is None else str(args.indices), "rows": list(augs),
                **{k: None if getattr(args, k) is None else str(getattr(args, k))
                   for names in INPUTS.values() for k in names}}
    with stage.tracked(resolved, "cost", checkpointed=False) as log:
        scorer = make_scorer(originals[fid_pos], cfg.metrics.inception_weights, cfg.metrics.extractor, device,
                             reference=f"{len(fid_pos)} original SSL-set images (the same rows as the augmented)")
        described = scorer.describe(len(fid_pos))
        fid_key = f"fid_{scorer.kind}"
        fid, ssims, times, params, flat = {}, {}, {}, {}, {}
        for row, aug in augs.items():
            fid[row] = scorer.score(augmented_set(aug, originals, fid_pos, cfg.batch_size, device))[fid_key]
            ssims[row] = mean_ssim(aug, originals, ssim_pos, cfg.batch_size, device)
            timed = time_per_image(aug.single, timing_images, cfg.time_n, cfg.time_warmup, desc=f"time {row}")
            times[row] = timed["time_ms"]
            common = {"label": {"augmentation": ROWS[row]}, "note": aug.note}
            stage.write(stage.record({fid_key: fid[row]}, table="table4_fid", row=row, **described, **common),
                        f"rows/{row}/table4_fid.json")
            stage.write(stage.record({"ssim": ssims[row]}, table="table4_ssim", row=row, ssim_n=len(ssim_pos),
                                     ssim_settings=SSIM_SETTINGS, **common), f"rows/{row}/table4_ssim.json")
            stage.write(stage.record({"time_ms": times[row]}, table="table4_time_ms", row=row,
                                     time_ms_median=timed["time_ms_median"], time_n=cfg.time_n,
                                     time_warmup=cfg.time_warmup, device=str(device), threads=stage.suite.threads,
                                     batch_size=1, **common), f"rows/{row}/table4_time_ms.json")
            flat.update({f"{fid_key}_{row}": fid[row], f"ssim_{row}": ssims[row], f"time_ms_{row}": times[row]})
            if aug.parameters is not None:
                params[row] = sum(aug.parameters.values())
                stage.write(stage.record({"params_m": params[row] / 1e6}, table="table4_params_m", row=row,
                                         parameters=aug.parameters, parameters_total=params[row], **common),
                            f"rows/{row}/table4_params_m.json")
                flat[f"params_m_{row}"] = params[row] / 1e6
            print(f"cost {row}: {fid_key} {fid[row]:.3f}, ssim {ssims[row]:.3f}, {times[row]:.3f} ms/img"
                  + (f", {params[row] / 1e6:.3f} M parameters" if row in params else ""))
        flat.update(time_ratios(times))
        fig = cost_figure(fid, described["fid_label"], len(fid_pos), ssims, times)
        save_png(fig, stage.out / "cost.png")
        log.log_figure(fig, "cost.png")
        record = stage.record(flat, fid_n=len(fid_pos), ssim_n=len(ssim_pos), time_n=cfg.time_n,
                              ssl_images=len(originals), image_shape=list(originals.shape[1:]),
                              rows=list(augs),
                              parameters={row: augs[row].parameters for row in GENERATORS if row in augs},
                              notes={row: aug.note for row, aug in augs.items()}, ssim_settings=SSIM_SETTINGS,
                              timing=("batch 1, each call timed alone between device synchronisations, after "
                                      f"{cfg.time_warmup} untimed calls; CPU/GPU times are not the paper's: compare "
                                      "the ratios"), **described)
        stage.write(record, logger=log)
        stage.write_metrics(flat)
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--prepared", type=Path, required=True, help="the prepared dataset folder (train.npz)")
    parser.add_argument("--indices", type=Path, default=None, help="the SSL set's train rows (.npy); default all")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="Table 4's rows to measure (default all); a generator's row needs its files below")
    parser.add_argument("--noise", type=Path, default=None, help="the IC-GAN augment stage's noise.npy")
    parser.add_argument("--mask", type=Path, default=None, help="the mask augment stage's generated images (.npy)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="the VQ tokenizer file")
    parser.add_argument("--inpainter", type=Path, default=None, help="the in-painter file")
    parser.add_argument("--icgan", type=Path, default=None, help="the IC-GAN train stage's folder (generator.pt)")
    parser.add_argument("--encoder", type=Path, default=None,
                        help="the instance-feature encoder the IC-GAN features stage used (timed with G)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the trial index (one run: 0)")
    parser.add_argument("--metrics", type=Path, default=None, help="every number as a flat JSON for DVC")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
