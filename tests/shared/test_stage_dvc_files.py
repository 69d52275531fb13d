"""What DVC reads of a stage run: `Stage.write_metrics` and `Stage.write_plot` (the `--metrics` /
`--plots` files of a stage), also for a run the scale skips."""
import json
import math

import pytest
import torch
import yaml

from shared import records, stage
from shared.config import REPO_ROOT


pytestmark = pytest.mark.usefixtures("restore_threads")


def test_metrics_and_a_curve_as_flat_json_outside_the_run_folder(tmp_path, suite_params):
    st = stage.start("p", "train", suite_params=suite_params(), out=tmp_path / "run", trial=0,
                     metrics=tmp_path / "metrics/train/run.json", plots=tmp_path / "plots/train/run.json")
    st.write_metrics({"fid_indomain": 4.5, "is_indomain": math.inf})
    history = [{"step": 10, "fid_indomain": 7.0, "is_indomain": 1.2}, {"step": 15, "loss_d": 0.3},
               {"step": 20, "fid_indomain": math.nan}]
    st.write_plot("fid_indomain", history)
    # DVC reads strict JSON: flat numbers, non-finite as null, a row only where the curve has a value
    assert json.loads((tmp_path / "metrics/train/run.json").read_text()) == {"fid_indomain": 4.5, "is_indomain": None}
    assert json.loads((tmp_path / "plots/train/run.json").read_text()) == [
        {"step": 10, "fid_indomain": 7.0}, {"step": 20, "fid_indomain": None}]
    assert not (tmp_path / "run").exists()  # nothing of DVC's inside the run's folder
    with pytest.raises(ValueError, match="not numbers"):
        st.write_metrics({"label": "in-domain"})


def test_a_skipped_run_leaves_empty_files_for_dvc(tmp_path, suite_params):
    st = stage.start("p", "train", suite_params=suite_params(), out=tmp_path / "run", trial=2,
                     metrics=tmp_path / "m.json", plots=tmp_path / "c.json")
    st.skip("seed 2 is not run at scale smoke")
    assert records.read(tmp_path / "run/metrics.json").is_skip
    assert json.loads((tmp_path / "m.json").read_text()) == {}
    assert json.loads((tmp_path / "c.json").read_text()) == []


def test_outside_dvc_nothing_is_written(tmp_path, suite_params):
    st = stage.start("p", "train", suite_params=suite_params(), out=tmp_path / "run", trial=0)
    assert st.write_metrics({"acc": 1.0}) is None and st.write_plot("acc", [{"step": 1, "acc": 1.0}]) is None
    st.skip("not run")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["metrics.json", "params.yaml"]
