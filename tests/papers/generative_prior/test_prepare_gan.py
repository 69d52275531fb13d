"""generative_prior's prepare stage (stratified subsets, aligned rows) and the frozen discriminator's file."""
import numpy as np
import pytest
import torch
import yaml

from papers.generative_prior import data as gp_data, discriminator, gan, prepare
from shared import checkpoint
from shared.models.sngan import DiscriminatorFeatures, sngan


def _prepared(root, n_per_class=6, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for split in ("train", "test"):
        y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
        x = rng.integers(0, 256, (len(y), 3, 32, 32), dtype=np.uint8)
        np.savez(root / f"{split}.npz", x=x, y=y, classes=np.array([str(c) for c in range(classes)]))
    return root


def _suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"scale": "smoke", "seed": 0, "device": "cpu", "threads": 1,
                                    "tracking": {"backend": "none", "uri": None}}))
    return path


def _params(tmp_path, per_class, test_per_class):
    path = tmp_path / "gp_params.yaml"
    path.write_text(yaml.safe_dump({"data": {"per_class": per_class, "subset_seed": 3,
                                             "test_per_class": test_per_class}, "scales": {"smoke": {"data": {}}}}))
    return path


def test_prepare_writes_stratified_aligned_subsets(tmp_path):
    prepared = _prepared(tmp_path / "prepared")
    out = tmp_path / "data"
    assert prepare.main(["--suite-params", str(_suite(tmp_path)), "--params", str(_params(tmp_path, 4, 2)),
                         "--prepared", str(prepared), "--out", str(out)]) == 0
    x, y, rows = gp_data.load_arrays(out, "train")
    assert np.bincount(y).tolist() == [4] * 10 and len(np.unique(rows)) == 40
    with np.load(prepared / "train.npz") as z:  # each row is the prepared image it names
        np.testing.assert_array_equal(x, z["x"][rows])
        np.testing.assert_array_equal(y, z["y"][rows])
    test_x, test_y = gp_data.load(out, "test")
    assert test_x.dtype == torch.uint8 and torch.bincount(test_y).tolist() == [2] * 10


def test_prepare_keeps_everything_without_a_subset_and_load_names_missing_files(tmp_path):
    prepared = _prepared(tmp_path / "prepared", n_per_class=3)
    out = tmp_path / "data"
    assert prepare.main(["--suite-params", str(_suite(tmp_path)), "--params", str(_params(tmp_path, None, None)),
                         "--prepared", str(prepared), "--out", str(out)]) == 0
    _, _, rows = gp_data.load_arrays(out, "train")
    assert rows.tolist() == list(range(30))
    with pytest.raises(FileNotFoundError, match="nowhere/train.npz"):
        gp_data.load(tmp_path / "nowhere", "train")
    (out / "test.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="test.npz: unreadable"):
        gp_data.load(out, "test")


def test_load_discriminator_is_frozen_in_eval_mode_and_matches_the_saved_weights(tmp_path):
    _, D = sngan("sndcgan", width=0.125, z_dim=16)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    D.eval()
    expected = D.features(x)
    path = tmp_path / discriminator.DISCRIMINATOR_FILE
    checkpoint.save(path, {"D": D.state_dict(), "discriminator": "sndcgan", "width": 0.125, "z_dim": 16})
    loaded = discriminator.load_discriminator(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.features(x), expected)
    # the [0, 1] wrapper feeds D its [-1, 1] range
    torch.testing.assert_close(DiscriminatorFeatures(loaded)((x + 1) / 2), expected)
    with pytest.raises(FileNotFoundError, match="train_gan"):
        discriminator.load_discriminator(tmp_path / "missing.pt")
    checkpoint.save(tmp_path / "other.pt", {"G": {}})
    with pytest.raises(checkpoint.CheckpointError, match="not a discriminator"):
        discriminator.load_discriminator(tmp_path / "other.pt")


def test_d_checks_score_features_and_real_fake_accuracy():
    G, D = sngan("sndcgan", width=0.125, z_dim=16)
    _, D_init = sngan("sndcgan", width=0.125, z_dim=16)
    # two well separated classes: any D's features separate them, so kNN is high for both nets
    x = torch.cat([torch.zeros(20, 3, 32, 32), torch.full((20, 3, 32, 32), 255.0)]).to(torch.uint8)
    y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    cfg = gan.GANStageConfig(width=0.125, z_dim=16)
    out = gan.d_checks(D, D_init, G, (x, y), (x, y), cfg, torch.device("cpu"), seed=0)
    assert out["d_knn_acc"] == pytest.approx(100.0) and out["d_knn_acc_init"] == pytest.approx(100.0)
    assert 0.0 <= out["d_real_fake_acc"] <= 100.0
    assert D.training and D_init.training  # the checks leave the nets' modes as they were


class _Built(Exception):
    """Stops the train_gan stage once it has built its nets."""


def test_initial_discriminator_is_the_d_the_gan_stage_starts_from(tmp_path, monkeypatch):
    """The `discinit` control's D: the stage's own start (its seeding, its data loading) and then G and D, caught
    as `sngan` returns them, against `initial_discriminator` under the same suite seed; another seed differs."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"scale": "smoke", "seed": 7, "device": "cpu", "threads": 1,
                                     "tracking": {"backend": "none", "uri": None}}))
    params = tmp_path / "gp_params.yaml"
    params.write_text(yaml.safe_dump({"data": {"per_class": 4, "subset_seed": 3, "test_per_class": 2},
                                      "gan": {"width": 0.125, "z_dim": 16, "train": {"batch_size": 8}},
                                      "scales": {"smoke": {"data": {}, "gan": {}}}}))
    data = tmp_path / "data"
    assert prepare.main(["--suite-params", str(suite), "--params", str(params),
                         "--prepared", str(_prepared(tmp_path / "prepared")), "--out", str(data)]) == 0
    built = {}

    def catch(*args, **kw):
        built["G"], built["D"] = sngan(*args, **kw)
        raise _Built

    monkeypatch.setattr(gan, "sngan", catch)
    with pytest.raises(_Built):
        gan.main(["--suite-params", str(suite), "--params", str(params), "--data", str(data),
                  "--out", str(tmp_path / "g")])
    rebuilt = discriminator.initial_discriminator("sndcgan", 0.125, 16, suite_seed=7)
    assert not rebuilt.training and not any(p.requires_grad for p in rebuilt.parameters())
    expected = built["D"].state_dict()
    assert rebuilt.state_dict().keys() == expected.keys()
    for key, value in rebuilt.state_dict().items():  # weights and spectral norm's u, v vectors
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    other = discriminator.initial_discriminator("sndcgan", 0.125, 16, suite_seed=8).state_dict()
    assert not all(torch.equal(v, other[k]) for k, v in expected.items())
    before = torch.get_rng_state()  # the caller's RNG stream is untouched
    discriminator.initial_discriminator("sndcgan", 0.125, 16, suite_seed=7)
    assert torch.equal(torch.get_rng_state(), before)
