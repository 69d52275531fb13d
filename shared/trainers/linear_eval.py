"""Evaluation of a frozen encoder: features computed once, then a linear head or kNN.

The encoder sees un-augmented images (uint8 -> float in [0, 1]); features of the
train and test sets are extracted once per evaluation and every epoch of the
linear head runs on those cached tensors, so 100 epochs cost about as much as one
pass of the encoder.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.device import autocast, prepare_batch
from shared.trainers.common import NonFiniteLossError


@dataclasses.dataclass
class LinearEvalConfig:
    """The linear head's protocol. Defaults: gan_simclr's (100 epochs of Adam 3e-4)."""
    epochs: int = 100
    batch_size: int = 256
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3e-4
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs at which the lr is multiplied by gamma
    gamma: float = 0.1
    feature_batch_size: int = 512
    seed: int = 0
    # "cosine": the lr anneals to 0 over `epochs`, stepped once per epoch (CosineAnnealingLR(opt, epochs), as
    # VICReg's evaluate.py); `milestones` are then not allowed.
    schedule: Literal["multistep", "cosine"] = "multistep"
    init_std: float | None = None  # None: PyTorch's Linear init; else weight ~ N(0, init_std), bias 0 (VICReg: 0.01)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.feature_batch_size < 1:
            raise ValueError("epochs, batch_size and feature_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule == "cosine" and self.milestones:
            raise ValueError(f"milestones {self.milestones} are for schedule 'multistep', not 'cosine'")
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"init_std must be > 0 or null, got {self.init_std}")


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, device: torch.device,
                     batch_size: int = 512) -> torch.Tensor:
    """Features (N, D) in float32 on ``device`` of uint8 ``images`` (N, C, H, W), encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True).float().div_(255)
        with autocast(device):
            out.append(encoder(prepare_batch(x, device)).float())
    encoder.train(was_training)
    return torch.cat(out)


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, cfg: LinearEvalConfig, num_classes: int,
               eval_sets: dict[str, tuple[Tensor, Tensor]] | None = None) -> tuple[nn.Linear, list[dict[str, float]]]:
    """A linear head fitted on fixed features, and its curve: per epoch the mean loss and the accuracy (%)
    of the training batches before their step; with ``eval_sets`` ``{name: (x, y)}`` also ``<name>_top1`` and
    ``<name>_top5`` (%) of the head at the end of each epoch (the last row is the returned head's).

    The head's init is drawn under ``cfg.seed`` without touching the caller's RNG; the batch order comes
    from a CPU generator seeded with it. A non-finite loss stops with the epoch that made it (the lr is
    then too large for these features): :class:`NonFiniteLossError` names ``linear.lr``.
    """
    device = train_x.device
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # the head's init must not consume the caller's RNG
        torch.manual_seed(cfg.seed)
        head = nn.Linear(train_x.shape[1], num_classes).to(device)
    if cfg.init_std is not None:
        with torch.no_grad():  # drawn from the cpu generator: the same head on every device
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * cfg.init_std)
            head.bias.zero_()
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    curve = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(train_x), generator=gen).to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            logits = head(train_x[idx])
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == train_y[idx]).sum()
        sched.step()
        mean_loss = loss_sum.item() / len(order)
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"the linear head's loss is {mean_loss} in epoch {epoch + 1}: lr {cfg.lr} "
                                     f"diverges on these features; lower linear.lr")
        row = {"epoch": epoch + 1, "loss": mean_loss, "train_acc": correct.item() / len(order) * 100}
        for name, (x, y) in (eval_sets or {}).items():
            with torch.no_grad():
                row[f"{name}_top1"], row[f"{name}_top5"] = topk_accuracy(head(x), y, (1, 5))
        curve.append(row)
    return head, curve


@torch.no_grad()
def topk_correct(logits: Tensor, y: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """How many rows of ``logits`` (N, C) hold label ``y`` (N,) among their k largest, for each k (int64, (len(ks),)).

    A k above C counts as C: every label is then among the top k.
    """
    assert logits.dim() == 2 and y.shape == (len(logits),), (logits.shape, y.shape)
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices == y[:, None]  # (N, kmax), at most one True per row
    return torch.stack([hit[:, :min(k, kmax)].any(1).sum() for k in ks])


def topk_accuracy(logits: Tensor, y: Tensor, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracies (%) of ``logits`` (N, C) against labels ``y``, one per k of ``ks``."""
    return [c / len(y) * 100 for c in topk_correct(logits, y, ks).tolist()]


@torch.no_grad()
def accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``head`` on features ``x``."""
    return (head(x).argmax(1) == y).float().mean().item() * 100


def train_linear(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 cfg: LinearEvalConfig, num_classes: int | None = None) -> dict[str, float]:
    """Fit a linear classifier on fixed features; top-1 accuracies (%) on train and the full test set."""
    assert train_x.dim() == 2 and train_x.shape[1] == test_x.shape[1], (train_x.shape, test_x.shape)
    assert len(train_x) == len(train_y) and len(test_x) == len(test_y)
    num_classes = num_classes or int(torch.cat([train_y, test_y]).max()) + 1
    head, _ = fit_linear(train_x, train_y, cfg, num_classes)
    return {"linear_train_acc": accuracy(head, train_x, train_y), "linear_test_acc": accuracy(head, test_x, test_y)}


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> float:
    """Weighted kNN top-1 accuracy (%) on cosine similarity (Wu et al. 2018: weights exp(s / T))."""
    num_classes = int(torch.cat([train_y, test_y]).max()) + 1
    train_x = F.normalize(train_x, dim=1)
    test_x = F.normalize(test_x, dim=1)
    k = min(k, len(train_x))
    correct = 0
    for start in range(0, len(test_x), chunk):
        sim = test_x[start:start + chunk] @ train_x.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += (votes.argmax(1) == test_y[start:start + chunk]).sum().item()
    return correct / len(test_x) * 100


def linear_eval(encoder: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                cfg: LinearEvalConfig, device: torch.device, knn_k: int | None = None) -> dict[str, float]:
    """Linear evaluation (and optionally kNN) of ``encoder`` on uint8 ``(images, labels)`` pairs.

    Features of both sets are extracted once; the test set is used whole.
    """
    train_f = extract_features(encoder, train[0], device, cfg.feature_batch_size)
    test_f = extract_features(encoder, test[0], device, cfg.feature_batch_size)
    train_y, test_y = train[1].to(device), test[1].to(device)
    out = train_linear(train_f, train_y, test_f, test_y, cfg)
    if knn_k:
        out["knn_test_acc"] = knn_accuracy(train_f, train_y, test_f, test_y, k=knn_k)
    return out
