"""LARS, the per-step warm-up + cosine schedule, and the papers' learning-rate scaling."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["LARS", "warmup_cosine", "simclr_lars_lr", "vicreg_lr"]


class LARS(torch.optim.Optimizer):
    """LARS (You, Gitman, Ginsburg 2017) with the official VICReg code's semantics.

    For each parameter w with gradient g, in every step:

    - if ``exclude_1d`` and w is 1-D (biases, BatchNorm weights): u = g, i.e. plain
      momentum SGD, no weight decay and no trust ratio;
    - otherwise u = g + weight_decay * w, then u = trust * u with the trust ratio
      trust = eta * ||w|| / ||u|| when ||w|| > 0 and ||u|| > 0, else trust = 1;
    - mu = momentum * mu + u;  w = w - lr * mu.

    ``exclude_1d``, ``eta``, ``weight_decay``, ``momentum`` and ``lr`` may be set per
    parameter group. The trust ratio is computed with ``torch.where`` on the device,
    so a step makes no host synchronisation.

    Deliberate difference from the unofficial PyTorch SimCLR's LARS
    (Spijkervet/SimCLR ``simclr/modules/lars.py``, used by ``gan_simclr``): that
    version decays every parameter (its name filters are commented out) and guards
    the trust ratio with ``>= 0`` instead of ``> 0``, so the guard never fires and a
    zero-initialised parameter gets trust eta * 0 / ||u|| = 0 and never moves (and
    0/0 = NaN if its gradient is zero too). It also folds lr into the momentum
    buffer (v = m v + lr * trust * u), which only differs from ours when lr changes.
    This suite deliberately does not reproduce that behaviour; a package replicating
    a run made with it should list this as a deviation.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (set per step by a scheduler).
        momentum: momentum coefficient of the buffer mu.
        weight_decay: L2 coefficient added to the gradient (VICReg: 1e-6).
        eta: trust coefficient (VICReg: 0.001).
        exclude_1d: exempt 1-D parameters from weight decay and the trust ratio.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        exclude_1d: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not eta > 0.0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            weight_decay, eta = group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                u = p.grad
                if not (group["exclude_1d"] and p.ndim == 1):
                    if weight_decay != 0.0:
                        u = u.add(p, alpha=weight_decay)
                    w_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(u)
                    # Strict > 0: a zero-initialised weight must still move (trust 1),
                    # and a zero update must not divide 0 by 0.
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0),
                        eta * w_norm / u_norm,
                        torch.ones_like(w_norm),
                    )
                    u = u * trust

                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                mu = state["mu"]
                mu.mul_(momentum).add_(u)
                p.add_(mu, alpha=-lr)
        return loss


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    final_lr_scale: float = 0.0,
) -> LambdaLR:
    """Per-step linear warm-up then cosine decay, as a multiplier on each group's lr.

    Call ``scheduler.step()`` after every ``optimizer.step()``. Optimizer step s
    (0-based) runs at base_lr * f(s) with W = ``warmup_steps``, T = ``total_steps``,
    r = ``final_lr_scale``:

        f(s) = (s + 1) / W                                          for s < W
        f(s) = r + (1 - r) * (1 + cos(pi * (s - W) / (T - W))) / 2   for W <= s <= T
        f(s) = r                                                     for s > T

    The warm-up starts at base/W rather than 0 (the VICReg code starts at exactly 0)
    so the first step is not spent at lr 0; it reaches the base lr at step W - 1.
    VICReg: W = 10 epochs, r = 0.001; SimCLR's cosine with W = 0, r = 0.
    """
    _check_int("warmup_steps", warmup_steps, 0)
    _check_int("total_steps", total_steps, 1)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be < total_steps, got warmup_steps={warmup_steps}, total_steps={total_steps}")
    if isinstance(final_lr_scale, bool) or not isinstance(final_lr_scale, (int, float)) or not 0.0 <= final_lr_scale <= 1.0:
        raise ValueError(f"final_lr_scale must be a number in [0, 1], got {final_lr_scale!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return final_lr_scale + (1.0 - final_lr_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def _check_batch(batch_size) -> None:
    _check_int("batch_size", batch_size, 1)


def simclr_lars_lr(batch_size: int, base: float = 0.3) -> float:
    """SimCLR's LARS learning rate: ``base`` per 256 images, scaled linearly (0.3 x B/256)."""
    _check_batch(batch_size)
    return base * batch_size / 256


def vicreg_lr(batch_size: int, base: float = 0.2) -> float:
    """VICReg's LARS learning rate: ``base_lr`` 0.2 per 256 images, scaled linearly."""
    _check_batch(batch_size)
    return base * batch_size / 256
