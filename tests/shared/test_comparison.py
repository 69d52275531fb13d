"""shared.comparison: reported.yaml checked loudly, reported vs reproduced against numpy, the table
logged to MLflow and read back, and `python -m shared.tracking compare`."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shared.comparison import (SchemaError, claims_markdown, collect_reproduced, compare, load_reported,
                               log_claims, log_comparison)
from shared.tracking.__main__ import main

REPORTED = {
    "paper": "gan_simclr",
    "source": "Halpin-Gregorio 2021",
    "tables": {"table1": {
        "caption": "Linear evaluation accuracy after 600 epochs",
        "metric": "linear_eval_acc",
        "unit": "%",
        "rows": [
            {"id": "adam_fake0", "label": {"model": "5000 Real", "optimizer": "Adam"},
             "mean": 75.51, "std": 0.21},
            {"id": "adam_fake5000", "label": {"model": "5000 Real + 5000 Fake", "optimizer": "Adam"},
             "mean": 77.0},
            {"id": "lars_fake0", "label": {"model": "5000 Real", "optimizer": "LARS"}, "mean": 70.0,
             "note": "not run on purpose"},
        ],
    }},
}
# (row, seed, value) at scale mini; lars_fake0 has none
VALUES = [("adam_fake0", 0, 51.2), ("adam_fake0", 1, 50.1), ("adam_fake0", 2, 52.9),
          ("adam_fake5000", 0, 55.5)]


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One SQLite store per module: creating its tables costs about a second."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def reported(tmp_path) -> Path:
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(REPORTED, sort_keys=False))
    return path


def write_metrics(directory: Path, row: str, seed: int, value: float, scale: str = "mini",
                  table: str = "table1", paper: str = "gan_simclr") -> Path:
    path = directory / f"{table}_{row}_{scale}_s{seed}.json"
    path.write_text(json.dumps({"paper": paper, "table": table, "row": row, "scale": scale,
                                "seed": seed, "metrics": {"linear_eval_acc": value, "knn_acc": 1.0},
                                "commit": "abc123"}))  # stages may add keys of their own
    return path


@pytest.fixture
def metrics_files(tmp_path) -> list[Path]:
    (tmp_path / "m").mkdir()
    files = [write_metrics(tmp_path / "m", *v) for v in VALUES]
    # another table of the same paper, at another scale: must be ignored, not raise
    return files + [write_metrics(tmp_path / "m", "x", 0, 1.0, scale="paper", table="table2")]


# ---------------------------------------------------------------- reported.yaml

@pytest.mark.parametrize("edit, key", [
    (lambda d: d.pop("source"), "source"),
    (lambda d: d["tables"]["table1"].pop("metric"), "tables.table1.metric"),
    (lambda d: d["tables"]["table1"]["rows"][1].update(mean="77"), "tables.table1.rows[1].mean"),
    (lambda d: d["tables"]["table1"]["rows"][0].update(std=-1.0), "tables.table1.rows[0].std"),
    (lambda d: d["tables"]["table1"]["rows"][2].update(id="adam_fake0"), "tables.table1.rows[2].id"),
    (lambda d: d["tables"]["table1"]["rows"][0].update(mena=1.0), "tables.table1.rows[0]"),
])
def test_load_reported_rejects_bad_files(tmp_path, edit, key):
    doc = json.loads(json.dumps(REPORTED))
    edit(doc)
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SchemaError) as e:
        load_reported(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_load_reported_fills_defaults(reported):
    rows = load_reported(reported)["tables"]["table1"]["rows"]
    assert rows[1]["std"] is None and rows[0]["note"] is None and rows[2]["note"] == "not run on purpose"


# ---------------------------------------------------------------- compare

def test_compare_against_numpy(reported, metrics_files, tmp_path):
    c = compare(reported, metrics_files, "table1", "mini", tmp_path / "out")
    rows = {r.id: r for r in c.rows}
    xs = np.array([51.2, 50.1, 52.9])
    assert rows["adam_fake0"].reproduced_mean == pytest.approx(xs.mean())
    assert rows["adam_fake0"].reproduced_std == pytest.approx(xs.std(ddof=1))
    assert rows["adam_fake0"].delta == pytest.approx(xs.mean() - 75.51)
    assert rows["adam_fake0"].seeds == [0, 1, 2] and rows["adam_fake0"].n == 3
    assert rows["adam_fake0"].reported_std == 0.21
    assert rows["adam_fake5000"].reproduced_mean == 55.5 and rows["adam_fake5000"].reproduced_std is None
    assert rows["adam_fake5000"].n == 1
    assert rows["lars_fake0"].status == "not run" and rows["lars_fake0"].reproduced_mean is None
    assert rows["lars_fake0"].delta is None and rows["lars_fake0"].n == 0

    md = (tmp_path / "out" / "table1.md").read_text()
    assert "gan_simclr" in md and "table1" in md and "mini" in md and "linear_eval_acc (%)" in md
    assert "| adam_fake0 | 5000 Real | Adam | 75.51 ± 0.21 | 51.40 ± 1.41 (n=3) | -24.11 |" in md
    assert "| adam_fake5000 | 5000 Real + 5000 Fake | Adam | 77.00 | 55.50 (n=1) | -21.50 |" in md
    assert "| lars_fake0 | 5000 Real | LARS | 70.00 | not run |" in md
    assert json.loads((tmp_path / "out" / "table1.json").read_text()) == c.to_dict()
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_collect_never_mixes_scales_or_repeats_seeds(metrics_files, tmp_path):
    assert collect_reproduced(metrics_files, "table1", "linear_eval_acc", "mini")["adam_fake0"] == [
        (0, 51.2), (1, 50.1), (2, 52.9)]
    (tmp_path / "smoke").mkdir()
    smoke = write_metrics(tmp_path / "smoke", "adam_fake0", 3, 10.0, scale="smoke")
    with pytest.raises(ValueError, match="scale 'smoke'.*'mini'"):
        collect_reproduced([*metrics_files, smoke], "table1", "linear_eval_acc", "mini")
    (tmp_path / "dup").mkdir()
    dup = write_metrics(tmp_path / "dup", "adam_fake0", 1, 49.0)
    with pytest.raises(ValueError, match="seed 1 of row 'adam_fake0'"):
        collect_reproduced([*metrics_files, dup], "table1", "linear_eval_acc", "mini")
    with pytest.raises(SchemaError, match="metrics.fid"):
        collect_reproduced(metrics_files, "table1", "fid", "mini")


def test_compare_rejects_unknown_rows_and_other_papers(reported, tmp_path):
    typo = [write_metrics(tmp_path, "adam_fake00", 0, 50.0)]
    with pytest.raises(ValueError, match="adam_fake00"):
        compare(reported, typo, "table1", "mini", tmp_path / "out")
    other = [write_metrics(tmp_path, "adam_fake0", 0, 50.0, paper="contrad")]
    with pytest.raises(ValueError, match="contrad"):
        compare(reported, other, "table1", "mini", tmp_path / "out")


def test_log_comparison(uri, reported, metrics_files, tmp_path):
    from mlflow import MlflowClient

    c = compare(reported, metrics_files, "table1", "mini", tmp_path / "out")
    (tmp_path / "fig3.png").write_bytes(b"\x89PNG")
    run_id = log_comparison(c, tracking_uri=uri, extra_artifacts=[tmp_path / "fig3.png"])
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "gan_simclr"
    assert run.info.run_name == "compare/table1/mini" and run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("paper", "table", "scale", "kind")} == {
        "paper": "gan_simclr", "table": "table1", "scale": "mini", "kind": "comparison"}
    m = run.data.metrics
    assert m["reported/adam_fake0"] == 75.51 and m["reported/lars_fake0"] == 70.0
    assert m["reproduced/adam_fake0"] == pytest.approx(np.mean([51.2, 50.1, 52.9]))
    assert m["delta/adam_fake5000"] == pytest.approx(55.5 - 77.0)
    assert "reproduced/lars_fake0" not in m and "delta/lars_fake0" not in m
    assert {a.path for a in client.list_artifacts(run_id)} == {"table1.md", "table1.json", "fig3.png",
                                                               "table1.table.json"}  # the grid in the UI
    assert run.data.tags["mlflow.note.content"] == c.md_path.read_text()  # the run's description in the UI


def test_a_comparison_or_claims_run_replaces_the_older_one(tmp_path, reported, metrics_files):
    """One run per (paper, table, scale) and per (paper, scale) for claims, however often logged;
    another scale or table is another run."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = compare(reported, metrics_files, "table1", "mini", tmp_path / "out")
    first = log_comparison(c, tracking_uri=uri)
    second = log_comparison(c, tracking_uri=uri)
    claims = tmp_path / "out" / "claims.json"
    claims.write_text(json.dumps({"paper": "gan_simclr", "scale": "mini", "command": "report.py", "commit": "abc",
                                  "claims": [{"id": "a", "claim": "fakes | help", "verdict": "holds",
                                              "reason": "+2 > 0.5", "difference": 2.0}]}))
    log_claims(claims, uri)
    claims_id = log_claims(claims, uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gan_simclr")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(r.info.run_name for r in runs.values()) == ["claims/mini", "compare/table1/mini"]
    assert second in runs and first not in runs and claims_id in runs
    assert client.get_run(first).info.lifecycle_stage == "deleted"  # hidden until `mlflow gc`
    run = runs[claims_id]
    assert run.data.tags["verdict/a"] == "holds" and run.data.metrics == {"difference/a": 2.0}
    assert run.data.tags["mlflow.note.content"] == claims_markdown(json.loads(claims.read_text()))
    assert "| (a) fakes \\| help | **holds** at mini |  |  | difference = +2.00 | +2 > 0.5 |" in \
        run.data.tags["mlflow.note.content"]
    views = client.get_experiment(experiment.experiment_id).tags
    assert {"mlflow.sharedViewState.comparisons", "mlflow.sharedViewState.claims"} <= set(views)


def test_cli_compare(reported, metrics_files, tmp_path, capsys):
    pattern = str(tmp_path / "m" / "*.json")
    assert main(["compare", "--reported", str(reported), "--metrics", pattern, "--table", "table1",
                 "--scale", "mini", "--out", str(tmp_path / "cli")]) == 0
    assert "| lars_fake0 |" in capsys.readouterr().out
    assert (tmp_path / "cli" / "table1.json").is_file()
