"""Stage `retrain`: F re-trained with MoCo v2 (Sec. 3.2, eq. 15) in one of Table 1's three compute-matched variants.

    python -m papers.augmentation_generator.retrain --variant xp_ga --seed 0 \
        --data papers/augmentation_generator/outputs/data \
        --encoder papers/augmentation_generator/outputs/pretrain/seed0/encoder.pt \
        --generators papers/augmentation_generator/outputs/game/seed0/generators.pt \
        --latents papers/augmentation_generator/outputs/game/seed0/latents.pt \
        --out papers/augmentation_generator/outputs/retrain/xp_ga_seed0

Variants (Table 1, EMNIST-Omniglot rows 1-3):
  xp      X_p alone, MoCo v2's views (the baseline);
  xp_ga   X_p with G_A as an additional augmentation (ours, eq. 15): query F(t(x)), key F_m(t'(G_A(x, z))),
          z drawn uniformly from the rows of Z~ = G_L(X~_f) (`--latents`), G_A frozen (`--generators`);
  xp_xf   X_p together with X~_f (the dotted fine-tuning images, never the clean ones), MoCo v2's views.
`--generators` / `--latents` are read by xp_ga only (the DVC matrix passes them to every variant).

Eq. (15) is printed as l(F(x), G_A(F(x), z)), as if G_A acted on F(x); G_A: X x Z -> X acts on images, so
the loss is MoCo's InfoNCE between F of the image and F of G_A's image (spec 2.C). G_A acts on the clean
[0, 1] image before MoCo's own augmentation t' ("Additional augmentation: G_A"), on the key view
(`retrain.ga_branch: key`) or on both views (`both`: independent draws of the coin and of z per view,
as every other augmentation op draws per view), each sample with probability `retrain.ga_p`.

Compute matched: every variant runs exactly the same number of optimiser steps at the same batch size,
`retrain.steps` (None: `retrain.ssl.epochs` passes of X_p, floor(|X_p| / batch) steps each), also xp_xf,
whose data set is larger: an "epoch" of this stage is a fixed number of full batches, drawn from
successive shuffled passes over the variant's data (`StepLoader`). The stage asserts the step count and
records it (`steps`). Init (`retrain.init`): the pre-trained F (`--encoder`), with MoCo's heads, key
encoder and queue continued from the pre-training (`retrain.heads: pretrained`) or fresh (`fresh`), or
a freshly initialised F of the same width (`scratch`). The optimiser and its cosine schedule start anew.

Writes `<out>/encoder.pt` (F re-trained, plus its MoCo state), `<out>/metrics.json` (no table: the loss and
the kNN monitor per evaluation, `steps`), `<out>/checkpoint.pt` (resumed after a kill with the same config
and inputs), or the skip marker for a seed the scale does not run.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from papers.augmentation_generator.config import PARAMS, VARIANTS, RetrainConfig, RunsConfig
from papers.augmentation_generator.data import load_splits
from papers.augmentation_generator.encoder import (DownstreamMonitor, LossMeter, build_encoder, build_moco, load_state,
                                                   read_encoder_file, save_encoder)
from papers.augmentation_generator.models import load_generators, load_latents
from shared import checkpoint, config
from shared.cli import run_stage, stage_parser
from shared.data import sha256_file
from shared.device import to_device
from shared.stage import start
from shared.trainers.ssl import train_ssl
from shared.view_sources import ClassicViews, GeneratorViews, PipelineConfig, as_float_images, bank_latent, classic_view


# ---------------------------------------------------------------- the G_A view source

class AugmenterViews:
    """View source of eq. (15): ``[t(x), t'(G_A(x, z))]``, G_A applied to a sample with probability ``p``.

    Each selected sample's input of the chosen branch(es) is replaced by ``G_A(x, z)`` (the clean
    [0, 1] image in, z a uniformly drawn row of ``latents`` = Z~), then both views go through MoCo's
    pipeline ``t`` as one batched call, exactly as ``ClassicViews.symmetric(pipeline, 2)`` makes them:
    with p = 0 nothing is drawn for G_A and the views are that source's, draw for draw; with p = 1 no
    coin is drawn and every sample of the branch gets G_A. ``branch``: "key" (view 2, MoCo's key) or
    "both" (an independent coin and z per view). G_A runs without gradient (frozen; set it to eval
    mode and ``requires_grad_(False)`` before, as :func:`frozen` does). Draw order: the coins of each
    branch, then per branch z, then the pipeline. ``last_mask`` (N, 2) says which inputs came from G_A.
    """

    def __init__(self, pipeline: PipelineConfig, augmenter: nn.Module, latents: Tensor, p: float,
                 branch: Literal["key", "both"] = "key"):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if branch not in ("key", "both"):
            raise ValueError(f"branch must be 'key' or 'both', got {branch!r}")
        self.pipeline, self.p = pipeline, p
        self.branches = (1,) if branch == "key" else (0, 1)
        self.source = GeneratorViews(augmenter, latent=bank_latent(latents))  # no_grad, output clamped to [0, 1]
        self.last_mask: Tensor | None = None

    def _coins(self, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        if self.p in (0.0, 1.0):  # exact, and nothing drawn: p = 0 is the standard views draw for draw
            return torch.full((n,), self.p == 1.0, dtype=torch.bool, device=device)
        return torch.rand(n, device=device, generator=generator) < self.p

    def __call__(self, x: Tensor, index: Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[Tensor]:
        xf = as_float_images(x)
        n = xf.shape[0]
        mask = torch.zeros(n, 2, dtype=torch.bool, device=xf.device)
        for b in self.branches:
            mask[:, b] = self._coins(n, xf.device, generator)
        inputs = [xf, xf]
        for b in self.branches:
            rows = torch.nonzero(mask[:, b]).squeeze(1)
            if rows.numel():
                made = self.source.generated(xf.index_select(0, rows), None, generator)
                inputs[b] = inputs[b].index_copy(0, rows, made.to(xf.dtype))
        self.last_mask = mask
        return list(classic_view(torch.cat(inputs), self.pipeline, generator).chunk(2))


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no parameter requiring a gradient (G_A during the re-training)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# ---------------------------------------------------------------- compute-matched steps

class StepLoader:
    """Epoch loader of ``steps_per_epoch`` full batches per epoch, whatever the size of the data set.

    Batch j of epoch e is batch ``g % P`` (P = len(x) // batch_size full batches per pass; the rest of a
    pass is left out, as drop_last does) of pass ``g // P`` over the data, g = e * steps_per_epoch + j;
    pass u is a permutation drawn by a CPU generator seeded with ``seed + u``. The order is thus a function
    of (seed, epoch) only: a resumed run sees the batches the uninterrupted run would have. Batches are
    ``(x, y, index)`` on ``device``, as :class:`shared.data.DeviceLoader`'s.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, steps_per_epoch: int, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.x, self.y = torch.as_tensor(x).to(device), torch.as_tensor(y, dtype=torch.int64).to(device)
        if self.x.ndim != 4 or self.y.shape != (len(self.x),):
            raise ValueError(f"need images (N, C, H, W) and (N,) labels, got {tuple(self.x.shape)}, "
                             f"{tuple(self.y.shape)}")
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"batch_size and steps_per_epoch must be >= 1, got {batch_size}, {steps_per_epoch}")
        if len(self.x) < batch_size:
            raise ValueError(f"the data set holds {len(self.x)} images, fewer than one batch of {batch_size}")
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
        self.per_pass = len(self.x) // batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _order(self, u: int) -> Tensor:
        return torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed + u))

    def __iter__(self):
        first = self.epoch * self.steps_per_epoch
        u, order = None, None
        for g in range(first, first + self.steps_per_epoch):
            if g // self.per_pass != u:
                u = g // self.per_pass
                order = self._order(u).to(self.x.device)
            b = g % self.per_pass
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx), idx


def schedule(n_pretrain: int, cfg: RetrainConfig) -> tuple[int, int]:
    """(epochs, steps per epoch) of every variant: ``cfg.steps`` in ``cfg.ssl.epochs`` equal parts, or, with
    ``cfg.steps`` None, ``cfg.ssl.epochs`` passes of X_p (``n_pretrain // batch`` steps each)."""
    epochs, batch = cfg.ssl.epochs, cfg.ssl.batch_size
    if cfg.steps is None:
        if n_pretrain < batch:
            raise ValueError(f"X_p holds {n_pretrain} images, fewer than retrain.ssl.batch_size={batch}")
        return epochs, n_pretrain // batch
    if cfg.steps % epochs:
        raise ValueError(f"retrain.steps ({cfg.steps}) must be a multiple of retrain.ssl.epochs ({epochs})")
    return epochs, cfg.steps // epochs


def variant_data(variant: str, splits) -> tuple[Tensor, Tensor]:
    """The re-training images of ``variant`` and a source tag per image (0: X_p, 1: X~_f; never a class label)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    xp = torch.as_tensor(splits.xp)
    if variant != "xp_xf":
        return xp, torch.zeros(len(xp), dtype=torch.int64)
    dotted = torch.as_tensor(splits.fine_dotted)  # X~_f = X_f^D: the clean fine-tuning images are never used
    if dotted.dtype != xp.dtype or dotted.shape[1:] != xp.shape[1:]:
        raise ValueError(f"X~_f is {dotted.dtype} {tuple(dotted.shape[1:])} but X_p is {xp.dtype} "
                         f"{tuple(xp.shape[1:])}: they cannot be one data set")
    tag = torch.cat([torch.zeros(len(xp), dtype=torch.int64), torch.ones(len(dotted), dtype=torch.int64)])
    return torch.cat([xp, dotted]), tag


# ---------------------------------------------------------------- the stage

def build_method(cfg: RetrainConfig, encoder_file: dict, path: Path, device: torch.device):
    """MoCo v2 around F as ``cfg.init`` / ``cfg.heads`` say, on ``device``; returns (method, what it started from)."""
    encoder = build_encoder(encoder_file["width"])
    if cfg.init == "scratch":
        return to_device(build_moco(encoder, cfg.moco), device), "scratch"
    load_state(encoder, encoder_file["encoder"], path, "encoder")  # before MoCo copies it into the key encoder
    method = build_moco(encoder, cfg.moco)
    if cfg.heads == "fresh":
        return to_device(method, device), "pretrained F, fresh heads and queue"
    if "method" not in encoder_file:
        raise ValueError(f"{path} holds no MoCo state to continue (retrain.heads: pretrained); "
                         f"set retrain.heads: fresh, or re-run the pretrain stage")
    load_state(method, encoder_file["method"], path,
               "MoCo state (retrain.moco's dim, queue_size and hidden_dim must match pretrain.moco's; "
               "else set retrain.heads: fresh)")
    return to_device(method, device), "pretrained F, heads, key encoder and queue"


def run(args: argparse.Namespace) -> dict | None:
    stage = start("augmentation_generator", "retrain", suite_params=args.suite_params, out=args.out,
                  trial=args.seed, metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    cfg = stage.section(RetrainConfig, args.params, "retrain")
    device, variant = stage.device, args.variant

    # ---- data and the compute-matched schedule (a function of |X_p| only, the same for every variant)
    splits = load_splits(args.data)
    epochs, steps_per_epoch = schedule(len(splits.xp), cfg)
    total = epochs * steps_per_epoch
    x, tag = variant_data(variant, splits)
    loader = StepLoader(x, tag, cfg.ssl.batch_size, steps_per_epoch, seed=stage.seed, device=device)

    # ---- F and MoCo; the views (G_A and Z~ for xp_ga only)
    encoder_file = read_encoder_file(args.encoder)
    method, started_from = build_method(cfg, encoder_file, Path(args.encoder), device)
    pipeline = PipelineConfig.from_simclr(cfg.views)
    inputs = {"encoder": str(args.encoder), "encoder_sha256": sha256_file(args.encoder)}
    if variant == "xp_ga":
        G_A, _, spec = load_generators(args.generators, device)
        latents = load_latents(args.latents, z_dim=spec.z_dim, n=len(splits.fine_dotted)).to(device)
        views = AugmenterViews(pipeline, frozen(G_A), latents, cfg.ga_p, cfg.ga_branch)
        inputs.update(generators=str(args.generators), generators_sha256=sha256_file(args.generators),
                      latents=str(args.latents), latents_sha256=sha256_file(args.latents))
    else:
        views = ClassicViews.symmetric(pipeline, 2)
    monitor = DownstreamMonitor((torch.as_tensor(splits.fine_dotted), torch.as_tensor(splits.fine_y)),
                                torch.as_tensor(splits.test_clean), torch.as_tensor(splits.test_dotted),
                                torch.as_tensor(splits.test_y), cfg.monitor, device)

    ssl_cfg = dataclasses.replace(cfg.ssl, epochs=epochs)
    resolved = {"retrain": config.to_dict(cfg), "variant": variant, "seed": args.seed, "data": str(args.data),
                "epochs": epochs, "steps_per_epoch": steps_per_epoch, "steps": total, **inputs}
    with stage.tracked(resolved, f"retrain/{variant}/seed{args.seed}", variant=variant) as log:
        meter = LossMeter(log)
        result = train_ssl(ssl_cfg, method, views, loader, out_dir=stage.out, logger=meter, device=device,
                           evaluate=lambda enc: {"loss": meter.take(), **monitor(enc)})
        if result.steps != total:  # compute matching is the point of the three rows (spec 2.F risk 9)
            raise checkpoint.CheckpointError(
                f"{variant} ran {result.steps} optimiser steps, not the {total} every variant runs; "
                f"delete {stage.out / 'checkpoint.pt'} and re-run the stage")
        save_encoder(stage.out / "encoder.pt", method.encoder, encoder_file["width"], method=method,
                     stage="retrain", variant=variant, seed=args.seed, steps=result.steps)
        record = stage.record(dict(result.final), variant=variant, steps=result.steps, epochs=epochs,
                              steps_per_epoch=steps_per_epoch, batch_size=cfg.ssl.batch_size, images=len(x),
                              images_xp=len(splits.xp), init=cfg.init, started_from=started_from,
                              ga_p=cfg.ga_p if variant == "xp_ga" else None,
                              ga_branch=cfg.ga_branch if variant == "xp_ga" else None,
                              monitor_classes=cfg.monitor.classes, inputs=inputs, history=result.history)
        stage.write(record, logger=log)
        stage.write_metrics(record.metrics)
        stage.write_plot("loss", result.history, x="epoch")
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.final.items())
    print(f"retrain {variant} seed {args.seed}: {result.steps} steps on {len(x)} images; {shown} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--variant", required=True, choices=VARIANTS, help="Table 1 row: xp, xp_ga or xp_xf")
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--data", required=True, help="the prepare stage's folder (splits.npz)")
    parser.add_argument("--encoder", required=True, help="the pretrain stage's encoder.pt of this seed")
    parser.add_argument("--generators", default=None, help="the game stage's generators.pt (read by xp_ga only)")
    parser.add_argument("--latents", default=None, help="the game stage's latents.pt, Z~ (read by xp_ga only)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", default=None, help="the run's headline numbers for DVC (flat JSON, outside --out)")
    parser.add_argument("--plots", default=None, help="the run's loss curve for DVC (JSON rows, outside --out)")
    args = parser.parse_args(argv)
    if args.variant == "xp_ga" and (args.generators is None or args.latents is None):
        parser.error("--variant xp_ga needs --generators and --latents")
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
