"""GenCL's in-painter: the cosine schedule, MaskGIT's training masks and loss, the border mask, MaskGIT's decoder
(known tokens kept, the schedule's counts, nothing masked at the end, per-image randomness, confidence order,
categorical draws), the transformer, resumable training and the two stages on tiny data."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from scipy import stats
from torch import nn

from papers.gencl import inpaint, inpainter, vq
from papers.gencl.inpainter import (InpainterConfig, MaskedTokenTransformer, border_mask, cosine_schedule,
                                    counter_uniform, load_inpainter, mask_counts, maskgit_loss, parallel_decode,
                                    sample_seeds, save_inpainter, training_mask)
from shared import records
from shared.config import ConfigError
from shared.stage import run_seed
from shared.tracking import NullLogger
from shared.view_sources.precomputed import PrecomputedViews

CPU = torch.device("cpu")
TINY = dict(d_model=32, layers=1, heads=2, mlp=64, dropout=0.0, codebook_size=16, grid=(8, 8))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return MaskedTokenTransformer(InpainterConfig(**{**TINY, **kw}))


def expected_still_masked(unknown0: int, iterations: int) -> list[int]:
    """The official decoder's numbers still masked after each iteration, from its formulas, in plain Python."""
    still, out = unknown0, []
    for t in range(iterations):
        if t == iterations - 1:
            out.append(0)
            break
        ratio = (t + 1) / iterations
        mask_ratio = min(max(math.cos(math.pi / 2 * ratio), 1e-6), 1.0)
        mask_len = max(1, min(still - 1, math.floor(unknown0 * mask_ratio)))
        still = min(mask_len, still)  # confidence < cut-off: a known token's +inf is never below it
        out.append(still)
    return out


class FixedLogits(nn.Module):
    """A stand-in model whose logits do not depend on its input."""

    def __init__(self, logits, codebook_size):
        super().__init__()
        self.logits = logits
        self.cfg = InpainterConfig(**{**TINY, "codebook_size": codebook_size, "grid": (1, logits.shape[0])})

    def forward(self, tokens, classes=None):
        return self.logits.expand(tokens.shape[0], *self.logits.shape)


# ---------------------------------------------------------------- schedule, training masks, loss

def test_cosine_schedule_values():
    assert cosine_schedule(0.0) == 1.0
    assert cosine_schedule(0.5) == pytest.approx(math.sqrt(2) / 2)
    assert cosine_schedule(1.0) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(cosine_schedule(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)),
                               torch.tensor([1.0, 0.5 ** 0.5, 0.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_training_mask_counts_are_ceil_gamma_r_n_and_positions_uniform():
    n, grid = 400, (4, 5)
    masks = training_mask(n, grid, gen(3))
    assert masks.shape == (n, 20) and masks.dtype == torch.bool
    r = torch.rand(n, generator=gen(3), dtype=torch.float64).tolist()  # the draw training_mask makes first
    expected = [max(1, math.ceil(math.cos(math.pi * ri / 2) * 20)) for ri in r]
    assert masks.sum(1).tolist() == expected
    # every position is masked equally often: chi-square on the per-position counts
    counts = masks.sum(0).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    assert training_mask(50, (1, 1), gen(0)).all()  # at least one token, here the only one


def naive_loss(logits, targets, mask, eps):
    total, n = 0.0, 0
    b, npos, k = logits.shape
    for i in range(b):
        for j in range(npos):
            if not mask[i, j]:
                continue
            logp = [lv - math.log(sum(math.exp(v) for v in logits[i, j].tolist())) for lv in logits[i, j].tolist()]
            total += -(1 - eps) * logp[targets[i, j]] - eps / k * sum(logp)
            n += 1
    return total / n


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_maskgit_loss_is_ce_on_masked_tokens_only(eps):
    logits = torch.randn(3, 7, 5, generator=gen(0), dtype=torch.float64)
    targets = torch.randint(0, 5, (3, 7), generator=gen(1))
    mask = torch.rand(3, 7, generator=gen(2)) < 0.5
    got = maskgit_loss(logits, targets, mask, eps)
    assert float(got) == pytest.approx(naive_loss(logits, targets, mask, eps), rel=1e-5)
    reference = F.cross_entropy(logits[mask], targets[mask], label_smoothing=eps)
    assert float(got) == pytest.approx(float(reference), rel=1e-6)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 5, generator=gen(9), dtype=torch.float64) * 10
    other_targets = torch.where(mask, targets, (targets + 1) % 5)
    assert float(maskgit_loss(changed, other_targets, mask, eps)) == pytest.approx(float(got), rel=1e-6)
    with pytest.raises(ValueError, match="no masked"):
        maskgit_loss(logits, targets, torch.zeros_like(mask), eps)


def test_border_mask_counts():
    assert int(border_mask(8, 8).sum()) == 36 and int(border_mask(16, 16).sum()) == 196
    assert int(border_mask(16, 16, border=2).sum()) == 144
    m = border_mask(8, 8)
    assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any() and m[1:-1, 1:-1].all()
    with pytest.raises(ValueError, match="no interior"):
        border_mask(2, 2)


# ---------------------------------------------------------------- counter-based randomness

def lowbias32(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_is_exact_unsigned_32_bit_arithmetic():
    values = torch.randint(0, 2 ** 32, (500,), generator=gen(0), dtype=torch.int64)
    values = torch.cat([values, torch.tensor([0, 1, 2 ** 32 - 1, 2 ** 31, 0xFFFF, 0x10000])])
    assert inpainter._hash32(values).tolist() == [lowbias32(v) for v in values.tolist()]


def test_counter_uniform_is_uniform_per_row_and_batch_independent():
    seeds = sample_seeds(7, torch.arange(300))
    u = counter_uniform(seeds, 3, 200)
    assert u.shape == (300, 200) and u.dtype == torch.float32 and 0 < u.min() and u.max() < 1
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(counter_uniform(seeds[[5, 2]], 3, 200), u[[5, 2]])  # a row depends on its seed only
    other = counter_uniform(seeds, 4, 200)
    assert abs(np.corrcoef(u.flatten().numpy(), other.flatten().numpy())[0, 1]) < 0.02  # streams differ
    assert abs(np.corrcoef(u[:, :-1].flatten().numpy(), u[:, 1:].flatten().numpy())[0, 1]) < 0.02
    assert len(set(sample_seeds(7, torch.arange(1000)).tolist())) == 1000
    assert not torch.equal(sample_seeds(7, torch.arange(10)), sample_seeds(8, torch.arange(10)))


# ---------------------------------------------------------------- the decoder

@pytest.mark.parametrize("iterations", [1, 2, 3, 8, 12, 16])
def test_decoder_keeps_known_tokens_follows_the_schedule_and_ends_unmasked(iterations):
    model = tiny_model()
    tokens = torch.randint(0, 16, (5, 8, 8), generator=gen(1))
    masks = torch.zeros(5, 64, dtype=torch.bool)
    masks[0] = border_mask(8, 8).flatten()  # GenCL's: 36 unknown
    masks[1, 10] = True  # one token
    masks[2] = True  # everything
    masks[3, :3] = True
    masks[4] = torch.rand(64, generator=gen(2)) < 0.3
    masks = masks.reshape(5, 8, 8)
    out, history = parallel_decode(model, tokens, masks, iterations, seeds=sample_seeds(0, torch.arange(5)),
                                   return_masks=True)
    assert out.shape == tokens.shape and out.dtype == torch.long
    assert torch.equal(out[~masks], tokens[~masks])  # known tokens never change
    assert ((0 <= out) & (out < 16)).all()  # no [MASK] (id 16) left
    assert len(history) == iterations and not history[-1].any()
    for i in range(5):
        got = [int(h[i].sum()) for h in history]
        assert got == expected_still_masked(int(masks[i].sum()), iterations), (i, got)
        steps = [masks[i].flatten()] + [h[i] for h in history]
        for before, after in zip(steps, steps[1:]):
            assert not (after & ~before).any()  # a revealed token is never masked again
    assert [c.tolist() for c in mask_counts(masks.flatten(1).sum(1), iterations)] == \
        [list(x) for x in zip(*[expected_still_masked(int(m.sum()), iterations) for m in masks])]


def test_decoder_schedule_counts_for_genCLs_map():
    # 16 x 16 border mask, 12 iterations: 196 unknown, then the cosine schedule's floor(196 cos(pi/2 (t+1)/12))
    assert expected_still_masked(196, 12) == [194, 189, 181, 169, 155, 138, 119, 98, 75, 50, 25, 0]
    assert [int(c) for c in mask_counts(torch.tensor([196]), 12)] == expected_still_masked(196, 12)


def test_maps_decode_independently_of_the_batch():
    model = tiny_model(seed=1)
    tokens = torch.randint(0, 16, (3, 8, 8), generator=gen(4))
    masks = torch.stack([border_mask(8, 8), border_mask(8, 8, 2), torch.rand(8, 8, generator=gen(5)) < 0.5])
    seeds = sample_seeds(11, torch.tensor([4, 9, 2]))
    together = parallel_decode(model, tokens, masks, 12, seeds=seeds)
    for i in range(3):
        alone = parallel_decode(model, tokens[i:i + 1], masks[i:i + 1], 12, seeds=seeds[i:i + 1])
        assert torch.equal(alone[0], together[i]), i
    pair = parallel_decode(model, tokens[[2, 0]], masks[[2, 0]], 12, seeds=seeds[[2, 0]])
    assert torch.equal(pair, together[[2, 0]])
    other = parallel_decode(model, tokens, masks, 12, seeds=sample_seeds(12, torch.tensor([4, 9, 2])))
    assert not torch.equal(other, together)  # the seed decides the draws
    assert model.training  # restored


def test_without_choice_noise_the_most_confident_samples_are_kept():
    # position j: uniform over j + 1 codes, so log p(sampled) = -log(j + 1) whatever is drawn
    n, k = 6, 8
    logits = torch.full((n, k), -1e9)
    for j in range(n):
        logits[j, :j + 1] = 0.0
    model = FixedLogits(logits, k)
    tokens = torch.zeros(4, n, dtype=torch.long)
    mask = torch.ones(n, dtype=torch.bool)
    _, history = parallel_decode(model, tokens, mask, 3, choice_temperature=0.0,
                                 seeds=sample_seeds(0, torch.arange(4)), return_masks=True)
    # after iteration 0: floor(6 cos(pi/6)) = 5 stay masked: the least confident 5, i.e. all but position 0
    assert history[0].tolist() == [[False, True, True, True, True, True]] * 4
    # after iteration 1: floor(6 cos(pi/3)) = 3 stay masked: the least confident of the five, 3, 4 and 5
    assert history[1].tolist() == [[False, False, False, True, True, True]] * 4
    assert not history[2].any()


def test_decoder_draws_follow_the_categorical_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]])
    model = FixedLogits(probs.log(), 5)
    n = 4000
    out = parallel_decode(model, torch.zeros(n, 1, dtype=torch.long), torch.ones(1, dtype=torch.bool), 1,
                          seeds=sample_seeds(3, torch.arange(n)))
    counts = torch.bincount(out.flatten(), minlength=5)
    assert counts[4] == 0  # a zero-probability code is never drawn
    assert stats.chisquare(counts[:4].numpy(), (probs[0, :4] * n).numpy()).pvalue > 1e-3


def test_decoder_rejects_bad_inputs():
    model = tiny_model()
    tokens = torch.randint(0, 16, (2, 8, 8), generator=gen(0))
    with pytest.raises(ValueError, match="iterations"):
        parallel_decode(model, tokens, border_mask(8, 8), 0)
    bad = tokens.clone()
    bad[0, 0, 0] = 16
    with pytest.raises(ValueError, match="known tokens"):
        parallel_decode(model, bad, border_mask(8, 8), 2)
    with pytest.raises(ValueError, match="mask"):
        parallel_decode(model, tokens, torch.ones(3, 3, dtype=torch.bool), 2)


# ---------------------------------------------------------------- the transformer

def test_transformer_is_bidirectional_and_shapes():
    model = tiny_model().eval()
    tokens = torch.randint(0, 17, (2, 8, 8), generator=gen(0))
    logits = model(tokens)
    assert logits.shape == (2, 64, 16)  # the codebook only: no logit for [MASK]
    later = tokens.clone()
    later[:, -1, -1] = (later[:, -1, -1] + 1) % 16
    changed = model(later)
    assert not torch.allclose(changed[:, 0], logits[:, 0])  # the first position sees the last token
    torch.testing.assert_close(model(tokens.flatten(1)), logits)


def test_class_token_conditions_the_logits_and_is_checked():
    model = tiny_model(class_token="true_label", num_classes=3).eval()
    tokens = torch.randint(0, 17, (2, 8, 8), generator=gen(0))
    a, b = model(tokens, torch.tensor([0, 0])), model(tokens, torch.tensor([2, 2]))
    assert a.shape == (2, 64, 16) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="one class per map"):
        model(tokens)
    with pytest.raises(ValueError, match="takes no classes"):
        tiny_model()(tokens, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="num_classes"):
        InpainterConfig(**{**TINY, "class_token": "random"})
    assert InpainterConfig(**{**TINY, "class_token": "random", "num_classes": 3}).uses_labels
    assert not InpainterConfig(**TINY).uses_labels


@pytest.mark.parametrize("conditional", [False, True])
def test_gradient_reaches_every_parameter(conditional):
    kw = dict(class_token="true_label", num_classes=3) if conditional else {}
    model = tiny_model(**kw, dropout=0.1)
    tokens = torch.randint(0, 16, (4, 64), generator=gen(0))
    mask = training_mask(4, (8, 8), gen(1))
    classes = torch.tensor([0, 1, 2, 0]) if conditional else None
    loss = maskgit_loss(model(tokens.masked_fill(mask, 16), classes), tokens, mask, 0.1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_inpainter_file_round_trips(tmp_path):
    model = tiny_model(class_token="random", num_classes=4)
    save_inpainter(tmp_path / "inpainter.pt", model, steps=3)
    loaded = load_inpainter(tmp_path / "inpainter.pt")
    assert loaded.cfg == model.cfg and not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    tokens = torch.randint(0, 16, (2, 64), generator=gen(0))
    torch.testing.assert_close(loaded(tokens, torch.tensor([1, 3])), model.eval()(tokens, torch.tensor([1, 3])))
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_inpainter(tmp_path / "nothing.pt")


# ---------------------------------------------------------------- training

STAGE = dict(model={**TINY, "grid": [8, 8], "dropout": 0.1}, lr=1e-3, warmup_steps=2, batch_size=8, steps=4,
             holdout=4, eval_every=2, log_every=1, checkpoint_every=2, eval_batch_size=3)


def tiny_tokens(n=24, seed=0):
    # a learnable structure: each map is a constant code plus noise on a few positions
    g = gen(seed)
    base = torch.randint(0, 16, (n, 1, 1), generator=g).expand(n, 8, 8).clone()
    noise = torch.rand(n, 8, 8, generator=g) < 0.1
    return torch.where(noise, torch.randint(0, 16, (n, 8, 8), generator=g), base)


def train(cfg, out_dir, logger, seed=0):
    tokens = tiny_tokens()
    train_rows, val_rows = inpaint.holdout_split(len(tokens), cfg.holdout)
    model = MaskedTokenTransformer(cfg.model)
    torch.manual_seed(seed + 100)
    model.load_state_dict(tiny_model(seed, **{"dropout": 0.1}).state_dict())
    torch.manual_seed(seed)
    loader = inpaint.TokenLoader(tokens[train_rows], None, cfg.batch_size, seed=5)
    result = inpaint.train_inpainter(cfg, model, loader, tokens[val_rows], None, out_dir=out_dir, logger=logger,
                                     device=CPU, progress=False)
    return model, result


def stage_config(**kw):
    from shared.config import build
    return build(inpaint.InpainterStageConfig, {**STAGE, **kw})


def test_training_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path, kill_at):
    cfg = stage_config()
    model_a, a = train(cfg, tmp_path / "a", NullLogger())
    with pytest.raises(kill_at.error):
        train(cfg, tmp_path / "b", kill_at(3))  # killed in step 3: the checkpoint is step 2's
    model_b, b = train(cfg, tmp_path / "b", NullLogger(), seed=1)  # other initial weights: all from the checkpoint
    assert a.steps == b.steps == 4 and a.history == b.history and [h["step"] for h in a.history] == [1, 2, 3, 4]
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert p.equal(q), name
    assert {"val_ce", "val_acc", "val_ce_border", "val_acc_border"} <= set(a.history[1]) and "val_ce" not in a.history[0]
    assert a.final == {k: v for k, v in a.history[-1].items() if k.startswith("val_")}
    assert a.history[0]["lr"] == pytest.approx(1e-3)  # warm-up (s + 1) / 2 at s = 1 ... then constant
    assert a.history[-1]["lr"] == pytest.approx(1e-3)


def test_warmup_then_constant_or_cosine():
    model = tiny_model()
    for schedule, expected in (("constant", [0.25, 0.5, 0.75, 1, 1, 1, 1, 1]),
                               ("cosine", [0.25, 0.5, 0.75, 1, 1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                           0.5 * (1 + math.cos(3 * math.pi / 4))])):
        cfg = stage_config(warmup_steps=4, steps=8, lr_schedule=schedule, lr=1.0)
        opt = torch.optim.AdamW(inpaint.param_groups(model, cfg.weight_decay), lr=cfg.lr)
        sched = inpaint.lr_scheduler(opt, cfg)
        got = []
        for _ in range(8):
            got.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert got == pytest.approx(expected, abs=1e-12), schedule
    groups = inpaint.param_groups(model, 0.045)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    assert groups[0]["weight_decay"] == 0.045 and groups[1]["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="inpainter.model.class_token"):
        from shared.config import build
        build(inpaint.InpainterStageConfig, {"model": {"class_token": "label"}}, prefix="inpainter.")


def test_evaluate_matches_a_direct_computation():
    model = tiny_model().eval()
    tokens = tiny_tokens(10)
    got = inpaint.evaluate(model, tokens, None, 3, CPU)
    m = border_mask(8, 8).flatten().expand(10, -1)
    with torch.no_grad():
        logits = model(tokens.flatten(1).masked_fill(m, 16))[m]
    assert got["val_ce_border"] == pytest.approx(float(F.cross_entropy(logits, tokens.flatten(1)[m])), rel=1e-5)
    assert got["val_acc_border"] == pytest.approx(float((logits.argmax(-1) == tokens.flatten(1)[m]).float().mean()) * 100)
    uni = inpaint.unigram_ce(tokens[:5], tokens[5:], 16)
    counts = np.bincount(tokens[:5].flatten().numpy(), minlength=16) + 1
    assert uni == pytest.approx(float(-np.log(counts / counts.sum())[tokens[5:].flatten().numpy()].mean()))


# ---------------------------------------------------------------- the stages on tiny data

VQ_TINY = dict(channels=[8, 8], res_blocks=0, embed_dim=4, codebook_size=16)  # f = 4: 32 px -> 8 x 8 tokens


@pytest.fixture
def project(tmp_path, suite_params, restore_threads):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8).numpy()
    y = np.arange(20) % 4
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.savez(prepared / "train.npz", x=x, y=y.astype(np.int64), classes=np.array(["a", "b", "c", "d"]))
    torch.manual_seed(0)
    tokenizer = vq.VQAutoencoder(vq.VQConfig(**VQ_TINY))
    vq.save_tokenizer(tmp_path / "tokenizer.pt", tokenizer)
    tokens = tokenizer.eval().encode_indices(torch.from_numpy(x).float() / 255).numpy()
    np.save(tmp_path / "tokens.npy", tokens)
    params = tmp_path / "paper_params.yaml"
    params.write_text(yaml.safe_dump({
        "inpainter": {**STAGE, "steps": 3, "batch_size": 4, "holdout": 4, "eval_every": 3},
        "mask_augment": {"iterations": 12, "batch_size": 3, "grid_images": 4}}))
    common = ["--params", str(params), "--suite-params", str(suite_params())]
    return tmp_path, common, x, y


def test_train_then_augment_stages_write_aligned_views(project):
    tmp, common, x, y = project
    assert inpaint.main(["train", *common, "--tokens", str(tmp / "tokens.npy"), "--out", str(tmp / "inp"),
                         "--metrics", str(tmp / "m_inp.json"), "--plots", str(tmp / "p_inp.json")]) == 0
    record = records.read(tmp / "inp" / "metrics.json")
    assert {"val_ce", "val_acc", "val_ce_border", "val_acc_border", "unigram_ce", "train_loss"} <= set(record.metrics)
    assert record.extra["steps"] == 3 and record.extra["holdout_maps"] == 4 and not record.extra["uses_labels"]
    assert json.loads((tmp / "m_inp.json").read_text()) == pytest.approx(record.metrics)
    assert [r["step"] for r in json.loads((tmp / "p_inp.json").read_text())] == [1, 2, 3]

    indices = np.array([7, 3, 12, 0, 19, 5, 8], dtype=np.int64)
    np.save(tmp / "subset.npy", indices)
    args = ["augment", *common, "--prepared", str(tmp / "prepared"), "--tokenizer", str(tmp / "tokenizer.pt"),
            "--inpainter", str(tmp / "inp" / "inpainter.pt")]
    out = tmp / "aug"
    assert inpaint.main([*args, "--indices", str(tmp / "subset.npy"), "--out", str(out),
                         "--metrics", str(tmp / "m_aug.json")]) == 0
    record = records.read(out / "metrics.json")
    assert record.metrics["masked_fraction"] == 36 / 64 and record.extra["masked_tokens"] == "36/64"
    assert record.extra["images"] == 7 and record.extra["ssl_set"]["first_rows"] == [7, 3, 12, 0, 19]
    assert 0 <= record.metrics["token_change_rate"] <= 1 and record.metrics["seconds_per_image"] > 0
    assert {"l1_border", "l1_interior", "recon_l1_border", "recon_l1_interior"} <= set(record.metrics)
    assert Image.open(out / "grid.png").size == (3 * 32, 4 * 32)  # 4 rows of original | recon | in-painted

    # row i of mask.npy belongs to SSL-set image i (x[indices[i]]); the lookup checks it by fingerprint
    views = PrecomputedViews(out / "mask.npy")
    assert views.images.shape == (7, 3, 32, 32) and views.images.dtype == np.uint8
    ssl = torch.from_numpy(x[indices])
    index = torch.tensor([4, 0, 6])
    views.generated(ssl[index], index)
    swapped = torch.tensor([0, 4, 6])
    with pytest.raises(ValueError, match="misaligned or shuffled"):
        views.generated(ssl[index], swapped)
    with pytest.raises(ValueError, match="not the source images"):
        views.generated(torch.from_numpy(x[:3]), torch.arange(3))  # full-split rows are not the SSL set's

    # each stored image is its own image's in-painting, whatever the batch: recompute two alone
    tokenizer = vq.load_tokenizer(tmp / "tokenizer.pt")
    model = load_inpainter(tmp / "inp" / "inpainter.pt")
    cfg = inpaint.MaskAugmentConfig(iterations=12)
    for i in (5, 1):
        alone = inpaint.inpaint_batch(tokenizer, model, ssl[i:i + 1], border_mask(8, 8),
                                      sample_seeds(run_seed(0, 0), torch.tensor([indices[i]])), None, cfg)
        assert np.array_equal(alone["generated"][0].numpy(), views.images[i]), i
        assert torch.equal(alone["inpainted"][0][~border_mask(8, 8)], alone["tokens"][0][~border_mask(8, 8)])

    # another batch size gives the same images; the whole split without --indices has one row per image
    params = yaml.safe_load(open(common[1]))
    params["mask_augment"]["batch_size"] = 5
    (tmp / "p2.yaml").write_text(yaml.safe_dump(params))
    assert inpaint.main([*args, "--params", str(tmp / "p2.yaml"), "--indices", str(tmp / "subset.npy"),
                         "--out", str(tmp / "aug5")]) == 0
    assert np.array_equal(np.load(tmp / "aug5" / "mask.npy"), np.load(out / "mask.npy"))
    assert inpaint.main([*args, "--out", str(tmp / "all")]) == 0
    assert PrecomputedViews(tmp / "all" / "mask.npy").images.shape == (20, 3, 32, 32)


def test_stage_errors_name_what_to_fix(project, capsys):
    tmp, common, x, y = project
    assert inpaint.main(["train", *common, "--tokens", str(tmp / "missing.npy"), "--out", str(tmp / "o")]) == 2
    assert "missing.npy does not exist" in capsys.readouterr().err
    np.save(tmp / "big.npy", np.full((20, 8, 8), 99))
    assert inpaint.main(["train", *common, "--tokens", str(tmp / "big.npy"), "--out", str(tmp / "o")]) == 2
    assert "codebook_size" in capsys.readouterr().err
