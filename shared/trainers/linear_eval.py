"""Evaluation of a frozen encoder: features computed once, then a linear head or kNN.

The encoder sees un-augmented images (uint8 -> float in [0, 1]); features of the
train and test sets are extracted once per evaluation and every epoch of the
linear head runs on those cached tensors, so 100 epochs cost about as much as one
pass of the encoder.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared.device import autocast, prepare_batch


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

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.feature_batch_size < 1:
            raise ValueError("epochs, batch_size and feature_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


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


def train_linear(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 cfg: LinearEvalConfig, num_classes: int | None = None) -> dict[str, float]:
    """Fit a linear classifier on fixed features; top-1 accuracies (%) on train and the full test set."""
    assert train_x.dim() == 2 and train_x.shape[1] == test_x.shape[1], (train_x.shape, test_x.shape)
    assert len(train_x) == len(train_y) and len(test_x) == len(test_y)
    device = train_x.device
    num_classes = num_classes or int(torch.cat([train_y, test_y]).max()) + 1
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # the head's init must not consume the caller's RNG
        torch.manual_seed(cfg.seed)
        head = nn.Linear(train_x.shape[1], num_classes).to(device)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train_x), generator=gen).to(device)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        train_acc = (head(train_x).argmax(1) == train_y).float().mean().item() * 100
        test_acc = (head(test_x).argmax(1) == test_y).float().mean().item() * 100
    return {"linear_train_acc": train_acc, "linear_test_acc": test_acc}


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
