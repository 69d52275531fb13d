"""The self-supervised trainer: one explicit loop, any ``loss(z1, z2)`` and any view generator.

Read top to bottom: build the optimiser and schedule, resume from the checkpoint if
there is one, then per epoch: batches -> views -> encoder + projector -> loss ->
step; evaluate every ``eval_every`` epochs; checkpoint atomically at the end of
every ``checkpoint_every`` epochs. A resumed run repeats exactly what the
uninterrupted run would have done: the checkpoint holds the model, optimiser,
scheduler, step, the evaluation history and every RNG, and the loader's order is a
function of (seed, epoch).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterable, Literal, Protocol

import torch
from torch import nn
from tqdm import tqdm

from shared import checkpoint
from shared.device import autocast, prepare_batch
from shared.optim import LARS, warmup_cosine
from shared.tracking import Logger

Views = Callable[[torch.Tensor], list[torch.Tensor]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Evaluate = Callable[[nn.Module], dict[str, float]]
OnEval = Callable[[int, dict[str, float]], None]  # (epoch, evaluate's metrics)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops rather than train on garbage."""


class EpochLoader(Protocol):
    """What the trainer needs of a loader: a deterministic order per epoch, and batches."""
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


@dataclasses.dataclass
class SSLConfig:
    """Pre-training protocol. Defaults: gan_simclr's Adam setting (600 epochs, batch 128, 3e-4)."""
    epochs: int = 600
    batch_size: int = 128
    optimizer: Literal["adam", "lars", "sgd"] = "adam"
    lr: float = 3e-4  # absolute; for LARS SimCLR uses 0.3 * batch / 256
    momentum: float = 0.9  # lars / sgd
    weight_decay: float = 0.0
    eta: float = 0.001  # LARS trust coefficient
    warmup_epochs: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    eval_every: int = 10  # epochs between evaluations; the last epoch is always evaluated
    checkpoint_every: int = 1  # epochs
    log_every: int = 10  # steps

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_epochs < 0:
            raise ValueError(f"lr must be > 0 and warmup_epochs >= 0 (got {self.lr}, {self.warmup_epochs})")


@dataclasses.dataclass
class SSLResult:
    history: list[dict[str, float]]  # one entry per evaluation, each with its "epoch"
    final: dict[str, float]  # the last evaluation
    steps: int


def make_optimizer(cfg: SSLConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.eta)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_schedule(cfg: SSLConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step schedule: linear warm-up, then constant or cosine to zero."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)


def ssl_step(encoder: nn.Module, projector: nn.Module, views: Views, loss_fn: Loss, x: torch.Tensor,
             optimizer: torch.optim.Optimizer, device: torch.device) -> torch.Tensor:
    """One optimisation step on a batch ``x``; returns the detached loss.

    Each view goes through the network separately, as the SimCLR and VICReg code
    do, so batch-norm statistics are per view.
    """
    v1, v2 = views(x)[:2]
    with autocast(device):
        z1 = projector(encoder(prepare_batch(v1, device)))
        z2 = projector(encoder(prepare_batch(v2, device)))
        loss = loss_fn(z1.float(), z2.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_ssl(cfg: SSLConfig, encoder: nn.Module, projector: nn.Module, views: Views, loss_fn: Loss,
              loader: EpochLoader, *, out_dir: str | Path, logger: Logger, device: torch.device,
              evaluate: Evaluate | None = None, on_eval: OnEval | None = None,
              progress: bool = True) -> SSLResult:
    """Pre-train ``encoder`` + ``projector`` with ``loss_fn`` on ``views`` of ``loader``'s batches.

    ``evaluate(encoder)`` returns metrics (e.g. linear-eval accuracy); it runs every
    ``cfg.eval_every`` epochs and after the last, each result logged as ``eval/<name>``
    against the epoch, then handed to ``on_eval(epoch, metrics)`` if given (a sweep
    reports it to Optuna there, and may stop the run by raising). The checkpoint
    ``out_dir/checkpoint.pt`` is resumed if present.
    Raises :class:`NonFiniteLossError` naming the step and value if the loss diverges.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    params = list(encoder.parameters()) + list(projector.parameters())
    optimizer = make_optimizer(cfg, params)
    scheduler = make_schedule(cfg, optimizer, len(loader))
    start_epoch, step, history = 0, 0, []

    state = checkpoint.load(ckpt_path, map_location=device)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        projector.load_state_dict(state["projector"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {ckpt_path} at epoch {start_epoch} (step {step})")

    encoder.train()
    projector.train()
    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="ssl",
               unit="epoch", disable=not progress)
    for epoch in bar:
        loader.set_epoch(epoch)
        for x, _ in loader:
            loss = ssl_step(encoder, projector, views, loss_fn, x, optimizer, device)
            scheduler.step()
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite loss {value} at step {step} (epoch {epoch + 1}); "
                    f"last good checkpoint: {ckpt_path if ckpt_path.exists() else 'none'}")
            if step % cfg.log_every == 0:
                logger.log_metrics({"train/loss": value, "train/lr": optimizer.param_groups[0]["lr"]}, step=step)
                bar.set_postfix(loss=f"{value:.4f}")

        done = epoch + 1
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.epochs):
            metrics = evaluate(encoder)
            encoder.train()
            history.append({"epoch": done, **metrics})
            logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=done)
            if on_eval is not None:
                on_eval(done, metrics)
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            checkpoint.save(ckpt_path, {
                "encoder": encoder.state_dict(), "projector": projector.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": done, "step": step, "history": history, "rng": checkpoint.rng_state(),
                "config": dataclasses.asdict(cfg),
            })
    final = {k: v for k, v in history[-1].items() if k != "epoch"} if history else {}
    return SSLResult(history=history, final=final, steps=step)
