import json

import yaml

from shared.config import REPO_ROOT as REPO
from papers.gan_simclr import pretrain
from shared import checkpoint, config


def test_checkpoint_is_resumed_only_with_the_same_config(tmp_path):
    resolved = {"scale": "mini", "pretrain": {"width": 0.25, "crop": [0.08, 1.0]}}
    checkpoint.fresh_start_if_config_changed(tmp_path, resolved)
    (tmp_path / "checkpoint.pt").write_bytes(b"state")
    checkpoint.fresh_start_if_config_changed(tmp_path, resolved)
    assert (tmp_path / "checkpoint.pt").exists()  # same config: resume
    changed = {"scale": "mini", "pretrain": {"width": 0.5, "crop": [0.08, 1.0]}}
    checkpoint.fresh_start_if_config_changed(tmp_path, changed)
    assert not (tmp_path / "checkpoint.pt").exists()  # another config: start afresh
    assert config.load_yaml(tmp_path / "config.yaml") == changed


def test_seeds_beyond_the_scale_are_skipped_with_a_marker(tmp_path):
    suite = yaml.safe_load((REPO / "params.yaml").read_text())
    suite.update(scale="smoke", tracking={"backend": "none", "uri": None})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "run"
    code = pretrain.main(["--fakes", "0", "--optimizer", "adam", "--seed", "2", "--out", str(out),
                          "--suite-params", str(tmp_path / "params.yaml")])
    assert code == 0
    assert "not run at scale smoke" in json.loads((out / "metrics.json").read_text())["skipped"]


def test_unknown_optimiser_is_an_error_naming_the_key(tmp_path, capsys):
    suite = yaml.safe_load((REPO / "params.yaml").read_text())
    suite.update(scale="smoke", tracking={"backend": "none", "uri": None})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(suite))
    code = pretrain.main(["--fakes", "0", "--optimizer", "sgd", "--seed", "0", "--out", str(tmp_path / "run"),
                          "--suite-params", str(tmp_path / "params.yaml")])
    assert code == 2
    assert "pretrain.optimizers.sgd" in capsys.readouterr().err
