"""The F diagnostic: kNN of pixels, an untrained F and encoder files, against the naive kNN, and its JSON."""
import json

import numpy as np
import pytest
import torch

from papers.augmentation_generator import diagnose
from papers.augmentation_generator.config import EvaluateConfig
from papers.augmentation_generator.encoder import build_encoder, save_encoder
from papers.augmentation_generator.models import Augmenter, Critic, EliminatorPredictor, GeneratorSpec, save_generators
from shared import checkpoint


class Splits:
    """A tiny stand-in of data.load_splits: 6 characters x 3 drawers, X_p of 10 classes."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        img = lambda n: rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)  # noqa: E731
        self.fine_dotted, self.fine_y = img(18), np.repeat(np.arange(6), 3)
        self.test_clean, self.test_dotted, self.test_y = img(12), img(12), np.repeat(np.arange(6), 2)
        self.fine_clean = img(18)
        self.xp, self.yp = img(40), np.arange(40) % 10


def naive_knn(train, train_y, test, test_y, k, t):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    hits = 0
    for x, y in zip(test, test_y):
        sim = train @ x
        top = np.argsort(-sim)[:k]
        votes = {}
        for i in top:
            votes[train_y[i]] = votes.get(train_y[i], 0.0) + np.exp(sim[i] / t)
        hits += max(votes, key=votes.get) == y
    return 100 * hits / len(test)


def test_pixel_scores_are_the_naive_knn():
    s, cfg = Splits(), EvaluateConfig(knn_k=4, knn_temperature=0.5)
    got = diagnose.scores(diagnose.pixels, s, (torch.arange(30), torch.arange(30, 40)), cfg)
    f = lambda a: a.reshape(len(a), -1).astype(np.float64) / 255  # noqa: E731
    assert got["d_to_c"] == pytest.approx(naive_knn(f(s.fine_dotted), s.fine_y, f(s.test_clean), s.test_y, 4, 0.5))
    assert got["d_to_d"] == pytest.approx(naive_knn(f(s.fine_dotted), s.fine_y, f(s.test_dotted), s.test_y, 4, 0.5))
    assert got["x_p"] == pytest.approx(naive_knn(f(s.xp[:30]), s.yp[:30], f(s.xp[30:]), s.yp[30:], 4, 0.5))


def tiny_run(tmp_path, monkeypatch):
    """The tiny splits in place of the data, seed 0's encoder and generator files, a smoke suite: (splits, F, suite)."""
    s = Splits()
    monkeypatch.setattr(diagnose, "load_splits", lambda path: s)
    monkeypatch.setattr(diagnose, "XP_TRAIN", 30)
    monkeypatch.setattr(diagnose, "XP_TEST", 10)
    torch.manual_seed(3)
    encoder = build_encoder(1 / 16)
    save_encoder(tmp_path / "enc0.pt", encoder, 1 / 16)
    spec = GeneratorSpec(z_dim=2, hidden=8, skip=True)
    save_generators(tmp_path / "gen0.pt", Augmenter(spec), EliminatorPredictor(spec))
    suite = tmp_path / "suite.yaml"
    suite.write_text("scale: smoke\nseed: 0\ndevice: cpu\nthreads: 1\n")
    return s, encoder, suite


def test_writes_untrained_and_encoder_rows(tmp_path, monkeypatch):
    _, _, suite = tiny_run(tmp_path, monkeypatch)
    out = tmp_path / "f_knn.json"
    assert diagnose.main(["--suite-params", str(suite), "--data", "unused", "--out", str(out),
                          "--encoder", f"trained={tmp_path}/enc{{seed}}.pt", "--generators",
                          f"{tmp_path}/gen{{seed}}.pt"]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["seeds"]) == {"0"} and set(doc["seeds"]["0"]) == {"untrained", "trained", "eliminator"}
    # a skip G_E starts as the identity: it keeps what the dotted image has (up to the clamp to [0.01, 0.99])
    elim = doc["seeds"]["0"]["eliminator"]
    assert elim["dot_ink"] == pytest.approx(elim["dotted_dot_ink"], abs=0.01) and elim["dot_ink"] > 0.1
    for row in (doc["pixels"], doc["seeds"]["0"]["untrained"], doc["seeds"]["0"]["trained"]):
        assert {"d_to_c", "d_to_d", "x_p"} <= set(row) and all(0 <= row[k] <= 100 for k in ("d_to_c", "d_to_d", "x_p"))
    assert doc["seeds"]["0"]["trained"]["encoder"].endswith("enc0.pt") and "commit" in doc["provenance"]
    with pytest.raises(SystemExit):
        diagnose.main(["--data", "x", "--out", str(out), "--encoder", "no-equals-sign"])


def test_eliminator_split_by_pixel_kind():
    clean = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    clean[:, :, 10:12, 5:20] = 255  # a stroke
    dotted = clean.clone()
    dotted[:, :, 2, 2] = 255  # a dot on the background
    dotted[:, :, 25, 25] = 255

    class Keep(torch.nn.Module):  # returns (image, z) as G_E / G_L do; the image is `fn(x)`
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x), torch.zeros(len(x), 2)

    same = diagnose.eliminator_split(Keep(lambda x: x), dotted, clean, chunk=1)
    assert same["dot_ink"] == same["dotted_dot_ink"] == 1.0 and same["stroke_l1"] == 0.0
    assert same["background_ink"] == same["dotted_background_ink"] == 0.0
    clean_f = clean.float() / 255
    perfect = diagnose.eliminator_split(Keep(lambda x: clean_f[:len(x)]), dotted, clean)
    assert perfect["dot_ink"] == 0.0 and perfect["stroke_l1"] == 0.0 and perfect["background_ink"] == 0.0
    gray = diagnose.eliminator_split(Keep(lambda x: torch.full_like(x, 0.25)), dotted, clean)
    assert gray["dot_ink"] == gray["background_ink"] == 0.25 and gray["stroke_l1"] == 0.75


def test_critic_verdicts_count_positive_logits():
    D_p = torch.nn.Linear(1, 1)  # features are the images' mean ink: logit = mean - 0.5
    D_p.weight.data.fill_(1.0)
    D_p.bias.data.fill_(-0.5)
    mean_ink = lambda x: x.float().flatten(1).mean(1, keepdim=True) / 255  # noqa: E731
    dark, bright = torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    got = diagnose.critic_verdicts(lambda h: D_p(h).squeeze(1), mean_ink,
                                   {"dark": dark, "mixed": torch.cat([dark, bright]), "bright": bright})
    assert got == {"dark": 0.0, "mixed": 0.25, "bright": 1.0}


def test_critic_row_reads_the_game_checkpoint(tmp_path, monkeypatch):
    s, encoder, suite = tiny_run(tmp_path, monkeypatch)
    params = tmp_path / "params.yaml"
    params.write_text("runs: {n_seeds: 1}\ngame: {critic_hidden: 16}\n")
    D_p = Critic(encoder.feature_dim, 16)
    features = lambda x: diagnose.extract_features(encoder.eval(), torch.as_tensor(x), torch.device("cpu"))  # noqa: E731
    with torch.no_grad():  # shift D_p's output so that it takes about half of X_p for pre-training images
        D_p.net[-1].bias -= D_p(features(s.xp)).median()
    checkpoint.save(tmp_path / "ckpt0.pt", {"critics": {"D_p": D_p.state_dict()}})
    out = tmp_path / "f_knn.json"
    common = ["--suite-params", str(suite), "--params", str(params), "--data", "unused", "--out", str(out)]
    assert diagnose.main(common + ["--generators", f"{tmp_path}/gen{{seed}}.pt", "--critic", f"{tmp_path}/ckpt{{seed}}.pt",
                                   "--critic-encoder", f"{tmp_path}/enc{{seed}}.pt"]) == 0
    row = json.loads(out.read_text())["seeds"]["0"]["critic"]
    with torch.no_grad():
        expect = lambda x: (D_p(features(x)) > 0).float().mean().item()  # noqa: E731
        assert row["x_p"] == pytest.approx(expect(s.xp))
        assert row["clean"] == pytest.approx(expect(s.fine_clean))
        assert row["dotted"] == pytest.approx(expect(s.fine_dotted))
    assert 0.3 < row["x_p"] < 0.7
    assert set(row) == {"x_p", "clean", "dotted", "eliminated", "critic"} and row["critic"].endswith("ckpt0.pt")
    with pytest.raises(FileNotFoundError, match="ckpt9"):
        diagnose.load_critic(tmp_path / "ckpt9.pt", encoder.feature_dim, 16)
    with pytest.raises(SystemExit):
        diagnose.main(common + ["--critic", f"{tmp_path}/ckpt{{seed}}.pt"])  # without --critic-encoder
