"""shared.extractor: the in-domain classifier trains, is deterministic, saves and loads, fails loudly,
and its stage runs from the command line."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from shared import extractor as ext
from shared.detector import CorruptWeightsError, WeightsNotFoundError
from shared.extractor import INDOMAIN_LABEL, ExtractorConfig, FeatureExtractor, train_extractor


def test_train_extractor_beats_chance_on_easy_data(trained_extractor):
    extractor, (x_test, y_test) = trained_extractor
    assert extractor.test_acc > 80  # chance: 33%
    assert ext.extractor_accuracy(extractor, x_test, y_test) == pytest.approx(extractor.test_acc)
    assert not extractor.training


def test_extractor_shapes_and_determinism(trained_extractor, easy_dataset):
    extractor, (x_test, _) = trained_extractor
    feats, probs = extractor.features_and_probs(x_test, batch_size=7)
    assert feats.shape == (len(x_test), extractor.feature_dim) == (60, 64)
    assert probs.shape == (60, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(60))
    torch.testing.assert_close(extractor.features(x_test), feats, rtol=1e-5, atol=1e-6)  # batching
    assert torch.equal(extractor.probs(x_test[:10]), extractor.probs(x_test[:10]))
    # same seed, same data -> same weights
    x, y = easy_dataset(8, seed=2)
    cfg = ExtractorConfig(width=0.125, epochs=1, batch_size=8, lr=0.05, warmup_epochs=0.5, crop_padding=1)
    a = train_extractor(x, y, cfg, "cpu", progress=False).features(x)
    b = train_extractor(x, y, cfg, "cpu", progress=False).features(x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="trained on"):
        extractor.features(np.zeros((2, 3, 16, 16), np.uint8))


def test_channel_stats_and_limit(easy_dataset):
    x, y = easy_dataset(10, seed=4)
    mean, std = ext._channel_stats(torch.as_tensor(x), chunk=7)
    xf = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, xf.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, xf.transpose(1, 0, 2, 3).reshape(3, -1).std(axis=1, ddof=1), rtol=1e-5)
    cfg = ExtractorConfig(width=0.125, epochs=1, batch_size=8, lr=0.05, warmup_epochs=0, limit=13)
    small = train_extractor(x, y, cfg, "cpu", progress=False)
    assert small.n_train == 12  # 13 // 3 classes = 4 of each
    with pytest.raises(ValueError, match="limit"):
        train_extractor(x, y, ExtractorConfig(width=0.125, epochs=1, limit=2), "cpu", progress=False)


def test_augment_is_a_zero_filled_shift_and_maybe_a_flip():
    x = torch.rand(32, 3, 8, 8) + 0.1  # no zeros, so the fill is visible
    assert torch.equal(ext._augment(x, 0, False, torch.Generator().manual_seed(0)), x)
    out = ext._augment(x, 2, True, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        matches = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(2) if flip else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert len(matches) == 1, i  # exactly one crop of the zero-padded image, mirrored or not
        seen.add(matches[0])
    assert len(seen) > 10 and {f for _, _, f in seen} == {False, True}


def test_extractor_save_load_round_trip(trained_extractor, tiny_extractor_config, tmp_path):
    extractor, (x_test, _) = trained_extractor
    path = tmp_path / "sub" / "extractor.pt"
    extractor.save(path)
    loaded = FeatureExtractor.load(path)
    assert loaded.cfg == tiny_extractor_config
    assert (loaded.test_acc, loaded.train_acc, loaded.n_train) == (extractor.test_acc, extractor.train_acc, 120)
    assert torch.equal(loaded.features(x_test), extractor.features(x_test))
    assert torch.equal(loaded.probs(x_test), extractor.probs(x_test))
    assert [p.name for p in path.parent.iterdir()] == ["extractor.pt"]  # no temp file left behind


def test_extractor_load_errors_name_the_path(tmp_path, trained_extractor):
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsNotFoundError, match="python -m shared.extractor") as info:
        FeatureExtractor.load(missing)
    assert str(missing) in str(info.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CorruptWeightsError, match=str(corrupt)):
        FeatureExtractor.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CorruptWeightsError, match="not an in-domain extractor"):
        FeatureExtractor.load(foreign)
    truncated = tmp_path / "truncated.pt"
    trained_extractor[0].save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CorruptWeightsError, match=str(truncated)):
        FeatureExtractor.load(truncated)


# ---------------------------------------------------------------- stage CLI

def write_prepared(folder: Path, easy_dataset) -> None:
    """Tiny prepared dataset in shared.prepare's layout (train.npz / test.npz: x, y, classes)."""
    folder.mkdir(parents=True)
    for split, (per_class, seed) in {"train": (32, 0), "test": (10, 1)}.items():
        x, y = easy_dataset(per_class, seed)
        np.savez(folder / f"{split}.npz", x=x, y=y, classes=np.array(["r", "g", "b"]))


def test_train_extractor_cli_end_to_end(tmp_path, easy_dataset):
    prepared = tmp_path / "prepared" / "tiny"
    write_prepared(prepared, easy_dataset)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "scale": "smoke", "device": "cpu", "tracking": {"backend": "none"},
        "extractor": {"width": 0.125, "epochs": 9, "batch_size": 32, "lr": 0.05, "crop_padding": 1},
        "scales": {"smoke": {"extractor": {"epochs": 3}}},
    }))
    out = tmp_path / "extractor" / "tiny.pt"
    assert ext.main(["--params", str(params), "--prepared", str(prepared), "--out", str(out),
                     "--no-progress"]) == 0
    report = json.loads((out.parent / "metrics.json").read_text())
    assert report["label"] == INDOMAIN_LABEL and report["scale"] == "smoke"
    assert report["n_train"] == 96 and report["n_test"] == 30
    assert 33 < report["test_acc"] <= 100
    assert yaml.safe_load((out.parent / "config.yaml").read_text())["epochs"] == 3  # the smoke override
    loaded = FeatureExtractor.load(out)
    assert loaded.test_acc == pytest.approx(report["test_acc"], abs=1e-3) and loaded.cfg.epochs == 3

    params.write_text(params.read_text().replace("crop_padding", "crop_pad"))
    assert ext.main(["--params", str(params), "--prepared", str(prepared), "--out", str(out),
                     "--no-progress"]) == 2
