"""MoCo v2 (Chen, Fan, Girshick, He 2020): a momentum key encoder and a queue of negative keys.

Query encoder f_q = backbone + 2-layer MLP head (``Linear(d, d) - ReLU - Linear(d, 128)``, the
official ``--mlp``); key encoder f_k = a copy of f_q made at construction, never trained by
the optimiser, moved after every optimiser step by

    theta_k <- m theta_k + (1 - m) theta_q,   m = 0.999.

The official code applies this update at the start of each forward, before computing the keys;
updating right after the optimiser step (:meth:`MoCoV2.after_step`) gives the key encoder the same
weights at every forward (the official first update is a no-op, since f_k = f_q then).

Loss (two views): InfoNCE of the queries q = f_q(v_1) against their keys k = f_k(v_2), computed
without gradient, and the K queued keys, temperature 0.2 (:func:`shared.losses.infonce_with_queue`;
q and k L2-normalised). After the loss the batch's keys are enqueued in place of the oldest ones
(FIFO; the pointer wraps around K, so any batch size up to K works, where the official code asserts
that K is a multiple of the batch size). As in the official code the queue changes inside
``forward`` (during training only), so a forward is part of the step, never a free evaluation.

N views: view 1 is the query; each of views 2..N gives keys, and the loss is the mean of the
two-view loss over them; only the keys of view 2 are enqueued, so the queue spans K / B steps
whatever N is. With 2 views this is the official loss.

Shuffled BN: the official code shuffles the key batch across GPUs so that a query and its key
never share batch-norm statistics (otherwise the positive is recognisable by the batch it came
from, and the pretext task is solved by this leak). On one device, with one batch-norm over
the whole batch, shuffling changes nothing. ``bn_splits=S > 1`` emulates S devices as the
official CIFAR-10 demo does: every ``BatchNorm2d`` of the backbone (query and key) normalises
S groups of the batch separately (:class:`SplitBatchNorm2d`) and the key batch is shuffled
before the key encoder and unshuffled after it. ``bn_splits=1`` (the default) is one device with
synchronised batch norm, without the emulation. The demo uses 8 splits.

Under torchrun, as the official code does: each rank's queries are its own rows, their positives
its own keys, their negatives the queue; the loss is the mean over the rank's queries (averaged over
ranks by DistributedDataParallel, the global mean). Every rank enqueues the keys of the global batch
(gathered in rank order, so the queue is the one a single process would hold, the same on every
rank). The key batch is shuffled across ranks before the key encoder (rank 0 draws the permutation)
and unshuffled after it, so that each rank's batch norm normalises a query and its key with the
statistics of different samples; batch norms stay per rank (no SyncBatchNorm). ``bn_splits`` still
splits each rank's share, on top of that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared import distributed
from shared.losses import infonce_with_queue
from shared.methods.base import (Logs, SSLMethod, check_views, feature_dim as _feature_dim, momentum_copy,
                                 momentum_update)
from shared.models.heads import mlp_head


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in training, normalises ``num_splits`` groups of the batch separately.

    Group g holds the samples b with b % num_splits == g (a free reshape of the batch); each
    group gets its own batch statistics, as if it were on its own device, and the running
    statistics become the mean of the groups' updated ones. In eval mode it is a plain
    ``BatchNorm2d``; the state dict has the same keys as one.
    """

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        assert n % s == 0, f"SplitBatchNorm2d: batch {n} is not a multiple of num_splits={s}"
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
        mean = self.running_mean.repeat(s) if self.track_running_stats else None
        var = self.running_var.repeat(s) if self.track_running_stats else None
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        # (n, c) -> (n / s, s * c): sample b lands in channel block b % s
        y = F.batch_norm(x.reshape(n // s, s * c, h, w), mean, var, weight, bias, True, momentum, self.eps)
        if self.track_running_stats:
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
        return y.reshape(n, c, h, w)


def split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by a :class:`SplitBatchNorm2d` with its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine, track_running_stats=child.track_running_stats)
            state = child.state_dict()
            split.load_state_dict(state)
            if state:
                split.to(next(iter(state.values())).device)
            split.train(child.training)
            setattr(module, name, split)
        else:
            split_batchnorm(child, num_splits)
    return module


class MoCoV2(SSLMethod):
    """Query encoder (backbone + MLP head), momentum key encoder, queue of K keys.

    Args:
        encoder: the query backbone, already built; the key backbone copies it.
        dim: output width of the head (128).
        queue_size: K, the number of queued negative keys (65536).
        momentum: m of the key-encoder update (0.999).
        temperature: T of InfoNCE (0.2 in v2).
        hidden_dim: hidden width of the head; None: the encoder's feature width (as the official ``--mlp``).
        bn_splits: batch-norm groups that emulate shuffled BN on one device (module docstring); 1: none.
            With S > 1 the encoder's ``BatchNorm2d`` layers are replaced in place.
        feature_dim: the encoder's output width; None reads ``encoder.feature_dim``.
    """

    def __init__(self, encoder: nn.Module, dim: int = 128, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, hidden_dim: int | None = None, bn_splits: int = 1,
                 feature_dim: int | None = None):
        if bn_splits < 1 or queue_size < 1 or not 0 <= momentum <= 1 or temperature <= 0:
            raise ValueError(f"need bn_splits >= 1, queue_size >= 1, 0 <= momentum <= 1 and temperature > 0; "
                             f"got {bn_splits}, {queue_size}, {momentum}, {temperature}")
        if bn_splits > 1:
            split_batchnorm(encoder, bn_splits)  # before the copy, so the key encoder splits too
        super().__init__(encoder)
        d = feature_dim or _feature_dim(encoder)
        self.head = mlp_head(d, [hidden_dim or d], dim)
        self.key_encoder = momentum_copy(self.encoder)
        self.key_head = momentum_copy(self.head)
        self.momentum, self.temperature, self.bn_splits = momentum, temperature, bn_splits
        # K unit-norm random keys to start with, one per row (the official code keeps the transpose).
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, Logs]:
        check_views(views, "MoCoV2")
        q = F.normalize(self.head(self.encoder(views[0])).float(), dim=1)
        with torch.no_grad():
            keys = [self._keys(v) for v in views[1:]]
        # a copy: the enqueue below must not change what backward reads
        queue = self.queue.clone()
        losses = [infonce_with_queue(q, k, queue, self.temperature) for k in keys]
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        if self.training:
            self._enqueue(distributed.gather(keys[0]))  # the global batch's keys, in rank order
        return loss, {}

    def _keys(self, v: torch.Tensor) -> torch.Tensor:
        if distributed.active():
            return self._keys_shuffled_across_ranks(v)
        if self.bn_splits == 1:
            return F.normalize(self.key_head(self.key_encoder(v)).float(), dim=1)
        # shuffled BN: the key of sample b is normalised in another group than its query
        perm = torch.randperm(v.shape[0]).to(v.device)
        k = self.key_head(self.key_encoder(v[perm]))
        return F.normalize(k[torch.argsort(perm)].float(), dim=1)

    def _keys_shuffled_across_ranks(self, v: torch.Tensor) -> torch.Tensor:
        """The official shuffled BN across ranks: keys of a random share of the global batch, unshuffled."""
        b, r = v.shape[0], distributed.rank()
        everyone = distributed.gather(v)
        perm = distributed.broadcast(torch.randperm(everyone.shape[0]).to(v.device))  # rank 0's permutation
        k = self.key_head(self.key_encoder(everyone[perm[r * b:(r + 1) * b]]))
        # row j of the gathered keys is the key of sample perm[j]; argsort(perm) puts them back in order
        k = distributed.gather(k)[torch.argsort(perm)]
        return F.normalize(k[r * b:(r + 1) * b].float(), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` over the oldest entries, from the pointer on, wrapping around K."""
        k, b = self.queue.shape[0], keys.shape[0]
        assert b <= k, f"MoCoV2: a batch of {b} keys does not fit a queue of {k}"
        rows = (self.queue_ptr + torch.arange(b, device=self.queue.device)) % k
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + b) % k)

    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder and head (m is constant in MoCo v2)."""
        momentum_update(self.key_encoder, self.encoder, self.momentum)
        momentum_update(self.key_head, self.head, self.momentum)
