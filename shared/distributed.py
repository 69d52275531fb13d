"""Scale-out on ``torch.distributed``: one process per device, launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 4 -m papers.<paper>.<stage> ...   # one machine, 4 GPUs

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup` joins the process group
from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``):
NCCL when the stage runs on CUDA (each process on GPU ``LOCAL_RANK``), gloo on the CPU. Launched
any other way, or with one process, nothing is initialised and every function here is the
identity or a no-op (one flag check): a single-process run is the run it always was, bit for bit.

What the trainers do with it (:mod:`shared.trainers.ssl`, :mod:`shared.trainers.gan`):

- data: the configured ``batch_size`` is the *global* batch. Every rank walks the loader's epoch
  order (a function of the loader's seed and the epoch, so the same on every rank) and keeps its
  slice of each batch, rows ``rank * b`` to ``(rank + 1) * b - 1`` with ``b = batch_size / world
  size`` (:class:`ShardedLoader`): the ranks' slices are disjoint and together are the
  single-process batch, in its order. A batch size the world size does not divide is an error
  naming the key.
- losses over the batch: :func:`gather` concatenates every rank's embeddings in rank order (so the
  gathered batch is the single-process batch) and passes the gradient back: its backward sums the
  gradients every rank computed for this rank's rows. With that sum and the mean over ranks of the
  parameter gradients (DDP, :func:`average_gradients`), the update is the single-process update on
  the global batch.
- parameters: DistributedDataParallel (:func:`wrap`) or an explicit all-reduce of the gradients
  (:func:`average_gradients`, for the GAN trainer, whose R1 penalty differentiates twice).
- files and logs: rank 0 reads the checkpoint and sends it to the others
  (:func:`load_checkpoint`), evaluates and sends the metrics (:func:`broadcast_object`), logs, and
  writes every file; the others wait at a :func:`barrier` after a checkpoint.
- randomness: every rank starts from the same seed (so the models are initialised alike); the
  trainers then give each rank its own stream per epoch (SSL) or per checkpoint interval (GAN)
  with :func:`seed_rank`, so the ranks draw different augmentations and latents, and a resumed run
  draws what the uninterrupted one drew.
"""
from __future__ import annotations

import atexit
import datetime
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from shared import checkpoint

# Rank 0 evaluates (a linear probe, an FID) while the others wait in a collective; the defaults
# (10 min for NCCL, 30 for gloo) would abort a long evaluation.
TIMEOUT = datetime.timedelta(hours=2)


# ---------------------------------------------------------------- the process group

def setup(device: torch.device | str = "cpu") -> None:
    """Join torchrun's process group: NCCL for a CUDA ``device`` (on GPU ``LOCAL_RANK``), gloo otherwise.

    A no-op when the group exists already or the environment has no ``WORLD_SIZE`` > 1.
    Call it before models are moved to the GPU (:func:`shared.stage.start` does).
    """
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)  # env://: torchrun's MASTER_ADDR / MASTER_PORT
    atexit.register(_teardown)


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several (torch.distributed initialised, world size > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, the one that logs and writes files (always true on one process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where this rank's small collectives run: its GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- data

def check_divisible(batch_size: int, world: int, key: str = "batch_size") -> int:
    """The per-rank batch ``batch_size / world``; a ValueError naming ``key`` if it does not divide."""
    if batch_size % world:
        raise ValueError(f"{key}={batch_size} (the global batch) is not a multiple of the world size {world} "
                         f"(torchrun's processes in all): set {key} to a multiple of {world}, or launch a "
                         f"number of processes that divides it")
    return batch_size // world


class ShardedLoader:
    """Rank ``rank``'s share of every batch of ``loader``: rows ``rank * b`` to ``(rank + 1) * b - 1``.

    ``loader`` is any epoch loader (``set_epoch``, ``__len__``, batches of tensors such as
    ``(x, y, index)``) whose order depends only on its seed and the epoch, as
    :class:`shared.data.DeviceLoader` and :class:`shared.mixing.MixedLoader` do; every rank holds the
    same loader, so every rank walks the same permutation. Each rank gathers the whole global batch
    (an ``index_select`` of uint8 images on its device) and keeps a view of its rows.
    """

    def __init__(self, loader, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for i, batch in enumerate(self.loader):
            n = batch[0].shape[0]
            if n % self.world_size:
                raise ValueError(f"batch {i} of epoch {self.epoch} holds {n} samples, which {self.world_size} "
                                 f"ranks cannot share equally: build the loader with drop_last=True")
            b = n // self.world_size
            yield tuple(t[self.rank * b:(self.rank + 1) * b] for t in batch)


def shard(loader, batch_size: int, key: str = "batch_size"):
    """``loader`` itself on one process; under torchrun this rank's :class:`ShardedLoader` of it.

    ``batch_size`` is the configured global batch (named ``key`` in errors).
    """
    if not active():
        return loader
    check_divisible(batch_size, world_size(), key)
    return ShardedLoader(loader, rank(), world_size())


# ---------------------------------------------------------------- tensors across ranks

class _Gather(torch.autograd.Function):
    """all_gather whose backward hands each rank the sum over ranks of its rows' gradients."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous()
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss reads this rank's rows: their gradient is the sum of what each rank computed.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        b = grad.shape[0] // dist.get_world_size()
        r = dist.get_rank()
        return grad[r * b:(r + 1) * b]


def gather(z: torch.Tensor) -> torch.Tensor:
    """Every rank's ``z`` (equal shapes), concatenated along dim 0 in rank order; ``z`` on one process.

    Differentiable: the gradient flowing back to this rank's ``z`` is the sum over ranks of the
    gradients of their losses with respect to these rows (the official VICReg code's
    ``FullGatherLayer``). Used for embeddings, whose loss every rank computes over the global batch,
    and without gradient (under ``torch.no_grad``) for MoCo's keys.
    """
    if not active():
        return z
    return _Gather.apply(z)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (in place); ``t`` on one process."""
    if active():
        dist.broadcast(t, src)
    return t


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a (detached) tensor, e.g. the loss to log; ``t`` itself on one process."""
    if not active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def mean_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The mean over ranks of each value of ``logs`` (floats or 0-d tensors; same keys on every rank).

    On one process: ``logs`` unchanged.
    """
    if not active():
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(values)
    return dict(zip(keys, (values / dist.get_world_size()).tolist()))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (evaluation metrics, a checkpoint); ``obj`` on one process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


# ---------------------------------------------------------------- models and gradients

def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun; ``module`` itself on one process.

    Rank 0's parameters and buffers are copied to every rank here, but buffers are not synced
    before each forward (``forward_sync_buffers=False``): MoCo's queue stays alike on every rank by
    its own enqueue of the gathered keys, and batch-norm running statistics stay per rank (rank 0's
    are evaluated and saved; with SyncBatchNorm they are the same everywhere).
    """
    if not active():
        return module
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)


def sync_batchnorm(module: nn.Module, device: torch.device, key: str = "sync_batchnorm") -> nn.Module:
    """Under torchrun, every batch norm of ``module`` (in place) normalises with global batch statistics.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only: on the CPU this is an error naming ``key``. The
    state-dict keys stay those of the batch norms, so checkpoints move between the two. One process:
    ``module`` unchanged.
    """
    if not active():
        return module
    if device.type != "cuda":
        raise ValueError(f"{key}: true needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); on the "
                         f"CPU set it to false (each rank then normalises its own share of the batch)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


@torch.no_grad()
def broadcast_state(*modules: nn.Module) -> None:
    """Rank 0's parameters and buffers in every rank's ``modules`` (as DDP does at construction)."""
    if not active():
        return
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks (one all-reduce of them all, flattened).

    Parameters without a gradient are left alone (the same ones on every rank: every rank runs the
    same code). A no-op on one process.
    """
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


# ---------------------------------------------------------------- randomness and checkpoints

def rank_seed(base: int, position: int, rank: int) -> int:
    """A 32-bit seed for (``base``, ``position``, ``rank``), well mixed by numpy's SeedSequence."""
    return int(np.random.SeedSequence([base, position, rank]).generate_state(1)[0])


def seed_rank(base: int, position: int) -> None:
    """Under torchrun, seed every RNG of this rank with :func:`rank_seed` (``base``, ``position``, rank).

    ``position`` is where the block starts (an epoch, a step), so a run resumed there draws the same
    numbers as the uninterrupted run. A no-op on one process (its stream is never re-seeded).
    """
    if active():
        checkpoint.seed_everything(rank_seed(base, position, rank()))


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str) -> dict | None:
    """:func:`shared.checkpoint.load` on one process; under torchrun rank 0 reads ``path`` (on the CPU)
    and every rank gets its state, so only rank 0 needs the file (no shared file system)."""
    if not active():
        return checkpoint.load(path, map_location=map_location)
    outcome = None
    if is_main():
        try:
            outcome = ("state", checkpoint.load(Path(path), map_location="cpu"))
        except checkpoint.CheckpointError as err:  # every rank raises it, rather than wait for a state
            outcome = ("error", str(err))
    kind, value = broadcast_object(outcome)
    if kind == "error":
        raise checkpoint.CheckpointError(value)
    return value
