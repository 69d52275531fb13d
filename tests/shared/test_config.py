import dataclasses
from typing import Literal

import pytest
import yaml

from shared import config
from shared.config import ConfigError
from shared.prepare import PrepareConfig
from shared.trainers.linear_eval import LinearEvalConfig
from shared.trainers.ssl import SSLConfig


@dataclasses.dataclass
class Inner:
    size: tuple[float, float] = (0.08, 1.0)


@dataclasses.dataclass
class Stage:
    epochs: int = 600
    lr: float = 3e-4
    optimizer: Literal["adam", "lars"] = "adam"
    inner: Inner = dataclasses.field(default_factory=Inner)
    note: str | None = None


def write(tmp_path, obj):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_scale_override_merges_over_the_section(tmp_path):
    path = write(tmp_path, {"stage": {"epochs": 600, "lr": 1}, "scales": {"mini": {"stage": {"epochs": 5}}}})
    assert config.load_section(Stage, path, "stage", "mini") == Stage(epochs=5, lr=1.0)
    assert config.load_section(Stage, path, "stage", "paper") == Stage(epochs=600, lr=1.0)
    cfg = config.load_section(Stage, path, "stage", "paper")
    assert isinstance(cfg.lr, float)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, {"stage": {"epochs": 1}, "scales": {"smoke": {"stage": {"inner": {"sise": [0.1, 1]}}}}})
    with pytest.raises(ConfigError, match=r"params\.yaml: unknown key 'stage\.inner\.sise'"):
        config.load_section(Stage, path, "stage", "smoke")


@pytest.mark.parametrize("section, key", [
    ({"epochs": "ten"}, "stage.epochs"),
    ({"epochs": 1.5}, "stage.epochs"),
    ({"epochs": True}, "stage.epochs"),
    ({"lr": "fast"}, "stage.lr"),
    ({"inner": {"size": [0.1]}}, "stage.inner.size"),
    ({"inner": {"size": [0.1, "x"]}}, r"stage.inner.size\[1\]"),
    ({"optimizer": "sgd"}, "stage.optimizer"),
    ({"note": 3}, "stage.note"),
])
def test_wrong_type_names_key(tmp_path, section, key):
    path = write(tmp_path, {"stage": section})
    with pytest.raises(ConfigError, match=rf"params\.yaml: key '{key}'"):
        config.load_section(Stage, path, "stage", "paper")


def test_lists_become_tuples_and_ints_floats(tmp_path):
    path = write(tmp_path, {"stage": {"inner": {"size": [0, 1]}, "lr": 2}})
    cfg = config.load_section(Stage, path, "stage", "paper")
    assert cfg.inner.size == (0.0, 1.0) and isinstance(cfg.inner.size, tuple)
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float)


def test_bad_scale_and_missing_file(tmp_path):
    path = write(tmp_path, {"stage": {}})
    with pytest.raises(ConfigError, match="'scale' must be one of"):
        config.load_section(Stage, path, "stage", "huge")
    with pytest.raises(ConfigError, match="nope.yaml: params file not found"):
        config.load_section(Stage, tmp_path / "nope.yaml", "stage", "mini")
    bad = write(tmp_path, {"stage": {}, "scales": {"tiny": {}}})
    with pytest.raises(ConfigError, match="unknown key 'scales.tiny'"):
        config.load_section(Stage, bad, "stage", "mini")


def test_post_init_range_errors_become_config_errors(tmp_path):
    path = write(tmp_path, {"pretrain": {"epochs": 0}})
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        config.load_section(SSLConfig, path, "pretrain", "mini")


def test_suite_params_load_at_every_scale():
    params = config.REPO_ROOT / "params.yaml"
    suite = config.load_suite(params)
    assert suite.scale in config.SCALES
    for scale in config.SCALES:
        prep = config.load_section(PrepareConfig, params, "prepare", scale)
        assert prep.subsets["cifar10_5k"].dataset == "cifar10"
    smoke = config.load_section(PrepareConfig, params, "prepare", "smoke")
    paper = config.load_section(PrepareConfig, params, "prepare", "paper")
    assert paper.subsets["cifar10_5k"].per_class == 500 and paper.limit_per_class is None
    assert smoke.subsets["cifar10_5k"].per_class < smoke.limit_per_class


def test_suite_rejects_unknown_top_level_key_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'scael'"):
        config.load_suite(write(tmp_path, {"scael": "mini"}))
    with pytest.raises(ConfigError, match="key 'scale' must be one of"):
        config.load_suite(write(tmp_path, {"scale": "medium"}))
    with pytest.raises(ConfigError, match="unknown dataset in paths"):
        config.load_suite(write(tmp_path, {"data": {"paths": {"cifar100": "/x"}}}))


def test_resolved_config_round_trips(tmp_path):
    cfg = LinearEvalConfig(milestones=(60, 75, 90), optimizer="sgd", lr=0.1)
    config.save_resolved(cfg, tmp_path / "out" / "config.yaml")
    back = config.build(LinearEvalConfig, yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()))
    assert back == cfg
    assert not list((tmp_path / "out").glob("*.tmp"))
