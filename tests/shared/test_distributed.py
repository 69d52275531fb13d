"""Scale-out: two gloo processes on this CPU take the single-process step on the combined batch.

The two ranks are forked from the test process (so they do not import torch again, which costs
seconds here) and join the process group from torchrun's environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT on a free port), exactly as under ``torchrun``. They run the
real trainers once, for every scenario below; the references run in the test process on one.

The networks have no batch norm: with per-rank statistics a batch norm normalises each rank's
half on its own, and the step differs from one process unless SyncBatchNorm is on (GPUs only;
the ``sync_batchnorm`` key). The views are deterministic (the image and its mirror): random
augmentations draw different numbers on 2 ranks than on 1, by design.
"""
import copy
import math
import multiprocessing
import os
import shutil
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared import checkpoint, distributed
from shared.data import DeviceLoader
from shared.gan_losses import nonsaturating
from shared.losses import nt_xent
from shared.methods import build_method
from shared.tracking import NullLogger
from shared.trainers.gan import GANConfig, to_model_range, train_gan
from shared.trainers.ssl import SSLConfig, train_ssl

CPU = torch.device("cpu")
WORLD = 2
METHODS = {"simclr": {"projection_dim": 4, "hidden_dim": 8, "temperature": 0.5},
           "vicreg": {"mlp": "8"},  # one Linear: no batch norm in the expander
           "mocov2": {"dim": 4, "queue_size": 12, "hidden_dim": 8}}  # 12: the pointer wraps mid-batch
BATCH, EPOCHS, STOP_AT = 8, 3, 2  # 32 images: 4 global batches (2 x 4 images) per epoch


class Stop(RuntimeError):
    """Raised from on_eval once epoch STOP_AT is trained, before its checkpoint: a kill."""


class TinyEncoder(nn.Module):
    """Conv - ReLU - pool - Linear, no batch norm."""
    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(16, 8))

    def forward(self, x):
        return self.net(x)


class TinyG(nn.Module):
    """z -> tanh(Linear(z)) as 3 x 8 x 8 images; keeps every latent it is given (the test reads them)."""
    z_dim = 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3 * 8 * 8)
        self.latents = []

    def forward(self, z):
        self.latents.append(z.detach().clone())
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x):
        return self.fc(F.leaky_relu(self.conv(x), 0.2).flatten(1)).squeeze(1)


def images(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.long)


def mirror_views(x, index=None):
    x = x.float() / 255
    return [x, x.flip(-1)]


def ssl_cfg():
    # lr 0.1: at 0.5 LARS' normalised steps turn a 3e-8 change of the weights into 2e-4 after 8 steps
    return SSLConfig(epochs=EPOCHS, batch_size=BATCH, optimizer="lars", lr=0.1, schedule="cosine", warmup_epochs=1,
                     eval_every=1, checkpoint_every=1, log_every=1)


def new_method(name):
    torch.manual_seed(0)
    return build_method(name, TinyEncoder(), **METHODS[name])


def pretrain(name, out_dir, *, stop_at=None, snapshots=None):
    """The SSL trainer on the toy images; returns (method, the logged loss per step)."""
    method, (x, y) = new_method(name), images()
    log = NullLogger()

    def on_eval(epoch, metrics):
        if snapshots is not None:
            snapshots[epoch] = copy.deepcopy(method.state_dict())
        if epoch == stop_at:
            raise Stop(f"stopped after epoch {epoch}")

    try:
        train_ssl(ssl_cfg(), method, mirror_views, DeviceLoader(x, y, BATCH, drop_last=True, seed=5),
                  out_dir=out_dir, logger=log, device=CPU, evaluate=lambda enc: {"probe": 0.0}, on_eval=on_eval,
                  progress=False)
    except Stop:
        pass
    return method, dict(log.metric_history("train/loss"))


def gan_cfg():
    return GANConfig(steps=1, batch_size=BATCH, r1_gamma=1.0, r1_interval=1, mirror=False, style_mixing_prob=0.0,
                     ema_kimg=0.01, ema_start_kimg=0.0, log_every=1, sample_every=1, checkpoint_every=1,
                     eval_every=1, n_sample_grid=4)


def new_gan():
    torch.manual_seed(1)
    return TinyG(), TinyD()


def gan_step(out_dir):
    """One step of the GAN trainer; returns (G's latents, the logged D and G losses)."""
    G, D = new_gan()
    x, y = images(seed=2)
    log = NullLogger()
    train_gan(gan_cfg(), G, D, nonsaturating(""), DeviceLoader(x, y, BATCH, drop_last=True, seed=7),
              out_dir=out_dir, logger=log, device=CPU, z_dim=TinyG.z_dim, progress=False)
    losses = {k: dict(log.metric_history(f"train/{k}"))[1] for k in ("d/total", "g/total")} if log.metric_history(
        "train/d/total") else {}
    return G.latents, losses, {"G": G.state_dict(), "D": D.state_dict()}


# ---------------------------------------------------------------- the two ranks

def _rank(rank: int, port: int, out: Path) -> None:
    """One rank: the environment torchrun sets, then every scenario; results to out/rank<r>.pt."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        distributed.setup(CPU)
        assert distributed.active() and distributed.rank() == rank and distributed.world_size() == WORLD
        results = {}
        for name in METHODS:
            method, losses = pretrain(name, out / name, stop_at=STOP_AT)
            results[name] = {"losses": losses, "state": method.state_dict()}
        latents, losses, state = gan_step(out / "gan")
        results["gan"] = {"latents": latents, "losses": losses, "state": state}
        torch.save(results, out / f"rank{rank}.pt")
    except BaseException:  # noqa: BLE001 - the parent reads the exit code; the traceback goes to stderr
        traceback.print_exc()
        os._exit(1)
    os._exit(0)  # not pytest's exit handlers: this is a forked copy of the test process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The results of both ranks and their output folder (rank 0's checkpoints)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the two ranks are forked (POSIX)")
    out = tmp_path_factory.mktemp("two_ranks")
    ctx, port = multiprocessing.get_context("fork"), _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * WORLD, "a rank failed (its traceback is in the captured stderr)"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], out


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


# ---------------------------------------------------------------- one process: nothing changes

def test_one_process_is_left_alone():
    assert "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1
    distributed.setup(CPU)
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    x, y = images()
    loader, model, z = DeviceLoader(x, y, BATCH), nn.Linear(2, 2), torch.randn(3, 2)
    assert distributed.shard(loader, BATCH) is loader and distributed.wrap(model, CPU) is model
    assert distributed.gather(z) is z and distributed.mean(z) is z
    logs = {"a": 1.0}
    assert distributed.mean_logs(logs) is logs and distributed.broadcast_object(logs) is logs
    state = torch.get_rng_state()
    distributed.seed_rank(123, 4)
    assert torch.equal(torch.get_rng_state(), state), "one process is never re-seeded"


# ---------------------------------------------------------------- the sampler

def test_ranks_share_each_global_batch_disjointly_in_its_order():
    x, y = images(40)
    loader = DeviceLoader(x, y, BATCH, drop_last=True, seed=3)
    for world in (2, 4):
        shards = [distributed.ShardedLoader(DeviceLoader(x, y, BATCH, drop_last=True, seed=3), r, world)
                  for r in range(world)]
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            for s in shards:
                s.set_epoch(epoch)
            assert all(len(s) == len(loader) == 5 for s in shards)
            for (bx, by, bi), *parts in zip(loader, *shards, strict=True):
                assert all(len(p[2]) == BATCH // world for p in parts)
                assert torch.equal(torch.cat([p[2] for p in parts]), bi)  # the union, in the batch's order
                assert torch.equal(torch.cat([p[0] for p in parts]), bx)
                assert len(set(torch.cat([p[2] for p in parts]).tolist())) == BATCH  # disjoint
    loader.set_epoch(0)
    first = next(iter(loader))[2]
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[2], first), "the permutation changes with the epoch"


def test_a_batch_the_ranks_cannot_share_is_an_error_naming_the_key():
    assert distributed.check_divisible(128, 4) == 32
    with pytest.raises(ValueError, match=r"pretrain\.optimizers\.lars\.batch_size=6 .* world size 4"):
        distributed.check_divisible(6, 4, key="pretrain.optimizers.lars.batch_size")
    x, y = images(10)  # batches of 8 and 2 without drop_last: 2 is not shared by 4 ranks
    with pytest.raises(ValueError, match="batch 1 of epoch 0 holds 2 samples.*drop_last=True"):
        list(distributed.ShardedLoader(DeviceLoader(x, y, BATCH), 0, 4))


def test_sync_batchnorm_on_the_cpu_is_an_error_naming_the_key(monkeypatch):
    monkeypatch.setattr(distributed, "active", lambda: True)
    with pytest.raises(ValueError, match="sync_batchnorm: true needs CUDA"):
        distributed.sync_batchnorm(nn.BatchNorm1d(3), CPU)


# ---------------------------------------------------------------- two ranks = one process on the combined batch

@pytest.mark.parametrize("name", list(METHODS))
def test_two_ranks_take_the_single_process_steps(two_ranks, tmp_path, name):
    """Every step's loss, the state after each epoch (the parameters, LARS' momentum, MoCo's queue)."""
    ranks, out = two_ranks
    snapshots = {}
    _, losses = pretrain(name, tmp_path, snapshots=snapshots)  # one process, uninterrupted
    steps = STOP_AT * 4
    got = ranks[0][name]["losses"]
    assert sorted(got) == list(range(1, steps + 1))
    for s in got:
        assert got[s] == pytest.approx(losses[s], rel=1e-5, abs=1e-6), f"{name}: loss at step {s}"
    # the checkpoint rank 0 wrote after epoch 1, and both ranks' state after epoch 2
    state = checkpoint.load(out / name / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert _max_diff(state["method"], snapshots[1]) < 1e-6
    for r in range(WORLD):
        assert _max_diff(ranks[r][name]["state"], snapshots[2]) < 1e-6, f"{name}: rank {r} after epoch 2"
    # and the parameters moved: the comparison is not of two untrained copies
    assert _max_diff(snapshots[2], new_method(name).state_dict()) > 1e-3


def test_the_global_loss_is_not_the_mean_of_the_ranks_losses():
    """What the gather changes: NT-Xent over 8 images is not the mean of two NT-Xents over 4."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    whole = nt_xent(z1, z2).item()
    halves = (nt_xent(z1[:4], z2[:4]).item() + nt_xent(z1[4:], z2[4:]).item()) / 2
    assert abs(whole - halves) > 0.1


@pytest.mark.parametrize("name", ["simclr", "vicreg"])
def test_a_two_rank_checkpoint_resumes_on_one_process(two_ranks, tmp_path, name):
    """Rank 0's checkpoint after epoch 1, resumed alone: the uninterrupted run's next steps and end."""
    _, out = two_ranks
    shutil.copy(out / name / "checkpoint.pt", tmp_path / "checkpoint.pt")
    resumed, resumed_losses = pretrain(name, tmp_path)
    alone, losses = pretrain(name, tmp_path / "alone")
    assert sorted(resumed_losses) == list(range(5, EPOCHS * 4 + 1))
    for s, value in resumed_losses.items():
        assert value == pytest.approx(losses[s], rel=1e-5, abs=1e-6), f"{name}: loss at step {s}"
    assert _max_diff(resumed.state_dict(), alone.state_dict()) < 1e-6


# ---------------------------------------------------------------- the GAN

def test_two_ranks_take_the_single_process_gan_step(two_ranks):
    """One D step (non-saturating loss + R1) and one G step, against the same step written out by hand
    on the combined batch: the 8 reals of the first global batch and both ranks' latents."""
    ranks, out = two_ranks
    z_d = torch.cat([r["gan"]["latents"][0] for r in ranks])  # each rank drew its own 4 latents
    z_g = torch.cat([r["gan"]["latents"][1] for r in ranks])
    assert z_d.shape == (BATCH, TinyG.z_dim) and not torch.equal(ranks[0]["gan"]["latents"][0],
                                                                ranks[1]["gan"]["latents"][0])
    G, D = new_gan()
    cfg = gan_cfg()
    x, y = images(seed=2)
    loader = DeviceLoader(x, y, BATCH, drop_last=True, seed=7)
    loader.set_epoch(0)
    real = to_model_range(next(iter(loader))[0], CPU)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas, eps=1e-8)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas, eps=1e-8)
    # D: E softplus(-D(x)) + E softplus(D(G(z))) + gamma / 2 * E |grad_x D(x)|^2
    with torch.no_grad():
        fake = G(z_d)
    r = real.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(r).sum(), r, create_graph=True)
    r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
    d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean() + cfg.r1_gamma / 2 * r1
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    # G: E softplus(-D(G(z))) through the frozen D
    D.requires_grad_(False)
    g_loss = F.softplus(-D(G(z_g))).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()

    logged = ranks[0]["gan"]["losses"]
    assert logged["d/total"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert logged["g/total"] == pytest.approx(g_loss.item(), rel=1e-5)
    want = {"G": G.state_dict(), "D": D.state_dict()}
    saved = checkpoint.load(out / "gan" / "checkpoint.pt")
    for part in ("G", "D"):
        assert _max_diff(saved[part], want[part]) < 1e-6, part
        for rank in ranks:
            assert _max_diff(rank["gan"]["state"][part], want[part]) < 1e-6, part
    G0, D0 = new_gan()
    assert _max_diff(want["D"], D0.state_dict()) > 1e-4 and _max_diff(want["G"], G0.state_dict()) > 1e-4
    assert math.isfinite(r1.item()) and r1.item() > 0
