"""The self-supervised trainer: one explicit loop over a view source and an SSL method.

Read top to bottom: build the optimiser and schedule, resume from the checkpoint if
there is one, then per epoch: batches ``(x, y, index)`` -> ``views(x, index)`` ->
``method(views)`` (forward and loss) -> step -> ``method.after_step`` (EMA target, key
encoder); evaluate every ``eval_every`` epochs; checkpoint atomically at the end of every
``checkpoint_every`` epochs. A resumed run repeats exactly what the uninterrupted run
would have done: the checkpoint holds the method's whole state (encoder, heads, target
network, queue), the optimiser, scheduler, step, the evaluation history and every RNG,
and the loader's order is a function of (seed, epoch).

Under ``torchrun`` (:mod:`shared.distributed`) the same loop runs on every rank: ``batch_size``
is the global batch and each rank trains on its slice of it; the method gathers the embeddings its
loss needs over the global batch; DistributedDataParallel averages the gradients, so every rank
takes the single-process step on the global batch. ``sync_batchnorm`` turns the batch norms into
SyncBatchNorm (CUDA only). Rank 0 evaluates, logs and writes the checkpoint (the others wait at a
barrier); the checkpoint holds nothing that depends on the world size, so a run resumes on any
number of processes that divides ``batch_size``.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterable, Literal

import torch
from torch import nn
from tqdm import tqdm

from shared import checkpoint, distributed
from shared.device import autocast, prepare_batch
from shared.methods import SSLMethod
from shared.optim import LARS, warmup_cosine
from shared.tracking import Logger, NullLogger
from shared.trainers.common import EpochLoader, NonFiniteLossError  # noqa: F401 - part of this API

Views = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]  # views(x, index) -> N views of the batch
Evaluate = Callable[[nn.Module], dict[str, float]]
OnEval = Callable[[int, dict[str, float]], None]  # (epoch, evaluate's metrics)


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
    # Under torchrun: batch norms use the statistics of the global batch (torch.nn.SyncBatchNorm, CUDA
    # only), as the official SimCLR / BYOL / VICReg multi-device runs do; MoCo keeps per-rank statistics.
    # Nothing changes on one process.
    sync_batchnorm: bool = False

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


def ssl_step(method: SSLMethod, views: list[torch.Tensor], optimizer: torch.optim.Optimizer,
             device: torch.device, *, step: int = 0, total_steps: int = 1,
             model: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
    """One optimisation step on the views of one batch; returns the detached loss and the method's logs.

    The method's forward (network and loss) runs under :func:`shared.device.autocast`, called
    through ``model`` if given (the method's DistributedDataParallel wrapper under torchrun); after
    the optimiser step, ``method.after_step(step, total_steps)`` (if the method has one)
    updates its momentum state, ``step`` being the 0-based index of the step just taken.
    """
    views = [prepare_batch(v, device) for v in views]
    with autocast(device):
        loss, logs = (method if model is None else model)(views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after_step = getattr(method, "after_step", None)
    if after_step is not None:
        after_step(step, total_steps)
    return loss.detach(), logs


def train_ssl(cfg: SSLConfig, method: SSLMethod, views: Views, loader: EpochLoader, *, out_dir: str | Path,
              logger: Logger, device: torch.device, evaluate: Evaluate | None = None,
              on_eval: OnEval | None = None, progress: bool = True) -> SSLResult:
    """Pre-train ``method`` (its encoder and heads) on ``views(x, index)`` of ``loader``'s batches.

    ``method`` follows :mod:`shared.methods.base` (already on ``device``); the optimiser
    trains ``method.trainable_parameters()``. ``evaluate(method.encoder)`` returns metrics
    (e.g. linear-eval accuracy); it runs every ``cfg.eval_every`` epochs and after the last,
    each result logged as ``eval/<name>`` against the epoch, then handed to
    ``on_eval(epoch, metrics)`` if given (a sweep reports it to Optuna there, and may stop the
    run by raising). The checkpoint ``out_dir/checkpoint.pt`` is resumed if present. Every
    ``cfg.log_every`` steps the loss, the learning rate and the method's logs are logged as
    ``train/<name>``.
    Raises :class:`NonFiniteLossError` naming the step and value if the loss diverges.

    Under torchrun (see the module docstring) ``loader`` is the same global loader on every rank;
    ``evaluate`` runs on rank 0 and its metrics reach every rank's ``on_eval``; only rank 0 logs.
    With ``cfg.sync_batchnorm`` the method's batch norms are replaced in place by SyncBatchNorm.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    distributed.setup(device)
    main = distributed.is_main()
    if not main:
        logger = NullLogger()
    if cfg.sync_batchnorm and distributed.active():
        if getattr(method, "bn_splits", 1) > 1:
            raise ValueError("sync_batchnorm: true would undo the method's bn_splits (MoCo's shuffled-BN "
                             "emulation); set one of them off")
        distributed.sync_batchnorm(method, device)
    loader = distributed.shard(loader, cfg.batch_size)
    base_seed = torch.initial_seed()  # each rank's per-epoch stream derives from it (distributed.seed_rank)
    optimizer = make_optimizer(cfg, method.trainable_parameters())
    scheduler = make_schedule(cfg, optimizer, len(loader))
    total_steps = cfg.epochs * len(loader)
    start_epoch, step, history = 0, 0, []

    state = distributed.load_checkpoint(ckpt_path, map_location=device)
    if state is not None:
        if "method" not in state:
            raise checkpoint.CheckpointError(
                f"checkpoint {ckpt_path} predates SSL methods (it has no 'method' state); "
                f"delete it to restart the stage from scratch")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        checkpoint.set_rng_state(state["rng"])
        if main:
            print(f"resumed from {ckpt_path} at epoch {start_epoch} (step {step})")

    model = distributed.wrap(method, device)  # DDP under torchrun, else the method itself
    method.train()
    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="ssl",
               unit="epoch", disable=not progress or not main)
    for epoch in bar:
        distributed.seed_rank(base_seed, epoch)
        loader.set_epoch(epoch)
        for x, _, index in loader:
            batch_views = views(x, index)
            loss, logs = ssl_step(method, batch_views, optimizer, device, step=step, total_steps=total_steps,
                                  model=model)
            scheduler.step()
            step += 1
            value = distributed.mean(loss).item()  # the global batch's loss, the same on every rank
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite loss {value} at step {step} (epoch {epoch + 1}); "
                    f"last good checkpoint: {ckpt_path if ckpt_path.exists() else 'none'}")
            if step % cfg.log_every == 0:
                logs = distributed.mean_logs(logs)
                logger.log_metrics({"train/loss": value, "train/lr": optimizer.param_groups[0]["lr"],
                                    **{f"train/{k}": float(v) for k, v in logs.items()}}, step=step)
                bar.set_postfix(loss=f"{value:.4f}")

        done = epoch + 1
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.epochs):
            metrics = distributed.broadcast_object(evaluate(method.encoder) if main else None)
            method.train()
            history.append({"epoch": done, **metrics})
            logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=done)
            if on_eval is not None:
                on_eval(done, metrics)
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            if main:
                checkpoint.save(ckpt_path, {
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": done, "step": step, "history": history, "rng": checkpoint.rng_state(),
                    "config": dataclasses.asdict(cfg),
                })
            distributed.barrier()  # the others wait while rank 0 writes
    final = {k: v for k, v in history[-1].items() if k != "epoch"} if history else {}
    return SSLResult(history=history, final=final, steps=step)
