"""gencl's VQ tokenizer: the straight-through estimator and commitment gradient, nearest codes, the EMA codebook
step and dead-code restart against hand computations, perplexity and PSNR against direct formulas, the
tokenizer file, and the train / encode stages (resume after a kill, aligned token maps) on tiny data."""
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from papers.gencl import tokenizer
from papers.gencl.tokenizer import TokenizerConfig, train_tokenizer
from papers.gencl.vq import (EMAQuantizer, VQAutoencoder, VQConfig, load_tokenizer, perplexity, psnr,
                             save_tokenizer)
from shared import records
from shared.config import build
from shared.data import DeviceLoader, sha256_file
from shared.tracking import NullLogger
from shared.trainers.common import NonFiniteLossError

CPU = torch.device("cpu")
TINY_VQ = {"channels": (4, 8), "res_blocks": 1, "embed_dim": 3, "codebook_size": 16}  # f = 4


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_model(seed=0, **over):
    torch.manual_seed(seed)
    return VQAutoencoder(VQConfig(**{**TINY_VQ, **over}))


# ---------------------------------------------------------------- gradients

def test_gradient_reaches_every_encoder_and_decoder_parameter_and_never_the_codebook():
    model = tiny_model().train()
    assert list(model.quantizer.parameters()) == []  # the codebook is buffers: learned by EMA only
    _, terms, _ = model(rand(2, 3, 8, 8))
    (terms["recon"] + terms["commit"]).backward()
    for name, p in model.named_parameters():
        assert name.startswith(("encoder.", "decoder.")), name
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not b.requires_grad for b in model.quantizer.buffers())


def test_reconstruction_alone_reaches_the_encoder_through_the_straight_through_estimator():
    model = tiny_model().train()
    _, terms, _ = model(rand(2, 3, 8, 8))
    terms["recon"].backward()  # no commitment: the encoder learns only if sg(z_q - z_e) passes the gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_straight_through_passes_the_output_gradient_unchanged_and_commitment_is_z_minus_e():
    q = EMAQuantizer(5, 3).eval()
    z_e = rand(2, 3, 2, 2, seed=1).mul(4).sub(2).requires_grad_(True)
    z_st, idx, commit, _ = q(z_e)
    e = q.embedding[idx].permute(0, 3, 1, 2)  # the chosen codes as (B, D, h, w)
    torch.testing.assert_close(z_st, e)  # the forward value is the code
    g = rand(*z_e.shape, seed=2)
    (z_st * g).sum().backward()
    torch.testing.assert_close(z_e.grad, g, rtol=0, atol=0)  # identity backward
    z_e.grad = None
    _, _, commit, _ = q(z_e)
    commit.backward()
    hand = 2 * (z_e.detach() - e) / z_e.numel()  # d/dz mean((z - sg(e))^2)
    torch.testing.assert_close(z_e.grad, hand)
    torch.testing.assert_close(commit, ((z_e.detach() - e) ** 2).mean())


# ---------------------------------------------------------------- the quantiser

def test_nearest_code_matches_brute_force_cdist():
    q = EMAQuantizer(37, 6)
    z = torch.randn(200, 6, generator=torch.Generator().manual_seed(3))
    assert q.nearest(z).equal(torch.cdist(z, q.embedding).argmin(1))


def test_one_ema_step_matches_the_hand_computation():
    q = EMAQuantizer(3, 2, decay=0.5, eps=0.1)
    q.cluster_size.copy_(torch.tensor([2.0, 1.0, 0.5]))
    q.embed_sum.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    q.ema_update(z, torch.tensor([0, 0, 1, 0]))
    # counts n = [3, 1, 0], sums = [[9, 7], [0, 2], [0, 0]]
    # N <- 0.5 N + 0.5 n ;  m <- 0.5 m + 0.5 sums
    N = [0.5 * 2 + 0.5 * 3, 0.5 * 1 + 0.5 * 1, 0.5 * 0.5 + 0.5 * 0]  # [2.5, 1.0, 0.25]
    m = [[0.5 * 2 + 0.5 * 9, 0.5 * 0 + 0.5 * 7], [0.0, 0.5 * 1 + 0.5 * 2], [0.5, 0.5]]
    n = sum(N)  # 3.75
    smoothed = [(N_i + 0.1) / (n + 3 * 0.1) * n for N_i in N]  # Laplace smoothing
    e = [[m[i][j] / smoothed[i] for j in range(2)] for i in range(3)]
    torch.testing.assert_close(q.cluster_size, torch.tensor(N))
    torch.testing.assert_close(q.embed_sum, torch.tensor(m))
    torch.testing.assert_close(q.embedding, torch.tensor(e))
    assert q.embedding[0].tolist() == pytest.approx([5.5 / (2.6 / 4.05 * 3.75), 3.5 / (2.6 / 4.05 * 3.75)])


def test_a_training_forward_takes_one_ema_step_from_the_old_codebook_and_restarts_exactly_the_unused_codes():
    # fresh codebook: N_i = 1 = threshold; after one step N_i = 0.9 + 0.1 n_i >= 1 iff code i was used
    q = EMAQuantizer(8, 2, decay=0.9, eps=1e-5, restart_threshold=1.0).train()
    before = q.embedding.clone()
    z_e = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(4))
    z = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    reference = EMAQuantizer(8, 2, decay=0.9, eps=1e-5)
    reference.load_state_dict(q.state_dict())
    idx_ref = reference.nearest(z)
    reference.ema_update(z, idx_ref)
    used = torch.zeros(8, dtype=torch.bool)
    used[idx_ref] = True
    assert 0 < used.sum() < 8  # the test exercises both kinds

    torch.manual_seed(5)
    expected_rows = torch.randint(0, len(z), (int((~used).sum()),))  # what restart_dead will draw
    torch.manual_seed(5)
    z_st, idx, _, stats = q(z_e)
    assert idx.flatten().equal(idx_ref)
    torch.testing.assert_close(z_st, before[idx].permute(0, 3, 1, 2))  # the codes from before the step
    assert stats["restarted"].item() == (~used).sum()
    torch.testing.assert_close(q.embedding[used], reference.embedding[used])
    torch.testing.assert_close(q.embedding[~used], z[expected_rows])  # re-seeded from this batch's outputs
    assert q.cluster_size[~used].eq(1.0).all()
    torch.testing.assert_close(q.embed_sum[~used], z[expected_rows] * 1.0)


def test_restart_reseeds_only_codes_below_the_threshold_with_encoder_outputs():
    q = EMAQuantizer(5, 3, restart_threshold=2.0)
    q.cluster_size.copy_(torch.tensor([3.0, 1.9, 2.0, 0.0, 5.0]))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.arange(30.0).reshape(10, 3)  # distinct rows
    torch.manual_seed(6)
    rows = torch.randint(0, 10, (2,))
    torch.manual_seed(6)
    assert q.restart_dead(z) == 2
    dead, alive = torch.tensor([1, 3]), torch.tensor([0, 2, 4])
    assert q.embedding[dead].equal(z[rows])
    assert q.cluster_size[dead].equal(torch.tensor([2.0, 2.0])) and q.embed_sum[dead].equal(z[rows] * 2)
    for name in ("embedding", "cluster_size", "embed_sum"):
        assert q.state_dict()[name][alive].equal(before[name][alive]), name


def test_eval_mode_and_encode_indices_leave_the_codebook_alone():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    model.train().encode_indices(rand(2, 3, 8, 8))
    model.eval()(rand(2, 3, 8, 8))
    assert all(v.equal(before[k]) for k, v in model.quantizer.state_dict().items())


# ---------------------------------------------------------------- metrics

def test_perplexity_matches_the_direct_formula():
    idx = torch.tensor([[0, 0, 1], [3, 3, 3]])
    counts = np.bincount(idx.flatten().numpy(), minlength=6)
    p = counts[counts > 0] / counts.sum()
    assert perplexity(idx, 6).item() == pytest.approx(math.exp(-sum(pi * math.log(pi) for pi in p)), rel=1e-6)
    assert perplexity(torch.zeros(10, dtype=torch.long), 4).item() == pytest.approx(1.0)
    assert perplexity(torch.arange(8).repeat(3), 8).item() == pytest.approx(8.0, rel=1e-6)


def test_psnr_matches_the_direct_formula_and_skimage():
    x, y = rand(3, 3, 5, 5, seed=7), rand(3, 3, 5, 5, seed=8)
    direct = np.mean([10 * math.log10(1 / float(((a - b) ** 2).mean())) for a, b in zip(x, y)])
    via_skimage = np.mean([peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0) for a, b in zip(x, y)])
    assert psnr(x, y).item() == pytest.approx(direct, rel=1e-5)
    assert psnr(x, y).item() == pytest.approx(via_skimage, rel=1e-5)
    assert psnr(2 * x, 2 * y, data_range=2.0).item() == pytest.approx(direct, rel=1e-5)


# ---------------------------------------------------------------- encode, decode, the file

def test_encode_decode_shapes_ranges_and_the_token_grid():
    model = tiny_model().eval()
    assert model.codebook_size == 16 and model.token_grid(16) == (4, 4) and model.token_grid((8, 12)) == (2, 3)
    with pytest.raises(ValueError, match="not divisible"):
        model.token_grid(18)
    x = rand(2, 3, 16, 16)
    idx = model.encode_indices(x)
    assert idx.shape == (2, 4, 4) and idx.dtype == torch.long and 0 <= idx.min() and idx.max() < 16
    y = model.decode_indices(idx)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    recon, terms, stats = model(x)
    torch.testing.assert_close(recon, y)  # forward in eval = decode(encode(x))
    assert set(terms) == {"recon", "commit"} and {"perplexity", "codes_used", "restarted", "psnr"} <= set(stats)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 16\)"):
        model.decode_indices(torch.full((1, 4, 4), 16))


def test_the_tokenizer_file_round_trips(tmp_path):
    model = tiny_model(recon_loss="l1")
    model.train()(rand(4, 3, 8, 8))  # move the codebook off its initial values
    save_tokenizer(tmp_path / "tok.pt", model, steps=1)
    loaded = load_tokenizer(tmp_path / "tok.pt")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.cfg == model.cfg
    x = rand(3, 3, 16, 16, seed=9)
    model.eval()
    assert loaded.encode_indices(x).equal(model.encode_indices(x))
    idx = model.encode_indices(x)
    torch.testing.assert_close(loaded.decode_indices(idx), model.decode_indices(idx), rtol=0, atol=0)


def test_a_missing_tokenizer_names_the_path_and_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt does not exist: make it with .*tokenizer train") as err:
        load_tokenizer(tmp_path / "nothing.pt")
    assert "\n" not in str(err.value) and "save_tokenizer" in str(err.value)


# ---------------------------------------------------------------- training

TINY_TRAIN = {"vq": {**TINY_VQ, "channels": [4, 8]}, "steps": 4, "batch_size": 4, "lr": 1e-2, "betas": [0.9, 0.999],
              "log_every": 1, "checkpoint_every": 2, "eval_images": 6, "grid_images": 3}


def train_cfg(**over):
    return build(TokenizerConfig, {**TINY_TRAIN, **over})


def tiny_loader():
    x = torch.randint(0, 256, (12, 3, 8, 8), generator=torch.Generator().manual_seed(10), dtype=torch.uint8)
    return DeviceLoader(x, torch.zeros(12, dtype=torch.int64), batch_size=4, shuffle=True, drop_last=True, seed=3)


def train(cfg, out_dir, logger, seed=0):
    model = tiny_model(seed)
    torch.manual_seed(seed)
    return model, train_tokenizer(cfg, model, tiny_loader(), out_dir=out_dir, logger=logger, device=CPU,
                                  progress=False)


def test_training_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path, kill_at):
    cfg = train_cfg()
    model_a, a = train(cfg, tmp_path / "a", NullLogger())
    with pytest.raises(kill_at.error):
        train(cfg, tmp_path / "b", kill_at(3))  # killed in step 3: the checkpoint is step 2's
    model_b, b = train(cfg, tmp_path / "b", NullLogger(), seed=1)  # other initial weights: all from the checkpoint
    assert a.steps == b.steps == 4 and a.history == b.history and [h["step"] for h in a.history] == [1, 2, 3, 4]
    assert sum(h["restarted"] for h in a.history[2:]) > 0  # the restarts' RNG draws are part of what resumes
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert p.equal(q), name
    assert any(not v.equal(model_a.state_dict()[k]) for k, v in tiny_model().state_dict().items())  # it trained


def test_a_diverged_loss_stops_naming_the_step(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        train_tokenizer(train_cfg(), model, tiny_loader(), out_dir=tmp_path, logger=NullLogger(), device=CPU,
                        progress=False)


# ---------------------------------------------------------------- the stages on tiny data

@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    data = tmp_path / "prepared"
    data.mkdir()
    for split, n, seed in (("train", 12, 0), ("test", 5, 1)):
        x = np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
        np.savez(data / f"{split}.npz", x=x, y=np.zeros(n, np.int64))
    params = tmp_path / "gencl_params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {**TINY_TRAIN, "steps": 3}}))
    common = ["--params", str(params), "--suite-params", str(suite_params()), "--data", str(data)]
    return tmp_path, common, data


def test_train_then_encode_write_the_tokenizer_and_aligned_token_maps(project, capsys):
    tmp, common, data = project
    out = tmp / "tok"
    assert tokenizer.main(["train", *common, "--out", str(out), "--metrics", str(tmp / "m.json"),
                           "--plots", str(tmp / "p.json")]) == 0
    record = records.read(out / "metrics.json")
    assert {"recon_l1", "recon_l2", "psnr", "perplexity", "codes_used", "codes_used_frac"} == set(record.metrics)
    assert record.extra["steps"] == 3 and record.extra["token_grid"] == [2, 2] and record.extra["eval_images"] == 5
    assert json.loads((tmp / "m.json").read_text()) == pytest.approx(record.metrics)
    assert len(json.loads((tmp / "p.json").read_text())) == 3
    assert Image.open(out / "recon.png").size == (8 * 8, 2 * 8)  # 8 columns; 3 originals, their reconstructions
    assert (out / "curves.png").stat().st_size > 0

    encode = ["encode", *common, "--tokenizer", str(out / "tokenizer.pt"), "--out", str(tmp / "tokens")]
    assert tokenizer.main(encode) == 0
    tokens = np.load(tmp / "tokens" / "tokens.npy")
    meta = json.loads((tmp / "tokens" / "tokens.json").read_text())
    assert tokens.dtype == np.uint16 and tokens.shape == (12, 2, 2)
    assert meta["grid"] == [2, 2] and meta["codebook_size"] == 16 and meta["n_images"] == 12
    assert meta["tokenizer_sha256"] == sha256_file(out / "tokenizer.pt")
    x = torch.as_tensor(np.load(data / "train.npz")["x"]).float() / 255
    expected = load_tokenizer(out / "tokenizer.pt").encode_indices(x)
    assert torch.as_tensor(tokens.astype(np.int64)).equal(expected)  # row i = image i

    capsys.readouterr()
    missing = ["encode", *common, "--tokenizer", str(tmp / "none.pt"), "--out", str(tmp / "t2")]
    assert tokenizer.main(missing) == 2  # one line naming the file, no traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none.pt does not exist" in err and "\n" not in err


def test_the_command_names_its_subcommands(capsys):
    with pytest.raises(SystemExit) as usage:  # no subcommand: argparse's usage names both
        tokenizer.main([])
    assert usage.value.code == 2 and "{train,encode}" in capsys.readouterr().err
