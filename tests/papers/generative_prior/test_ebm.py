"""generative_prior's energy-based model: IGEBM's Langevin step and chain, the slides' I_0, the counter-based
draws, the replay buffer, the CD loss, resumable training, and the train_ebm / langevin stages on tiny data."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

from papers.generative_prior import data as gp_data
from papers.generative_prior import ebm, langevin, train_ebm
from papers.generative_prior.ebm import (ChainConfig, ConvNetEnergy, EBMConfig, LangevinConfig, ReplayBuffer, auc,
                                         cd_loss, counter_bits, counter_normal, counter_uniform, interpolated_start,
                                         langevin_chain, langevin_step, load_energy, sampling, save_energy)
from shared import records
from shared.stage import run_seed
from shared.tracking import NullLogger
from shared.trainers.common import NonFiniteLossError
from shared.view_sources.precomputed import PrecomputedViews

CPU = torch.device("cpu")


class Quadratic(nn.Module):
    """E(x) = sum((x - c)^2) per image: gradient 2 (x - c)."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(c.clone())

    def forward(self, x):
        return (x - self.c).pow(2).flatten(1).sum(1)


class Linear(nn.Module):
    """E(x) = sum(w x) per image: gradient w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_net(seed=0, width=0.125):
    torch.manual_seed(seed)
    return ConvNetEnergy(width)


# ---------------------------------------------------------------- one step

def test_one_step_is_igebm_order_noise_then_clipped_gradient_step_then_clamp():
    x = rand(3, 3, 4, 4, seed=1)
    c = rand(1, 3, 4, 4, seed=2) * 3 - 1  # targets in [-1, 2]: some pixels are pushed past 0 or 1
    noise = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    step_lr, noise_scale, clip = 0.3, 20.0, 0.5  # sigma = 0.005 * 20 = 0.1
    out = langevin_step(Quadratic(c), x, step_lr, noise_scale, clip, noise=noise)

    xn, cn, nn_ = x.double().numpy(), c.double().numpy(), noise.double().numpy()
    noisy = xn + 0.005 * noise_scale * nn_  # by hand, in float64
    grad = 2 * (noisy - cn)
    expected = np.clip(noisy - step_lr * np.clip(grad, -clip, clip), 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    # every branch was exercised: clipped and unclipped gradients, both clamps
    assert (np.abs(grad) > clip).any() and (np.abs(grad) < clip).any()
    assert (expected == 0).any() and (expected == 1).any() and ((expected > 0) & (expected < 1)).any()
    # the gradient is taken at the noisy point, not before the noise (another order gives other images)
    other = np.clip(noisy - step_lr * np.clip(2 * (xn - cn), -clip, clip), 0, 1)
    assert np.abs(other - expected).max() > 1e-3


def test_a_step_without_noise_lowers_the_energy_of_a_network():
    net = tiny_net()
    x = 0.3 + 0.4 * rand(4, 3, 16, 16)  # inside (0, 1): the clamp does not act
    with torch.no_grad():
        before = net.eval()(x)
    with sampling(net):
        after = net(langevin_step(net, x, step_lr=1e-3, noise_scale=1.0, grad_clip=1e9, noise=torch.zeros_like(x)))
    assert (after < before).all(), (before, after)


def test_clipping_bounds_each_pixel_move_by_step_lr_times_clip():
    w = torch.tensor([5.0, -3.0, 0.004, -0.002]).repeat(12).reshape(1, 3, 4, 4)
    x = torch.full((2, 3, 4, 4), 0.5)
    out = langevin_step(Linear(w), x, step_lr=10.0, noise_scale=1.0, grad_clip=0.01, noise=torch.zeros_like(x))
    expected = 0.5 - 10.0 * w.clamp(-0.01, 0.01)  # large gradients move 0.1, small ones 10 x w
    torch.testing.assert_close(out, expected.expand_as(out), rtol=0, atol=1e-6)


def test_noise_std_is_0_005_times_noise_scale():
    x = torch.full((64, 3, 8, 8), 0.5)
    out = langevin_step(Linear(torch.zeros(1, 3, 8, 8)), x, 10.0, 2.0, 0.01,
                        generator=torch.Generator().manual_seed(0))
    assert abs((out - x).std().item() - 0.01) < 3e-4  # 12288 draws


def test_interpolated_start_is_beta_x_plus_one_minus_beta_uniform():
    x = rand(2, 3, 4, 4, seed=5)
    eps = rand(2, 3, 4, 4, seed=6)
    torch.testing.assert_close(interpolated_start(x, 0.6, eps=eps), 0.6 * x + 0.4 * eps)
    drawn = interpolated_start(x, 0.7, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(drawn, 0.7 * x + 0.3 * rand(2, 3, 4, 4, seed=9))
    assert interpolated_start(x, 1.0, eps=eps).equal(x)


# ---------------------------------------------------------------- chains

def test_snapshots_come_from_one_chain():
    net = tiny_net()
    x0 = rand(3, 3, 16, 16)
    rows = torch.tensor([4, 0, 9])

    def noise(k):
        return counter_normal(1, rows, k, (3, 16, 16))

    snaps = langevin_chain(net, x0, 10, 10.0, 1.0, 0.01, snapshots=(0, 5, 10), noise=noise)
    assert sorted(snaps) == [0, 5, 10] and snaps[0].equal(x0)
    first = langevin_chain(net, x0, 5, 10.0, 1.0, 0.01, snapshots=(5,), noise=noise)[5]
    second = langevin_chain(net, first, 5, 10.0, 1.0, 0.01, snapshots=(5,), noise=lambda k: noise(k + 5))[5]
    torch.testing.assert_close(snaps[5], first, rtol=0, atol=0)
    torch.testing.assert_close(snaps[10], second, rtol=0, atol=0)
    x = x0  # and the same as a hand loop of single steps
    with sampling(net):
        for k in range(1, 11):
            x = langevin_step(net, x, 10.0, 1.0, 0.01, noise=noise(k))
    torch.testing.assert_close(snaps[10], x, rtol=0, atol=0)
    assert not snaps[10].equal(snaps[5])


def test_sampling_gives_the_energy_no_gradient_and_leaves_its_mode_and_spectral_norm_alone():
    net = tiny_net().train()
    u_before = [b.clone() for name, b in net.named_buffers() if name.endswith("_u")]
    modes = []
    net.register_forward_pre_hook(lambda m, i: modes.append(m.training))
    langevin_chain(net, rand(2, 3, 16, 16), 3, 10.0, 1.0, 0.01, snapshots=(3,))
    assert modes == [False] * 3  # eval while sampling
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())
    u_after = [b for name, b in net.named_buffers() if name.endswith("_u")]
    assert u_before and all(a.equal(b) for a, b in zip(u_before, u_after))  # no power iteration
    net(rand(2, 3, 16, 16))  # a training forward does run one (the check above can fail)
    assert not all(a.equal(b) for a, b in zip(u_before, [b for n, b in net.named_buffers() if n.endswith("_u")]))


def test_a_row_draws_the_same_whatever_batch_it_is_in():
    full = counter_normal(3, torch.arange(10), 2, (3, 4, 4))
    part = counter_normal(3, torch.tensor([7, 2]), 2, (3, 4, 4))
    assert part[0].equal(full[7]) and part[1].equal(full[2])
    assert not counter_normal(3, torch.arange(10), 3, (3, 4, 4)).equal(full)  # another step, other draws
    assert not counter_normal(4, torch.arange(10), 2, (3, 4, 4)).equal(full)  # another seed, other draws


def _mix_np(z):
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def test_counter_bits_are_splitmix64_in_unsigned_arithmetic():
    rows = np.array([0, 1, 77, 2 ** 40], np.uint64)
    seed, stream, n = 12345, 6, 7
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):  # the reference: numpy uint64, wrapping by definition
        root = _mix_np(np.uint64(seed) * golden + np.uint64(stream))
        per_row = _mix_np(root ^ _mix_np((rows + np.uint64(1)) * golden))
        counters = _mix_np((np.arange(1, n + 1, dtype=np.uint64)) * golden + np.uint64(0x632BE59BD9B4E019))
        expected = _mix_np(per_row[:, None] ^ counters[None, :])
    got = counter_bits(seed, torch.from_numpy(rows.astype(np.int64)), stream, n).numpy().view(np.uint64)
    np.testing.assert_array_equal(got, expected)


def test_counter_draws_have_the_right_distributions():
    z = counter_normal(0, torch.arange(40), 1, (3, 8, 8)).flatten().double().numpy()
    u = counter_uniform(0, torch.arange(40), 0, (3, 8, 8)).flatten().double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3 and stats.kstest(u, "uniform").pvalue > 1e-3
    assert 0 < u.min() and u.max() < 1
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.05  # 7680 draws: neighbours uncorrelated


# ---------------------------------------------------------------- loss, buffer, metrics

def test_cd_loss_is_igebm_formula():
    e_pos, e_neg = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, 0.25, -0.5])
    reg = 0.7
    by_hand = (sum(e_pos.tolist()) / 3 - sum(e_neg.tolist()) / 3
               + reg * (sum(v * v for v in e_pos.tolist()) / 3 + sum(v * v for v in e_neg.tolist()) / 3))
    assert cd_loss(e_pos, e_neg, reg).item() == pytest.approx(by_hand, rel=1e-6)


def test_the_buffer_restarts_a_fraction_reinit_of_chains_from_noise():
    buf = ReplayBuffer(100, (3, 2, 2))
    x0, fresh = buf.sample(8, 0.05, torch.Generator().manual_seed(0))
    assert fresh.all()  # empty buffer: every chain from U(0, 1)
    buf.push(torch.full((100, 3, 2, 2), 0.5))
    g = torch.Generator().manual_seed(1)
    x0, fresh = map(torch.cat, zip(*(buf.sample(64, 0.05, g) for _ in range(300))))  # 300 batches < the buffer
    assert abs(fresh.float().mean().item() - 0.05) < 0.006  # 19,200 chains: std 0.0016
    is_buffer = (x0 == 0.5).flatten(1).all(1)
    assert torch.equal(is_buffer, ~fresh)


def test_the_buffer_is_a_ring_and_its_state_round_trips():
    buf = ReplayBuffer(10, (1, 1, 1))
    buf.push(torch.arange(7.0).view(7, 1, 1, 1))
    buf.push(torch.arange(7.0, 15.0).view(8, 1, 1, 1))
    assert len(buf) == 10 and buf.stored().flatten().tolist() == list(range(5, 15))
    other = ReplayBuffer(10, (1, 1, 1))
    other.load_state_dict(buf.state_dict())
    a = buf.sample(6, 0.3, torch.Generator().manual_seed(2))
    b = other.sample(6, 0.3, torch.Generator().manual_seed(2))
    assert a[0].equal(b[0]) and a[1].equal(b[1]) and other.stored().equal(buf.stored())
    with pytest.raises(ValueError, match="cannot be loaded"):
        ReplayBuffer(5, (1, 1, 1)).load_state_dict(buf.state_dict())


def test_auc_matches_scikit_learn_with_ties():
    lower, higher = torch.tensor([0.1, 0.4, 0.4, 0.9, 0.2]), torch.tensor([0.4, 0.8, 0.05, 1.0])
    expected = roc_auc_score([0] * 5 + [1] * 4, torch.cat([lower, higher]).numpy())
    assert auc(lower, higher) == pytest.approx(expected)
    assert auc(torch.zeros(3), torch.ones(3)) == 1.0


def test_config_checks_name_the_key():
    with pytest.raises(ValueError, match="run_chains names \\['nope'\\]"):
        LangevinConfig(chains={"default": ChainConfig()}, run_chains=["nope"])
    with pytest.raises(ValueError, match="snapshots"):
        ChainConfig(snapshots=[5, 0])
    with pytest.raises(ValueError, match="checkpoint_every"):
        EBMConfig(log_every=3, checkpoint_every=4)
    cfg = LangevinConfig()
    assert cfg.chains["default"].steps == 20 and cfg.chains["alpha0p5"].beta == 0.5
    cfg.check_use("default", 15)
    with pytest.raises(ValueError, match="not 7"):
        cfg.check_use("default", 7)


# ---------------------------------------------------------------- training

TINY = dict(arch="convnet", width=0.125, steps=4, batch_size=4, langevin_steps=3, buffer_size=8, log_every=1,
            checkpoint_every=2)


def tiny_loader(n=12, side=16, seed=0):
    from shared.data import DeviceLoader
    x = torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return DeviceLoader(x, torch.zeros(n, dtype=torch.int64), batch_size=4, shuffle=True, drop_last=True, seed=3)


def train(cfg, out_dir, logger, seed=0):
    net = tiny_net(seed)
    torch.manual_seed(seed)
    return net, ebm.train_ebm(cfg, net, tiny_loader(), out_dir=out_dir, logger=logger, device=CPU, progress=False)


def test_training_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path, kill_at):
    cfg = EBMConfig(**TINY)
    net_a, a = train(cfg, tmp_path / "a", NullLogger())
    with pytest.raises(kill_at.error):
        train(cfg, tmp_path / "b", kill_at(3))  # killed during iteration 3: the checkpoint is iteration 2's
    net_b, b = train(cfg, tmp_path / "b", NullLogger(), seed=1)  # other initial weights: all from the checkpoint
    assert a.steps == b.steps == 4 and a.history == b.history and [h["step"] for h in a.history] == [1, 2, 3, 4]
    for (name, p), q in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert p.equal(q), name
    assert a.buffer.stored().equal(b.buffer.stored()) and len(a.buffer) == 8
    before = {k: v.clone() for k, v in tiny_net().state_dict().items()}
    assert any(not v.equal(net_a.state_dict()[k]) for k, v in before.items())  # it trained


def test_training_moves_energy_parameters_only_through_the_cd_loss(tmp_path):
    cfg = EBMConfig(**{**TINY, "steps": 1})
    net = tiny_net()
    start = {k: v.clone() for k, v in net.named_parameters()}
    torch.manual_seed(0)
    ebm.train_ebm(cfg, net, tiny_loader(), out_dir=tmp_path, logger=NullLogger(), device=CPU, progress=False)
    assert all(not p.equal(start[k]) for k, p in net.named_parameters())  # every parameter learns


def test_a_diverged_loss_stops_naming_the_iteration(tmp_path):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(float("nan")))

        def forward(self, x):
            return x.flatten(1).sum(1) * self.w

    with pytest.raises(NonFiniteLossError, match="at iteration 1"):
        ebm.train_ebm(EBMConfig(**TINY), Broken(), tiny_loader(), out_dir=tmp_path, logger=NullLogger(), device=CPU,
                      progress=False)


def test_the_energy_file_round_trips_frozen_in_eval_mode(tmp_path):
    net = tiny_net()
    save_energy(tmp_path / "energy.pt", net, EBMConfig(**TINY), steps=4)
    loaded = load_energy(tmp_path / "energy.pt")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_energy(tmp_path / "nothing.pt")


# ---------------------------------------------------------------- the stages on tiny data

@pytest.fixture
def project(tmp_path, suite_params, restore_threads, monkeypatch):
    splits = {"train": torch.randint(0, 256, (10, 3, 16, 16), generator=torch.Generator().manual_seed(0),
                                     dtype=torch.uint8),
              "test": torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(1),
                                    dtype=torch.uint8)}
    monkeypatch.setattr(gp_data, "load", lambda data_dir, split: (splits[split].clone(),
                                                                    torch.zeros(len(splits[split]), dtype=torch.int64)))
    params = tmp_path / "paper_params.yaml"
    params.write_text(yaml.safe_dump({
        "ebm": {**TINY, "steps": 3, "n_sample_grid": 4, "n_check": 5},
        "langevin": {"chains": {"default": {"snapshots": [0, 2, 4]}, "other": {"beta": 0.5, "snapshots": [2]}},
                     "run_chains": ["default"], "batch_size": 4, "n_grid": 3}}))
    common = ["--params", str(params), "--suite-params", str(suite_params()), "--data", str(tmp_path / "data")]
    return tmp_path, common, splits


def test_train_ebm_then_langevin_write_aligned_views_and_skip_markers(project):
    tmp, common, splits = project
    assert train_ebm.main([*common, "--out", str(tmp / "ebm"), "--metrics", str(tmp / "m_ebm.json")]) == 0
    record = records.read(tmp / "ebm" / "metrics.json")
    assert record.table is None and record.extra["steps"] == 3 and len(record.extra["history"]) == 3
    assert {"loss", "e_pos", "e_neg", "e_real_test", "e_buffer", "e_noise", "auc_real_vs_noise"} <= set(record.metrics)
    assert json.loads((tmp / "m_ebm.json").read_text()) == pytest.approx(record.metrics)
    with np.load(tmp / "ebm" / "buffer.npz") as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (8, 3, 16, 16)
    assert Image.open(tmp / "ebm" / "samples.png").size == (2 * 16, 2 * 16)
    energy_file = tmp / "ebm" / "energy.pt"
    # DVC deletes the outputs but the persisted checkpoint before a rerun: the finished run writes them again
    written = {name: (tmp / "ebm" / name).read_bytes() for name in ("energy.pt", "buffer.npz", "samples.png")}
    for name in written:
        (tmp / "ebm" / name).unlink()
    assert train_ebm.main([*common, "--out", str(tmp / "ebm")]) == 0
    assert all((tmp / "ebm" / name).read_bytes() == data for name, data in written.items())
    assert records.read(tmp / "ebm" / "metrics.json").metrics == record.metrics

    out = tmp / "langevin" / "default"
    assert langevin.main([*common, "--chain", "default", "--energy", str(energy_file), "--out", str(out)]) == 0
    record = records.read(out / "metrics.json")
    assert [r["step"] for r in record.extra["per_snapshot"]] == [0, 2, 4]
    assert record.metrics["dist_i0_step0"] == 0 and record.metrics["dist_x_step0"] > 0
    # chain.png: 3 images x (x, I_0, step 2, step 4)
    assert Image.open(out / "chain.png").size == (4 * 16, 3 * 16)

    # each stored row is that image's own chain, whatever the batch: recompute rows 7 and 2 alone
    x = splits["train"]
    net = load_energy(energy_file)
    seed = run_seed(0, 0)
    chain = ChainConfig(snapshots=[0, 2, 4])
    for row in (7, 2):
        alone = langevin.chain_views(net, x[row:row + 1].float() / 255, torch.tensor([row]), chain, seed)
        for k in (0, 2, 4):
            views = PrecomputedViews(out / f"step{k}.npy")
            index = torch.tensor([row])
            stored = views.generated(x[index], index)  # the lookup checks the row's source fingerprint
            assert (stored * 255 - langevin.to_uint8(alone[k]).float()).abs().max() <= 1, (row, k)
    with pytest.raises(ValueError, match="not the source images"):
        PrecomputedViews(out / "step4.npy").generated(x[[3]], torch.tensor([4]))

    other = tmp / "langevin" / "other"
    assert langevin.main([*common, "--chain", "other", "--energy", str(energy_file), "--out", str(other)]) == 0
    assert "not run at scale smoke" in records.read(other / "metrics.json").skipped
    assert not list(other.glob("step*.npy"))
    assert langevin.main([*common, "--chain", "nope", "--energy", str(energy_file), "--out", str(tmp / "n")]) == 2


def test_energy_check_scores_buffer_and_real_images_on_the_same_scale():
    class MeanEnergy(nn.Module):  # energy = mean pixel value: a scale error shows up at once
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))  # gives the energy a device

        def forward(self, x):
            return x.flatten(1).mean(1)

    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    # a buffer holding the same images as the held-out set: same energies, so no AUC can tell them apart
    check = train_ebm.energy_check(MeanEnergy(), real, real.clone(), n=40)
    assert check["e_buffer"] == pytest.approx(check["e_real_test"], rel=1e-6)
    assert 0.45 <= check["e_real_test"] <= 0.55 and check["auc_real_vs_buffer"] == pytest.approx(0.5)
    expected = roc_auc_score([1] * 40 + [0] * 40, -torch.cat([real, real]).float().div(255).flatten(1).mean(1).numpy())
    assert check["auc_real_vs_buffer"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="buffer_images must be uint8"):
        train_ebm.energy_check(MeanEnergy(), real, real.float() / 255, n=40)
