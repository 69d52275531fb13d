"""Stages `tokenizer` and `tokens`: train the VQ tokenizer (MaskGIT's VQGAN stand-in, `vq.py`), then encode the
training images into token maps once.

    python -m papers.gencl.tokenizer train --data <prepared dataset> --out papers/gencl/outputs/tokenizer \
        [--metrics <flat json>] [--plots <json>]
    python -m papers.gencl.tokenizer encode --tokenizer papers/gencl/outputs/tokenizer/tokenizer.pt \
        --data <prepared dataset> --out papers/gencl/outputs/tokens [--split train] [--metrics <flat json>]

`train` (section `tokenizer` of params.yaml, `TokenizerConfig`): the prepared split `train` (uint8 images; labels
are never read) in shuffled batches of `batch_size`, Adam, loss = reconstruction (L2 or L1, `vq.recon_loss`) +
beta * commitment, the codebook by EMA with dead-code restart, `steps` steps. Writes in `--out`:

- `tokenizer.pt`: config, weights and codebook (`vq.load_tokenizer`),
- `checkpoint.pt`: model with its codebook, Adam, step, loader position, history, every RNG (resumed after a kill),
- `recon.png`: held-out images and their reconstructions, in alternating rows (a row of originals, the row below
  their reconstructions through the token map),
- `curves.png`: the training loss terms and the batch codebook perplexity / codes used against the step,
- `metrics.json` (no table): on `eval_images` images of the split `eval_split` (held out from training) the
  reconstruction's mean L1 and L2 per pixel in [0, 1], the mean per-image PSNR (dB), the codebook perplexity and the
  codes used over all their tokens; the training curve in `history`.

`encode` (no params section: the result does not depend on the batch size): every image of `--split` through the
tokenizer in index order. Writes in `--out` `tokens.npy`, uint16 (N, h, w), row i the token map of the prepared
split's image i, and `tokens.json` (the tokenizer's and the data file's SHA-256, grid, codebook size, split, N);
`metrics.json`: the codebook perplexity and codes used over all tokens.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from papers.gencl.vq import VQAutoencoder, VQConfig, codes_used, load_tokenizer, n_parameters, perplexity, \
    save_tokenizer
from shared import checkpoint, config
from shared.cli import add_debug_argument, run_stage
from shared.data import DeviceLoader, evenly_spaced, load_prepared, sha256_file
from shared.device import autocast, to_device
from shared.io import atomic_write, atomic_write_many
from shared.stage import start
from shared.tracking import Logger
from shared.trainers.common import EpochLoader, NonFiniteLossError
from shared.trainers.gan import endless_batches, image_grid, png_bytes

PARAMS = Path(__file__).with_name("params.yaml")
CHUNK = 256  # images per forward pass outside training
GRID_COLUMNS = 8
TOKEN_DTYPE = np.uint16  # codebook sizes up to 65,536


@dataclasses.dataclass
class TokenizerConfig:
    """Section `tokenizer`. Defaults: scale paper, MaskGIT's VQGAN recipe where it has a counterpart (Adam lr 1e-4,
    betas (0, 0.99), batch 256, 1M steps; spec 1.C); without its perceptual and adversarial losses (vq.py)."""
    vq: VQConfig = dataclasses.field(default_factory=VQConfig)
    steps: int = 1_000_000
    batch_size: int = 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.99)
    log_every: int = 100  # steps between logged means (the history)
    checkpoint_every: int = 1000  # steps; the last one always checkpoints
    eval_split: str = "test"  # held-out images for the final reconstruction check (never trained on)
    eval_images: int = 1000  # spread evenly over eval_split
    grid_images: int = 16  # held-out images in recon.png

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_images", "grid_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.checkpoint_every % self.log_every:  # a checkpoint ends a log interval: no partial means to keep
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every "
                             f"({self.log_every})")


@dataclasses.dataclass
class TrainResult:
    history: list[dict]
    steps: int
    train_seconds: float


def as_images(x: Tensor, device: torch.device) -> Tensor:
    """uint8 (N, 3, H, W) -> float in [0, 1] on ``device``."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
    return x.to(device).float() / 255


# ---------------------------------------------------------------- training

def train_tokenizer(cfg: TokenizerConfig, model: VQAutoencoder, loader: EpochLoader, *, out_dir: str | Path,
                    logger: Logger, device: torch.device, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``loader``'s uint8 batches for ``cfg.steps`` steps: one forward (the codebook takes its
    EMA step and dead codes are re-seeded inside it), loss = recon + commit, one Adam step on the encoder and
    decoder. Every ``log_every`` steps the interval's means (loss terms, batch PSNR, perplexity, codes used) and
    the codes restarted in it are logged and kept in the history. ``out_dir/checkpoint.pt`` (model with codebook,
    Adam, step, loader position, history, every RNG) is written every ``checkpoint_every`` steps and at the end, and
    resumed if present: a resumed run repeats what the uninterrupted one would have done. Raises
    NonFiniteLossError naming the step if the loss is NaN or infinite. One process (no torchrun).
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    if len(loader) == 0:
        raise ValueError("the loader yields no batches (fewer images than tokenizer.batch_size with drop_last?)")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    step, epoch, batches_done, history, train_seconds = 0, 0, 0, [], 0.0
    state = checkpoint.load(ckpt_path, map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        history, train_seconds = state["history"], state["train_seconds"]
        checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {ckpt_path} at step {step}")

    batches = endless_batches(loader, epoch, batches_done)
    sums: dict[str, float] = {}
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="tokenizer", unit="step", disable=not progress)
    seconds_before, started = train_seconds, time.perf_counter()
    while step < cfg.steps:
        epoch, batches_done, batch = next(batches)
        x = batch[0]
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[0] != cfg.batch_size:
            raise ValueError(f"expected uint8 batches (tokenizer.batch_size={cfg.batch_size}, 3, H, W), got "
                             f"{x.dtype} {tuple(x.shape)}; build the loader with drop_last=True")
        x = as_images(x, device)
        with autocast(device):
            _, terms, stats = model(x)
        loss = terms["recon"] + terms["commit"]
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"non-finite tokenizer loss {value} at step {step + 1} (recon "
                                     f"{terms['recon'].item()}, commit {terms['commit'].item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        row = {"loss": value, "recon": terms["recon"].item(), "commit": terms["commit"].item(),
               **{k: v.item() for k, v in stats.items()}}
        for key, v in row.items():
            sums[key] = sums.get(key, 0.0) + v

        last = step == cfg.steps
        if step % cfg.log_every == 0 or last:
            n = step - (history[-1]["step"] if history else 0)
            means = {k: (v if k == "restarted" else v / n) for k, v in sums.items()}  # restarts: the interval's count
            history.append({"step": step, **means})
            sums = {}
            logger.log_metrics({f"train/{k}": v for k, v in means.items()}, step=step)
            bar.set_postfix(loss=f"{means['loss']:.4f}", psnr=f"{means['psnr']:.2f}",
                            ppl=f"{means['perplexity']:.1f}")
        if step % cfg.checkpoint_every == 0 or last:
            train_seconds = seconds_before + time.perf_counter() - started
            checkpoint.save(ckpt_path, {
                "model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                "batches_done": batches_done, "history": history, "train_seconds": train_seconds,
                "rng": checkpoint.rng_state(), "config": config.to_dict(cfg)})
    bar.close()
    return TrainResult(history=history, steps=step, train_seconds=train_seconds)


# ---------------------------------------------------------------- evaluation, figures

@torch.no_grad()
def tokens_of(model: VQAutoencoder, images, device: torch.device, desc: str | None = None) -> Tensor:
    """Token maps, int64 (N, h, w) on the CPU, of uint8 images (N, 3, H, W), CHUNK at a time, in order."""
    images = torch.as_tensor(images)
    out = [model.encode_indices(as_images(images[i:i + CHUNK], device)).cpu()
           for i in tqdm(range(0, len(images), CHUNK), desc=desc, unit="chunk", disable=desc is None)]
    return torch.cat(out) if out else torch.empty(0, *model.token_grid(tuple(images.shape[-2:])), dtype=torch.long)


@torch.no_grad()
def reconstruction_check(model: VQAutoencoder, images, device: torch.device) -> tuple[dict[str, float], Tensor]:
    """Image -> tokens -> image on uint8 ``images``: mean L1 and L2 per pixel in [0, 1], mean per-image PSNR (dB),
    perplexity and codes used over all tokens; and the reconstructions as uint8 (N, 3, H, W)."""
    model.eval()
    images = torch.as_tensor(images)
    l1, l2, psnr_sum, tokens, recons = 0.0, 0.0, 0.0, [], []
    for i in range(0, len(images), CHUNK):
        x = as_images(images[i:i + CHUNK], device)
        idx = model.encode_indices(x)
        y = model.decode_indices(idx)
        mse = (y - x).pow(2).flatten(1).mean(1)
        l1 += (y - x).abs().flatten(1).mean(1).sum().item()
        l2 += mse.sum().item()
        psnr_sum += (10 * torch.log10(1 / mse)).sum().item()
        tokens.append(idx.cpu())
        recons.append((y * 255).round().to(torch.uint8).cpu())
    n, tokens = len(images), torch.cat(tokens)
    metrics = {"recon_l1": l1 / n, "recon_l2": l2 / n, "psnr": psnr_sum / n,
               "perplexity": perplexity(tokens, model.codebook_size).item(), "codes_used": codes_used(tokens)}
    return metrics, torch.cat(recons)


def recon_grid(originals: Tensor, recons: Tensor) -> Tensor:
    """uint8 grid: rows of GRID_COLUMNS originals, each followed by the row of their reconstructions."""
    blocks = []
    for i in range(0, len(originals), GRID_COLUMNS):
        o, r = originals[i:i + GRID_COLUMNS], recons[i:i + GRID_COLUMNS]
        pad = GRID_COLUMNS - len(o)
        blocks += [torch.cat([o, o.new_zeros(pad, *o.shape[1:])]), torch.cat([r, r.new_zeros(pad, *r.shape[1:])])]
    return image_grid(torch.cat(blocks), GRID_COLUMNS)


def curves_png(history: list[dict]) -> bytes:
    """The loss terms (log scale) and the batch perplexity / codes used against the step, as PNG bytes."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_code = fig.subplots(1, 2)
    steps = [h["step"] for h in history]
    for key in ("loss", "recon", "commit"):
        ax_loss.plot(steps, [h[key] for h in history], label=key)
    ax_loss.set(xlabel="step", ylabel="training loss (interval mean)", yscale="log")
    for axis in (ax_loss.yaxis.set_major_formatter, ax_loss.yaxis.set_minor_formatter):
        axis(LogFormatter())  # not the default mathtext labels, whose fonts this environment lacks
    ax_loss.legend()
    ax_code.plot(steps, [h["perplexity"] for h in history], label="perplexity")
    ax_code.plot(steps, [h["codes_used"] for h in history], label="codes used")
    ax_code.set(xlabel="step", ylabel="per batch (interval mean)")
    ax_code.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def run_train(args: argparse.Namespace) -> dict:
    stage = start("gencl", "tokenizer", suite_params=args.suite_params, out=args.out, metrics=args.metrics,
                  plots=args.plots)
    cfg = stage.section(TokenizerConfig, args.params, "tokenizer")
    device = stage.device
    train_x, _ = load_prepared(args.data, "train")  # labels are never used
    eval_x, _ = load_prepared(args.data, cfg.eval_split)
    if len(train_x) < cfg.batch_size:
        raise ValueError(f"{args.data}: the train split holds {len(train_x)} images, fewer than "
                         f"tokenizer.batch_size={cfg.batch_size}")
    model = VQAutoencoder(cfg.vq)
    grid = model.token_grid(tuple(train_x.shape[-2:]))  # raises if the image size does not divide by f
    model = to_device(model, device)
    loader = DeviceLoader(train_x, np.zeros(len(train_x), np.int64), batch_size=cfg.batch_size, shuffle=True,
                          drop_last=True, seed=stage.seed, device=device)

    resolved = {"tokenizer": config.to_dict(cfg), "data": str(args.data)}
    with stage.tracked(resolved, "tokenizer") as log:
        result = train_tokenizer(cfg, model, loader, out_dir=stage.out, logger=log, device=device)
        save_tokenizer(stage.out / "tokenizer.pt", model, steps=result.steps, data=str(args.data))

        held_out = torch.as_tensor(eval_x)[evenly_spaced(len(eval_x), cfg.eval_images)]
        headline, recons = reconstruction_check(model, held_out, device)
        grid_png = png_bytes(recon_grid(held_out[:cfg.grid_images], recons[:cfg.grid_images]))
        atomic_write(stage.out / "recon.png", lambda f: f.write(grid_png))
        curves = curves_png(result.history)
        atomic_write(stage.out / "curves.png", lambda f: f.write(curves))
        log.log_artifact(stage.out / "recon.png")
        log.log_artifact(stage.out / "curves.png")

        headline["codes_used_frac"] = headline["codes_used"] / model.codebook_size
        record = stage.record(
            headline, steps=result.steps, batch_size=cfg.batch_size, train_images=len(train_x),
            eval_split=cfg.eval_split, eval_images=len(held_out), image_size=list(train_x.shape[-2:]),
            token_grid=list(grid), factor=cfg.vq.factor, codebook_size=model.codebook_size,
            parameters=n_parameters(model), train_seconds=round(result.train_seconds, 1),
            seconds_per_step=result.train_seconds / max(result.steps, 1),
            restarted_total=sum(h["restarted"] for h in result.history), history=result.history,
            figures={"recon.png": f"held-out {cfg.eval_split} images: a row of {GRID_COLUMNS} originals, the row "
                                  "below their reconstructions decode(encode(x))",
                     "curves.png": "training loss terms and batch codebook perplexity / codes used, per log interval"},
            note="recon_l1/recon_l2: mean over pixels in [0, 1]; psnr: mean over images of 10 log10(1 / MSE); "
                 "perplexity and codes_used over all held-out tokens; history rows are interval means "
                 "(restarted: codes re-seeded in the interval)")
        stage.write(record, logger=log)
        stage.write_metrics(headline)
        stage.write_plot("recon", result.history)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in headline.items())
    print(f"tokenizer: {result.steps} steps, grid {grid[0]}x{grid[1]}, K {model.codebook_size}; {shown} "
          f"({stage.scale})")
    return record.to_dict()


def run_encode(args: argparse.Namespace) -> dict:
    stage = start("gencl", "tokens", suite_params=args.suite_params, out=args.out, metrics=args.metrics)
    device = stage.device
    model = load_tokenizer(args.tokenizer, device)
    if model.codebook_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise ValueError(f"{args.tokenizer}: codebook size {model.codebook_size} does not fit {TOKEN_DTYPE.__name__}")
    x, _ = load_prepared(args.data, args.split)
    grid = model.token_grid(tuple(x.shape[-2:]))
    resolved = {"tokenizer": str(args.tokenizer), "tokenizer_sha256": sha256_file(args.tokenizer),
                "data": str(args.data), "split": args.split}
    with stage.tracked(resolved, "tokens", checkpointed=False) as log:
        tokens = tokens_of(model, x, device, desc=f"tokens ({args.split})")
        array = tokens.numpy().astype(TOKEN_DTYPE)
        meta = {"tokenizer": str(args.tokenizer), "tokenizer_sha256": resolved["tokenizer_sha256"],
                "data": str(args.data), "split": args.split,
                "data_sha256": sha256_file(Path(args.data) / f"{args.split}.npz"),
                "n_images": len(array), "image_size": list(x.shape[-2:]), "grid": list(grid),
                "codebook_size": model.codebook_size, "dtype": array.dtype.name,
                "rows": f"row i = the token map of image i of the prepared split {args.split!r}"}
        atomic_write_many({stage.out / "tokens.npy": lambda f: np.save(f, array),
                           stage.out / "tokens.json": lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode())})
        headline = {"perplexity": perplexity(tokens, model.codebook_size).item(), "codes_used": codes_used(tokens)}
        record = stage.record(headline, **{k: v for k, v in meta.items() if k != "rows"},
                              note="perplexity and codes_used over every token of the split")
        stage.write(record, logger=log)
        stage.write_metrics(headline)
    print(f"tokens: {len(array)} images of {args.split} -> {grid[0]}x{grid[1]} tokens; perplexity "
          f"{headline['perplexity']:.1f}, {headline['codes_used']} of {model.codebook_size} codes used")
    return record.to_dict()


COMMANDS = {"train": "train the tokenizer (stage `tokenizer`)", "encode": "encode a split (stage `tokens`)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.gencl.tokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command, what in COMMANDS.items():
        p = sub.add_parser(command, help=what, description=what)
        p.add_argument("--params", type=Path, default=PARAMS, help="the paper's params file")
        p.add_argument("--suite-params", type=Path, default=Path("params.yaml"), help="scale, seed, device, ...")
        add_debug_argument(p)
        p.add_argument("--data", type=Path, required=True, help="the prepared dataset's folder (shared.data)")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
        if command == "train":
            p.add_argument("--plots", type=Path, default=None, help="the recon-loss curve for DVC (outside --out)")
        else:
            p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.pt of the train command")
            p.add_argument("--split", default="train", help="the prepared split to encode")
    args = parser.parse_args(argv)
    run = run_train if args.command == "train" else run_encode
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
