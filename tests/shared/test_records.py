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
