"""Stages `inpainter` (train) and `mask_augment` (augment): GenCL's mask-based generative augmentation.

    python -m papers.gencl.inpaint train --tokens <tokens.npy> --out papers/gencl/outputs/inpainter \
        [--prepared <prepared dataset>] [--metrics <flat json>] [--plots <json>]
    python -m papers.gencl.inpaint augment --prepared <prepared dataset> [--indices <ssl subset .npy>] \
        --tokenizer <tokenizer.pt> --inpainter papers/gencl/outputs/inpainter/inpainter.pt \
        --out papers/gencl/outputs/mask_augment [--metrics <flat json>]

`train` (section `inpainter`, `InpainterStageConfig`): MaskGIT's masked-token objective on the token maps the
tokenizer's encode stage wrote (`tokens.npy`, int (N, h, w), row i = row i of the prepared train split): r ~ U(0, 1),
ceil(cos(pi r / 2) N) tokens masked uniformly, cross-entropy with label smoothing 0.1 on the masked tokens only,
AdamW (beta (0.9, 0.96), weight decay 0.045 on the matrices and embeddings, none on biases and LayerNorm gains),
linear warm-up then a constant learning rate (`lr_schedule: constant`, the released MaskGIT base config's
`lr_schedule`; "cosine" decays to 0). A fixed, seeded `holdout` of the maps is never trained on: the record's
`val_ce` / `val_acc` are the plain (unsmoothed) cross-entropy and top-1 accuracy of the masked tokens there under
fixed MaskGIT training masks, `val_ce_border` / `val_acc_border` the same for GenCL's mask (interior masked, border
kept; one forward pass, not the iterative decoder), and `unigram_ce` the cross-entropy of the training set's code
frequencies (what a model that ignores the context scores). Writes in `--out`: `inpainter.pt` (weights and config,
`inpainter.load_inpainter`), `checkpoint.pt` (model, AdamW, scheduler, step, loader position, RNGs, history: a
killed run resumes), `metrics.json` (history = the curve). With a class token ("true_label" or "random") the model
is trained with the prepared split's labels (`--prepared`): the record says `uses_labels: true`.

`augment` (section `mask_augment`, `MaskAugmentConfig`): the SSL set is the prepared train split, or its rows
`--indices` (`shared.data.load_indices`), in that order. Each image is encoded by the tokenizer
(`papers.gencl.vq.load_tokenizer`), its interior masked (`inpainter.border_mask`), in-painted by MaskGIT's decoder
(`inpainter.parallel_decode`, `iterations` 12, choice temperature 4.5) and decoded to pixels, with no compositing
into the original. Writes in `--out`: `mask.npy` (uint8 (n, 3, H, W), row i = the augmentation of SSL-set image i,
with its fingerprints and meta: `shared.view_sources.precomputed.write_precomputed`, read with `PrecomputedViews`
by position in the SSL set), `grid.png` (rows: original | VQ reconstruction | in-painted, the first `grid_images`
images) and `metrics.json`: `masked_fraction`, `token_change_rate` (interior tokens that differ from the image's
own), the mean absolute pixel difference (0-1 scale) to the original over the kept border and the in-painted
interior, for the in-painted image (`l1_border`, `l1_interior`) and for the plain VQ reconstruction
(`recon_l1_border`, `recon_l1_interior`: what the tokenizer alone changes), and `seconds_per_image`. Decoding
randomness is per image (its seed comes from the run seed and its row in the prepared split), so the stored images
do not depend on the batch size (up to floating-point differences of batched matmuls).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from papers.gencl import vq
from papers.gencl.inpainter import (InpainterConfig, MaskedTokenTransformer, border_mask, counter_uniform,
                                    load_inpainter, maskgit_loss, parallel_decode, sample_seeds, save_inpainter,
                                    training_mask)
from shared import checkpoint, config
from shared.cli import add_debug_argument, run_stage
from shared.data import load_indices, load_prepared, sha256_file
from shared.device import autocast
from shared.io import atomic_write
from shared.optim import warmup_cosine
from shared.stage import start
from shared.tracking import Logger
from shared.trainers.common import NonFiniteLossError
from shared.trainers.gan import endless_batches, image_grid, png_bytes, warmup_factor
from shared.view_sources.precomputed import write_precomputed

PARAMS = Path(__file__).with_name("params.yaml")
HOLDOUT_SEED = 0  # which token maps are held out: fixed, the same for every run seed
EVAL_SEED = 1  # the fixed MaskGIT masks of the held-out evaluation
CLASS_STREAM = 1 << 20  # counter_uniform stream of the random class token (decoding uses streams 0 .. 2T-1)
AUGMENT_FILE = "mask.npy"


# ---------------------------------------------------------------- configs

@dataclasses.dataclass
class InpainterStageConfig:
    """Section `inpainter`. Defaults: MaskGIT's class-conditional ImageNet recipe (`maskgit_class_cond_config.py`:
    AdamW lr 1e-4, beta (0.9, 0.96), wd 0.045, warm-up 5,000, batch 256, 2M steps, label smoothing 0.1)."""
    model: InpainterConfig = dataclasses.field(default_factory=InpainterConfig)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.045
    warmup_steps: int = 5000
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warm-up; MaskGIT's base config: constant
    label_smoothing: float = 0.1
    batch_size: int = 256
    steps: int = 2_000_000
    holdout: int = 1000  # token maps held out for val_ce / val_acc (never trained on)
    eval_every: int = 10_000
    log_every: int = 100
    checkpoint_every: int = 5000
    eval_batch_size: int = 256

    def __post_init__(self):
        for key in ("batch_size", "steps", "eval_every", "log_every", "checkpoint_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup_steps < 0 or self.holdout < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need warmup_steps >= 0, holdout >= 1, lr > 0, weight_decay >= 0; got {self}")
        if self.lr_schedule == "cosine" and self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be < steps {self.steps} with a cosine schedule")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclasses.dataclass
class MaskAugmentConfig:
    """Section `mask_augment`. Defaults: GenCL (border 1 kept, 12 iterations) with MaskGIT's decoder settings
    (choice temperature 4.5, cosine schedule, start_iter 0)."""
    iterations: int = 12
    choice_temperature: float = 4.5
    border: int = 1  # token rings kept at the edge of the map; the rest is masked
    batch_size: int = 64
    grid_images: int = 16  # rows of grid.png

    def __post_init__(self):
        if self.iterations < 1 or self.batch_size < 1 or self.border < 0 or self.grid_images < 0:
            raise ValueError(f"need iterations >= 1, batch_size >= 1, border >= 0, grid_images >= 0; got {self}")
        if self.choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0, got {self.choice_temperature}")


# ---------------------------------------------------------------- data

def load_tokens(path: str | Path) -> np.ndarray:
    """The token maps int (N, h, w) written by the tokenizer's encode stage."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: it is written by the tokenizer's encode stage "
                                f"(`dvc repro papers/gencl/dvc.yaml:tokens`)")
    tokens = np.load(path, allow_pickle=False)
    if tokens.ndim != 3 or tokens.dtype.kind not in "iu" or (tokens.size and tokens.min() < 0):
        raise ValueError(f"{path}: expected non-negative integer token maps (N, h, w), got {tokens.dtype} "
                         f"{tokens.shape}")
    return tokens


def holdout_split(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows), both sorted; the held-out rows are a fixed seeded draw (HOLDOUT_SEED)."""
    if not 1 <= holdout <= n // 2:
        raise ValueError(f"inpainter.holdout={holdout} must be in [1, {n // 2}] for {n} token maps")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


class TokenLoader:
    """Token maps (and classes) held on ``device``, served in shuffled full batches (drop_last).

    Epoch e's order is a CPU permutation seeded with ``seed + e``, as `shared.data.DeviceLoader`: a resumed
    run sees the batches the uninterrupted one would. A batch is (long tokens (B, h, w), classes or None, rows).
    """

    def __init__(self, tokens: Tensor, classes: Tensor | None, batch_size: int, seed: int):
        if len(tokens) < batch_size:
            raise ValueError(f"{len(tokens)} training token maps, fewer than inpainter.batch_size={batch_size}")
        self.tokens, self.classes, self.batch_size, self.seed, self.epoch = tokens, classes, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tokens) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.tokens), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.to(self.tokens.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield (self.tokens[idx].long(), None if self.classes is None else self.classes[idx], idx)


# ---------------------------------------------------------------- training

@dataclasses.dataclass
class InpainterResult:
    history: list[dict]
    steps: int
    final: dict[str, float]
    train_seconds: float


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices and embeddings, none on biases and LayerNorm gains (1-D), as BERT."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_scheduler(opt: torch.optim.Optimizer, cfg: InpainterStageConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps` ((s + 1) / W), then constant or cosine to 0 at `steps`."""
    if cfg.lr_schedule == "cosine":
        return warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_factor(cfg.warmup_steps))


@torch.no_grad()
def evaluate(model: MaskedTokenTransformer, tokens: Tensor, classes: Tensor | None, batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Plain cross-entropy and accuracy of the masked tokens of ``tokens`` (N, h, w) under fixed MaskGIT
    training masks (seeded EVAL_SEED) and under GenCL's border mask (one forward pass). Model in eval mode."""
    cfg = model.cfg
    masks = {"": training_mask(len(tokens), cfg.grid, torch.Generator().manual_seed(EVAL_SEED)),
             "_border": border_mask(*cfg.grid).reshape(1, -1).expand(len(tokens), -1)}
    was_training = model.training
    model.eval()
    out = {}
    for suffix, mask in masks.items():
        ce_sum, correct, count = 0.0, 0, 0
        for start_row in range(0, len(tokens), batch_size):
            tok = tokens[start_row:start_row + batch_size].to(device).long().reshape(-1, cfg.tokens)
            m = mask[start_row:start_row + batch_size].to(device)
            c = None if classes is None else classes[start_row:start_row + batch_size].to(device)
            with autocast(device):
                logits = model(tok.masked_fill(m, cfg.mask_id), c)
            logits, target = logits.float()[m], tok[m]
            ce_sum += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(-1) == target).sum())
            count += int(m.sum())
        out[f"val_ce{suffix}"], out[f"val_acc{suffix}"] = ce_sum / count, 100.0 * correct / count
    model.train(was_training)
    return out


def unigram_ce(train_tokens: Tensor, val_tokens: Tensor, codebook_size: int) -> float:
    """Cross-entropy (nats) of the held-out tokens under the training set's code frequencies (add-one)."""
    counts = torch.bincount(train_tokens.reshape(-1).long().cpu(), minlength=codebook_size).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[val_tokens.reshape(-1).long().cpu()].mean())


def train_inpainter(cfg: InpainterStageConfig, model: MaskedTokenTransformer, loader: TokenLoader,
                    val_tokens: Tensor, val_classes: Tensor | None, *, out_dir: str | Path, logger: Logger,
                    device: torch.device, progress: bool = True) -> InpainterResult:
    """MaskGIT's masked-token training of ``model`` for ``cfg.steps`` steps (see the module doc).

    Per step: a batch of token maps, `training_mask` (global CPU RNG), [MASK] in, `maskgit_loss` with label
    smoothing, one AdamW step, one scheduler step. Every `log_every` steps the interval's mean loss and masked
    accuracy; every `eval_every` steps and at the end `evaluate` on the held-out maps. The checkpoint
    ``out_dir/checkpoint.pt`` (model, AdamW, scheduler, step, loader position, history, RNGs) is written every
    `checkpoint_every` steps and at the end and resumed when present, so a killed run continues as the
    uninterrupted one. A non-finite loss raises NonFiniteLossError naming the step.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = lr_scheduler(opt, cfg)
    step, epoch, batches_done, history, train_seconds = 0, 0, 0, [], 0.0
    state = checkpoint.load(ckpt_path, map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        history, train_seconds = state["history"], state["train_seconds"]
        checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {ckpt_path} at step {step}")

    mask_id = model.cfg.mask_id
    batches = endless_batches(loader, epoch, batches_done)
    sums: dict[str, float] = {}
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="inpainter", unit="step", disable=not progress)
    seconds_before, started = train_seconds, time.perf_counter()
    while step < cfg.steps:
        epoch, batches_done, (tokens, classes, _) = next(batches)
        tok = tokens.reshape(tokens.shape[0], -1)
        mask = training_mask(tok.shape[0], model.cfg.grid).to(device)
        with autocast(device):
            logits = model(tok.masked_fill(mask, mask_id), classes)
        loss = maskgit_loss(logits.float(), tok, mask, cfg.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"non-finite in-painter loss {value} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        with torch.no_grad():
            acc = float((logits.detach().argmax(-1) == tok)[mask].float().mean()) * 100
        for key, v in (("loss", value), ("masked_acc", acc), ("masked_fraction", float(mask.float().mean()))):
            sums[key] = sums.get(key, 0.0) + v

        last = step == cfg.steps
        if step % cfg.log_every == 0 or step % cfg.eval_every == 0 or last:
            n = step - (history[-1]["step"] if history else 0)
            row = {"step": step, **{k: v / n for k, v in sums.items()}, "lr": opt.param_groups[0]["lr"]}
            if step % cfg.eval_every == 0 or last:
                row.update(evaluate(model, val_tokens, val_classes, cfg.eval_batch_size, device))
            history.append(row)
            sums = {}
            logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.1f}")
        if step % cfg.checkpoint_every == 0 or last:
            train_seconds = seconds_before + time.perf_counter() - started
            checkpoint.save(ckpt_path, {
                "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                "epoch": epoch, "batches_done": batches_done, "history": history, "train_seconds": train_seconds,
                "rng": checkpoint.rng_state(), "config": config.to_dict(cfg)})
    bar.close()
    final = {k: v for k, v in history[-1].items() if k.startswith("val_")} if history else {}
    return InpainterResult(history=history, steps=step, final=final, train_seconds=train_seconds)


def run_train(args: argparse.Namespace) -> dict:
    stage = start("gencl", "inpainter", suite_params=args.suite_params, out=args.out, metrics=args.metrics,
                  plots=args.plots)
    cfg = stage.section(InpainterStageConfig, args.params, "inpainter")
    device, mcfg = stage.device, cfg.model
    tokens = load_tokens(args.tokens)
    if tuple(tokens.shape[1:]) != mcfg.grid:
        raise ValueError(f"{args.tokens}: token maps of {tokens.shape[1:]}, but inpainter.model.grid is {mcfg.grid}")
    if tokens.max() >= mcfg.codebook_size:
        raise ValueError(f"{args.tokens}: token id {tokens.max()} >= inpainter.model.codebook_size "
                         f"{mcfg.codebook_size} (set it to the tokenizer's codebook size)")
    labels = None
    if mcfg.uses_labels:
        if args.prepared is None:
            raise ValueError(f"inpainter.model.class_token {mcfg.class_token!r} trains with labels: give --prepared")
        labels = load_prepared(args.prepared, "train")[1]
        if len(labels) != len(tokens) or labels.max() >= mcfg.num_classes:
            raise ValueError(f"{args.prepared}: {len(labels)} labels (max {labels.max()}) for {len(tokens)} token "
                             f"maps and inpainter.model.num_classes {mcfg.num_classes}")
    train_rows, val_rows = holdout_split(len(tokens), cfg.holdout)
    all_tokens = torch.from_numpy(tokens.astype(np.int32 if mcfg.codebook_size > 32767 else np.int16))
    train_tok, val_tok = all_tokens[train_rows].to(device), all_tokens[val_rows]
    classes = None if labels is None else torch.from_numpy(labels)
    loader = TokenLoader(train_tok, None if classes is None else classes[train_rows].to(device), cfg.batch_size,
                         stage.seed)
    model = MaskedTokenTransformer(mcfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())

    resolved = {"inpainter": config.to_dict(cfg), "tokens": str(args.tokens),
                "tokens_sha256": sha256_file(args.tokens)}
    with stage.tracked(resolved, "inpainter") as log:
        result = train_inpainter(cfg, model, loader, val_tok, None if classes is None else classes[val_rows],
                                 out_dir=stage.out, logger=log, device=device)
        save_inpainter(stage.out / "inpainter.pt", model, result.steps)
        last = result.history[-1]
        headline = {**result.final, "train_loss": last["loss"], "train_masked_acc": last["masked_acc"],
                    "unigram_ce": unigram_ce(train_tok, val_tok, mcfg.codebook_size)}
        record = stage.record(headline, steps=result.steps, batch_size=cfg.batch_size, parameters=n_params,
                              train_maps=len(train_rows), holdout_maps=len(val_rows), grid=list(mcfg.grid),
                              codebook_size=mcfg.codebook_size, class_token=mcfg.class_token,
                              uses_labels=mcfg.uses_labels, lr_schedule=cfg.lr_schedule,
                              train_seconds=round(result.train_seconds, 1),
                              seconds_per_step=result.train_seconds / max(result.steps, 1), history=result.history)
        stage.write(record, logger=log)
        stage.write_metrics(headline)
        stage.write_plot("loss", result.history)
    print(f"inpainter: {result.steps} steps; " + ", ".join(f"{k} {v:.4g}" for k, v in headline.items()))
    return record.to_dict()


# ---------------------------------------------------------------- augmentation

def to_uint8(x: Tensor) -> Tensor:
    """Images in [0, 1] -> uint8, rounded."""
    return (x.float() * 255).round().clamp(0, 255).to(torch.uint8)


def pixel_mask(token_mask: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """A token mask (h, w) as a pixel mask (H, W): each token covers an (H/h) x (W/w) block."""
    h, w = token_mask.shape
    fh, fw = image_hw[0] // h, image_hw[1] // w
    return token_mask.repeat_interleave(fh, 0).repeat_interleave(fw, 1)


def random_classes(seeds: Tensor, num_classes: int) -> Tensor:
    """One uniformly random class per image from its decoding seed (class_token "random")."""
    return (counter_uniform(seeds, CLASS_STREAM, 1)[:, 0] * num_classes).long().clamp(max=num_classes - 1)


@torch.no_grad()
def inpaint_batch(tokenizer, model: MaskedTokenTransformer, images: Tensor, mask: Tensor, seeds: Tensor,
                  classes: Tensor | None, cfg: MaskAugmentConfig) -> dict[str, Tensor]:
    """Encode uint8 ``images`` (B, 3, H, W), in-paint the ``mask`` (h, w) tokens, decode; uint8 results.

    Returns ``tokens`` (B, h, w), ``inpainted`` tokens, ``recon`` (VQ reconstruction) and ``generated`` images.
    """
    device = images.device
    x = images.float() / 255
    tokens = tokenizer.encode_indices(x)
    with autocast(device):
        new = parallel_decode(model, tokens, mask, cfg.iterations, cfg.choice_temperature, seeds=seeds,
                              classes=classes)
    return {"tokens": tokens, "inpainted": new, "recon": to_uint8(tokenizer.decode_indices(tokens)),
            "generated": to_uint8(tokenizer.decode_indices(new))}


def run_augment(args: argparse.Namespace) -> dict:
    stage = start("gencl", "mask_augment", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    cfg = stage.section(MaskAugmentConfig, args.params, "mask_augment")
    device = stage.device
    x_all, y_all = load_prepared(args.prepared, "train")
    rows = np.arange(len(x_all)) if args.indices is None else load_indices(args.indices)
    if len(rows) == 0 or rows.max() >= len(x_all):
        raise ValueError(f"{args.indices}: indices must select rows of the {len(x_all)} prepared train images")
    images = x_all[rows]
    tokenizer = vq.load_tokenizer(args.tokenizer, device)
    model = load_inpainter(args.inpainter, device)
    mcfg = model.cfg
    grid = tuple(tokenizer.token_grid(tuple(images.shape[-2:])))
    if grid != mcfg.grid or tokenizer.codebook_size != mcfg.codebook_size:
        raise ValueError(f"the tokenizer {args.tokenizer} makes {grid} maps of {tokenizer.codebook_size} codes, the "
                         f"in-painter {args.inpainter} was trained on {mcfg.grid} maps of {mcfg.codebook_size}")
    mask = border_mask(*grid, cfg.border)
    pmask = pixel_mask(mask, tuple(images.shape[-2:])).to(device)
    seeds = sample_seeds(stage.seed, torch.from_numpy(rows))
    if mcfg.class_token == "true_label":
        classes = torch.from_numpy(y_all[rows])  # USES LABELS
    elif mcfg.class_token == "random":
        classes = random_classes(seeds, mcfg.num_classes)
    else:
        classes = None

    resolved = {"mask_augment": config.to_dict(cfg), "prepared": str(args.prepared),
                "indices": None if args.indices is None else str(args.indices),
                "tokenizer": str(args.tokenizer), "inpainter": str(args.inpainter)}
    with stage.tracked(resolved, "mask_augment", checkpointed=False) as log:
        generated = np.empty_like(images)
        sums = {"token_change": 0.0, "l1_border": 0.0, "l1_interior": 0.0, "recon_l1_border": 0.0,
                "recon_l1_interior": 0.0}
        grid_rows: list[Tensor] = []
        started = time.perf_counter()
        for b in tqdm(range(0, len(rows), cfg.batch_size), desc="mask_augment", unit="batch"):
            sl = slice(b, b + cfg.batch_size)
            src = torch.from_numpy(images[sl]).to(device)
            out = inpaint_batch(tokenizer, model, src, mask, seeds[sl],
                                None if classes is None else classes[sl].to(device), cfg)
            generated[sl] = out["generated"].cpu().numpy()
            sums["token_change"] += float((out["inpainted"] != out["tokens"])[:, mask.to(device)].float().mean(1).sum())
            for prefix, key in (("", "generated"), ("recon_", "recon")):
                diff = (out[key].float() - src.float()).abs().mean(1) / 255  # (B, H, W), 0-1 scale
                sums[f"{prefix}l1_border"] += float(diff[:, ~pmask].mean(1).sum())
                sums[f"{prefix}l1_interior"] += float(diff[:, pmask].mean(1).sum())
            if len(grid_rows) < cfg.grid_images:
                take = min(cfg.grid_images - len(grid_rows), len(src))
                grid_rows += [torch.stack([src[i], out["recon"][i], out["generated"][i]]).cpu() for i in range(take)]
        seconds = time.perf_counter() - started
        n = len(rows)
        meta = {"generator": "gencl mask-based (VQ tokenizer + MaskGIT decoder)", "run_seed": stage.seed,
                "rows": "prepared train split" if args.indices is None else f"prepared train rows {args.indices}",
                "class_token": mcfg.class_token, "uses_labels": mcfg.uses_labels, **config.to_dict(cfg)}
        write_precomputed(stage.out / AUGMENT_FILE, generated, images, meta)
        if grid_rows:
            png = png_bytes(image_grid(torch.cat(grid_rows), nrow=3))
            atomic_write(stage.out / "grid.png", lambda f: f.write(png))
        masked = int(mask.sum())
        headline = {"masked_fraction": masked / mask.numel(), "token_change_rate": sums["token_change"] / n,
                    **{k: sums[k] / n for k in sums if "l1" in k}, "seconds_per_image": seconds / n}
        record = stage.record(headline, images=n, masked_tokens=f"{masked}/{mask.numel()}", grid=list(grid),
                              border=cfg.border, iterations=cfg.iterations,
                              choice_temperature=cfg.choice_temperature, class_token=mcfg.class_token,
                              uses_labels=mcfg.uses_labels, batch_size=cfg.batch_size,
                              ssl_set={"prepared": str(args.prepared),
                                       "indices": None if args.indices is None else str(args.indices),
                                       "n": n, "first_rows": rows[:5].tolist()},
                              randomness="per image: run seed and prepared-split row (independent of batch size)",
                              compositing="none", device=str(device))
        stage.write(record, logger=log)
        stage.write_metrics(headline)
    print(f"mask_augment: {n} images; " + ", ".join(f"{k} {v:.4g}" for k, v in headline.items()))
    return record.to_dict()


# ---------------------------------------------------------------- command line

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=PARAMS, help="the paper's params file")
    p.add_argument("--suite-params", type=Path, default=Path("params.yaml"), help="scale, seed, device, ...")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    add_debug_argument(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the in-painter on token maps")
    _common(train)
    train.add_argument("--tokens", type=Path, required=True, help="tokens.npy of the tokenizer's encode stage")
    train.add_argument("--prepared", type=Path, default=None, help="prepared dataset (labels; class token only)")
    train.add_argument("--plots", type=Path, default=None, help="the loss curve for DVC (outside --out)")
    augment = sub.add_parser("augment", help="write one in-painted image per SSL-set image")
    _common(augment)
    augment.add_argument("--prepared", type=Path, required=True, help="prepared dataset (its train split)")
    augment.add_argument("--indices", type=Path, default=None, help="the SSL subset's rows (.npy / .json)")
    augment.add_argument("--tokenizer", type=Path, required=True)
    augment.add_argument("--inpainter", type=Path, required=True)
    args = parser.parse_args(argv)
    run = run_train if args.command == "train" else run_augment
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
