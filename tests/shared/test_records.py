"""shared.records: one schema, one writer, one reader."""
import json

import pytest

from shared import records
from shared.records import MetricsRecord, RecordError


def _record(**kw):
    base = dict(paper="p", stage="train", scale="smoke", seed=1, metrics={"acc": 12.5}, table="table1", row="ours",
                extra={"curve": [{"epoch": 1, "acc": 10.0}]}, provenance={"commit": "abc", "threads": 1})
    return MetricsRecord(**{**base, **kw})


def test_round_trip_keeps_every_field_and_flattens_extra(tmp_path):
    path = records.write(tmp_path / "run" / "metrics.json", _record())
    doc = json.loads(path.read_text())
    assert doc["schema"] == records.SCHEMA and doc["curve"] == [{"epoch": 1, "acc": 10.0}]  # extra at the top level
    assert doc["metrics"] == {"acc": 12.5} and doc["provenance"]["threads"] == 1
    assert records.read(path) == _record()


def test_skip_marker_has_the_same_shape_without_metrics(tmp_path):
    marker = _record(skipped="seed 1 is not run at scale smoke", metrics={}, extra={})
    path = records.write(tmp_path / "metrics.json", marker)
    doc = json.loads(path.read_text())
    assert set(doc) == {"schema", "paper", "stage", "scale", "seed", "skipped", "provenance"}
    back = records.read(path)
    assert back.is_skip and back.skipped.startswith("seed 1")


def test_find_passes_over_skips_and_excluded_folders(tmp_path):
    records.write(tmp_path / "a" / "metrics.json", _record(row="a"))
    records.write(tmp_path / "b" / "metrics.json", _record(row="b", skipped="not run", metrics={}))
    records.write(tmp_path / "out" / "metrics.json", _record(row="out"))
    found = records.find(tmp_path, exclude=tmp_path / "out")
    assert [p.parent.name for p in found] == ["a"]
    assert [p.parent.name for p in records.find(tmp_path, skips=True, exclude=tmp_path / "out")] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        records.find(tmp_path / "nowhere")


@pytest.mark.parametrize("doc, key", [
    ({"stage": "s", "scale": "mini", "metrics": {}}, "paper"),
    ({"paper": "p", "stage": "s", "scale": "mini", "seed": "0", "metrics": {}}, "seed"),
    ({"paper": "p", "stage": "s", "scale": "mini", "seed": 0}, "metrics"),
])
def test_malformed_files_name_the_file_and_key(tmp_path, doc, key):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=f"metrics.json: key '{key}'"):
        records.read(path)
    path.write_text("{not json")
    with pytest.raises(RecordError, match="cannot read"):
        records.read(path)


def test_bad_values_and_clashing_extra_keys_are_refused():
    with pytest.raises(ValueError, match="metric 'acc' must be a number"):
        _record(metrics={"acc": "high"})
    with pytest.raises(ValueError, match="clash"):
        _record(extra={"metrics": 1})


# ---------------------------------------------------------------- per-run records committed with the results

def _run(folder, name, seed=0, acc=12.5, scale="mini", **kw):
    return records.write(folder / name / "metrics.json", _record(**{"seed": seed, "scale": scale,
                                                                    "metrics": {"acc": acc}, **kw}))


def test_gather_reads_the_union_and_the_stage_folder_wins(tmp_path, capsys):
    stage, mirror = tmp_path / "outputs" / "pretrain", tmp_path / "results" / "mini" / "runs" / "pretrain"
    _run(stage, "a_seed0"), _run(stage, "a_seed1", seed=1, acc=13.0)
    _run(mirror, "a_seed1", seed=1, acc=99.0)  # an older copy of a run re-made here
    _run(mirror, "a_seed2", seed=2, acc=14.0)  # made in an earlier session only
    _run(mirror, "a_seed3", seed=3), _run(stage, "a_seed3", seed=3, skipped="seed 3 is not run", metrics={}, extra={})
    got = records.gather(stage, mirror)
    assert sorted(got.files) == ["a_seed0/metrics.json", "a_seed1/metrics.json", "a_seed2/metrics.json"]
    assert got.files["a_seed1/metrics.json"] == stage / "a_seed1" / "metrics.json"
    assert got.files["a_seed2/metrics.json"] == mirror / "a_seed2" / "metrics.json"
    assert got.hidden == ["a_seed3/metrics.json"]
    err = capsys.readouterr().err
    assert "1 record(s) differ" in err and "a_seed1/metrics.json" in err and "skip markers" in err

    to = tmp_path / "out" / "runs" / "pretrain"
    _run(to, "stale", seed=7)  # a copy nothing read any more
    got.copy_to(to)
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*.json")) == sorted(got.files)
    assert records.read(to / "a_seed1" / "metrics.json").metrics == {"acc": 13.0}  # this session's
    assert (to / "a_seed2" / "metrics.json").read_bytes() == (mirror / "a_seed2" / "metrics.json").read_bytes()

    got = records.gather(stage, mirror)
    got.copy_to(mirror)  # the report's own runs/: the hidden copy goes, the re-made run is updated
    assert not (mirror / "a_seed3").joinpath("metrics.json").exists()
    assert records.read(mirror / "a_seed1" / "metrics.json").metrics == {"acc": 13.0}


def test_gather_from_the_copies_alone_and_missing_folders(tmp_path, capsys):
    mirror = tmp_path / "runs"
    _run(mirror, "a_seed0")
    assert list(records.gather(None, mirror).files) == ["a_seed0/metrics.json"]  # --from-runs
    assert list(records.gather(tmp_path / "gone", mirror).files) == ["a_seed0/metrics.json"]  # a fresh machine
    assert "does not exist: reading the committed records" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="gone does not exist and .*empty holds no records: run it"):
        records.gather(tmp_path / "gone", tmp_path / "empty", hint="run it")
    assert records.gather(tmp_path / "gone", tmp_path / "empty", optional=True).files == {}  # a stage not made
    assert records.gather(None, tmp_path / "empty").files == {}
    single = records.gather(tmp_path / "gone", mirror / "a_seed0", "metrics.json", recursive=False)
    assert list(single.files) == ["metrics.json"]


def test_collect_copies_finished_records_of_the_scale(tmp_path, capsys):
    outputs, runs = tmp_path / "outputs", tmp_path / "results" / "mini" / "runs"
    _run(outputs / "pretrain", "a_seed0")
    _run(outputs / "pretrain", "a_seed1", seed=1, skipped="not run", metrics={}, extra={})  # a skip marker: left
    _run(outputs / "pretrain", "a_seed2", seed=2, scale="smoke")  # another scale: left
    (outputs / "metrics").mkdir()
    (outputs / "metrics" / "flat.json").write_text('{"acc": 1.0}')  # a DVC metrics file, not a record
    (outputs / "pretrain" / "a_seed0" / "config.json").write_text("{not json")
    assert records.main(["collect", "--from", str(outputs), "--to", str(runs)]) == 0  # scale: the folder's
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")
                  if p.is_file()) == ["pretrain/a_seed0/metrics.json"]
    assert "1 new, 0 updated, 0 unchanged, 1 of other scales left" in capsys.readouterr().out
    _run(outputs / "pretrain", "a_seed0", acc=20.0)  # re-run: the copy follows
    _run(outputs / "gan", ".", seed=None)  # another stage's record: outputs/gan/metrics.json
    done = records.collect(outputs, runs, "mini")
    assert done["updated"] == ["pretrain/a_seed0/metrics.json"] and done["new"] == ["gan/metrics.json"]
    assert records.read(runs / "pretrain" / "a_seed0" / "metrics.json").metrics == {"acc": 20.0}
    assert records.collect(outputs, runs, "mini")["unchanged"] == ["gan/metrics.json", "pretrain/a_seed0/metrics.json"]
    assert records.main(["collect", "--from", str(outputs), "--to", str(tmp_path / "somewhere")]) == 2
    assert "--scale is needed" in capsys.readouterr().err
    assert records.main(["collect", "--from", str(tmp_path / "none"), "--to", str(runs)]) == 2
