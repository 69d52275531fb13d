"""shared.stage, shared.provenance and shared.report's dirty-tree rule."""
import json

import pytest
import torch
import yaml

from shared import config, provenance, records, report, stage
from shared.config import REPO_ROOT


pytestmark = pytest.mark.usefixtures("restore_threads")


def test_run_seed_keeps_trials_and_suite_seeds_apart():
    assert stage.run_seed(0, 0) == 0 and stage.run_seed(0, 2) == 2000 and stage.run_seed(3, 1) == 3_001_000
    seeds = {stage.run_seed(s, t) for s in range(3) for t in range(3)}
    assert len(seeds) == 9
    with pytest.raises(ValueError, match="trial"):
        stage.run_seed(0, 1000)


def test_start_sets_threads_seeds_and_picks_the_device(tmp_path, suite_params, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    st = stage.start("p", "train", suite_params=suite_params(seed=1, threads=1), out=tmp_path / "out", trial=2)
    assert torch.get_num_threads() == 1  # the params, not the shell, decide
    assert st.seed == 1_002_000 and st.scale == "smoke" and st.device.type in ("cpu", "cuda")
    first = torch.rand(3)
    torch.manual_seed(1_002_000)
    assert torch.equal(first, torch.rand(3))  # every RNG was seeded with the run seed


def test_bad_thread_count_names_the_key(tmp_path, suite_params):
    with pytest.raises(config.ConfigError, match="threads"):
        stage.start("p", "train", suite_params=suite_params(threads=0), out=tmp_path)


def test_skip_and_record_use_the_one_schema(tmp_path, suite_params):
    st = stage.start("p", "train", suite_params=suite_params(), out=tmp_path / "run", trial=1)
    assert st.skip("seed 1 is not run") is None
    marker = records.read(tmp_path / "run" / "metrics.json")
    assert marker.is_skip and (marker.paper, marker.stage, marker.scale, marker.seed) == ("p", "train", "smoke", 1)
    record = st.record({"acc": 50.0}, table="t", row="r", curve=[1, 2])
    assert record.extra == {"curve": [1, 2]}
    for key in ("commit", "dirty", "torch", "device", "threads", "world_size"):
        assert key in record.provenance
    assert record.provenance["threads"] == torch.get_num_threads()
    assert record.provenance["world_size"] == 1  # not launched by torchrun


def test_tracked_saves_the_resolved_config_and_restarts_a_stale_checkpoint(tmp_path, suite_params):
    out = tmp_path / "run"
    st = stage.start("p", "train", suite_params=suite_params(), out=out, trial=0)
    with st.tracked({"lr": 0.1}) as log:
        log.log_metrics({"x": 1.0})
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == {"scale": "smoke", "threads": 1, "run_seed": 0, "device": str(st.device), "lr": 0.1}
    (out / "checkpoint.pt").write_bytes(b"made with lr 0.1")
    with st.tracked({"lr": 0.1}):
        pass
    assert (out / "checkpoint.pt").exists()  # same config: resumed
    with st.tracked({"lr": 0.2}):
        pass
    assert not (out / "checkpoint.pt").exists()  # another config: never resumed


def test_provenance_records_the_tree_state():
    prov = provenance.provenance("cpu")
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__ and prov["threads"] >= 1
    assert prov["dirty"] in (True, False, None)
    assert (prov["diff_sha256"] is not None) == bool(prov["dirty"])


def test_reports_refuse_committed_results_from_a_dirty_tree(tmp_path, monkeypatch):
    results = REPO_ROOT / "papers" / "anypaper" / "results" / "mini"
    assert report.is_committed_results(results)
    assert not report.is_committed_results(tmp_path / "results" / "mini")
    assert not report.is_committed_results(REPO_ROOT / "papers" / "anypaper" / "results" / "smoke")  # local only
    assert report.is_committed_results(REPO_ROOT / "papers" / "anypaper" / "results" / "sweeps" / "mini")
    assert not report.is_committed_results(REPO_ROOT / "papers" / "anypaper" / "outputs")

    monkeypatch.setattr(report, "tree_state", lambda: {"dirty": True, "diff_sha256": "d" * 64})
    with pytest.raises(report.DirtyTreeError, match="--allow-dirty"):
        report.check_tree(results, allow_dirty=False)
    assert report.check_tree(results, allow_dirty=True)["dirty"] is True
    assert report.check_tree(tmp_path, allow_dirty=False)["dirty"] is True  # elsewhere: allowed

    monkeypatch.setattr(report, "tree_state", lambda: {"dirty": False, "diff_sha256": None})
    assert report.check_tree(results, allow_dirty=False)["dirty"] is False


def test_allow_dirty_is_written_into_every_report_file(tmp_path):
    rep = report.Report("p", "mini", tmp_path, {}, [{"id": "a", "claim": "c", "verdict": "inconclusive"}],
                        allow_dirty=True)
    claims = json.loads(rep.write_claims("note").read_text())
    assert claims["allow_dirty"] is True and claims["verdicts"] == {"a": "inconclusive"}
    assert {"commit", "dirty", "threads"} <= set(claims)
    clean = report.Report("p", "mini", tmp_path, {}, [])
    assert "allow_dirty" not in json.loads(clean.write_json("x.json", {}).read_text())


def test_seed_stats_match_numpy():
    assert report.seed_stats([1.0, 2.0, 4.0]) == pytest.approx({"mean": 7 / 3, "std": 1.5275252316519468, "n": 3})
    assert report.seed_stats([5.0]) == {"mean": 5.0, "std": None, "n": 1}
    assert report.seed_stats([]) == {"mean": None, "std": None, "n": 0}


def test_write_seed_files_keys_metrics_by_seed_and_merges_curves(tmp_path):
    from shared.stage import write_seed_files

    ran = {0: {"metrics": {"acc": 1.5, "loss": float("nan")}, "curve": [{"step": 2, "acc": 1.0}, {"step": 4, "acc": 1.5}]},
           2: {"metrics": {"acc": 2.5, "loss": 0.1}, "curve": [{"step": 4, "acc": 2.5}]}}
    write_seed_files(tmp_path / "m.json", tmp_path / "p.json", ran, "curve", "step", "acc")
    assert json.loads((tmp_path / "m.json").read_text()) == {"seed0/acc": 1.5, "seed0/loss": None, "seed2/acc": 2.5,
                                                             "seed2/loss": 0.1}
    assert json.loads((tmp_path / "p.json").read_text()) == [{"step": 2, "seed0": 1.0},
                                                             {"step": 4, "seed0": 1.5, "seed2": 2.5}]
