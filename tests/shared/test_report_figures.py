"""What a report shows: the reported-vs-reproduced figure of each table (read back from the matplotlib
objects and checked against numpy), the figure written by every Report, and the table logged to
MLflow as a grid (``<table>.table.json``) beside each table's own figure."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.collections import PathCollection
from PIL import Image

from shared.comparison import Comparison, compare, table_columns
from shared.report import Report, direction, reported_vs_reproduced, row_groups

REPORTED = {
    "paper": "alpha", "source": "Alpha et al. 2021",
    "tables": {
        "t1": {"caption": "Linear eval", "metric": "linear_eval_acc", "unit": "%", "rows": [
            {"id": "adam_0", "label": {"model": "real", "optimizer": "Adam"}, "mean": 75.5, "std": 0.2},
            {"id": "adam_5", "label": {"model": "real + fake", "optimizer": "Adam"}, "mean": 77.0},
            {"id": "lars_0", "label": {"model": "real", "optimizer": "LARS"}, "mean": 70.0},
            {"id": "lars_5", "label": {"model": "real + fake", "optimizer": "LARS"}, "mean": 71.0}]},
        "t2": {"caption": "FID", "metric": "fid", "unit": "", "rows": [
            {"id": "base", "label": {"method": "baseline"}, "mean": 20.0},
            {"id": "ours", "label": {"method": "ours"}, "mean": 10.0}]},
    },
}
T1 = {"adam_0": [51.2, 50.1, 52.9], "adam_5": [55.5], "lars_5": [40.0, 42.0]}  # lars_0 not run
T2 = {"base": [30.0, 31.0], "ours": [25.0, 28.0]}


@pytest.fixture
def comparisons(tmp_path) -> dict[str, Comparison]:
    (tmp_path / "reported.yaml").write_text(yaml.safe_dump(REPORTED, sort_keys=False))
    files = []
    for table, metric, values in (("t1", "linear_eval_acc", T1), ("t2", "fid", T2)):
        for row, xs in values.items():
            for seed, x in enumerate(xs):
                files.append(tmp_path / "m" / f"{table}_{row}_{seed}.json")
                files[-1].parent.mkdir(exist_ok=True)
                files[-1].write_text(json.dumps({"paper": "alpha", "table": table, "row": row, "scale": "mini",
                                                 "seed": seed, "metrics": {metric: x}}))
    return {t: compare(tmp_path / "reported.yaml", files, t, "mini", tmp_path / "out") for t in ("t1", "t2")}


def test_rows_keep_their_per_seed_values(comparisons):
    rows = {r.id: r for r in comparisons["t1"].rows}
    assert rows["adam_0"].values == [51.2, 50.1, 52.9] and rows["adam_0"].seeds == [0, 1, 2]
    assert rows["lars_0"].values == [] and rows["lars_0"].status == "not run"
    saved = json.loads(comparisons["t1"].json_path.read_text())
    assert Comparison.from_dict(saved).rows[0].values == [51.2, 50.1, 52.9]
    old = json.loads(json.dumps(saved))  # a table committed before per-seed values were kept
    for row in old["rows"]:
        del row["values"]
    assert Comparison.from_dict(old).rows[0].values is None  # not recorded
    assert Comparison.from_dict(old).to_dict() == old  # and written back as it was
    old["rows"][0]["values"] = [1.0]
    with pytest.raises(ValueError, match=r"rows\[0\]\.values: 1 values for 3 seeds"):
        Comparison.from_dict(old, "t1.json")


def test_groups_follow_the_columns_that_change_slowly(comparisons):
    groups, within = row_groups(comparisons["t1"].rows)
    assert [(title, [r.id for r in rows]) for title, rows in groups] == [
        ("Adam", ["adam_0", "adam_5"]), ("LARS", ["lars_0", "lars_5"])]
    assert within == ["model"]
    groups, within = row_groups(comparisons["t2"].rows)
    assert [title for title, _ in groups] == [""] and within == ["method"]


@pytest.mark.parametrize("metric, want", [("linear_eval_acc", "higher is better"), ("fid_inception", "lower is better"),
                                          ("is_indomain", "higher is better"), ("knn_top1", "higher is better"),
                                          ("train_loss", "lower is better"), ("kimg", None)])
def test_direction_from_the_metric_name(metric, want):
    assert direction(metric) == want


def test_figure_shows_seeds_means_spreads_and_reported_values(comparisons):
    c = comparisons["t1"]
    ax = reported_vs_reproduced(c).axes[0]
    reported = [line.get_xdata()[0] for line in ax.lines if line.get_marker() == "D"]
    assert reported == [75.5, 77.0, 70.0, 71.0]  # every row, run or not, in the paper's order
    means = [line.get_xdata()[0] for line in ax.lines if line.get_marker() == "o"]
    assert means == pytest.approx([np.mean(T1["adam_0"]), 55.5, np.mean(T1["lars_5"])])
    dots = [x for coll in ax.collections if isinstance(coll, PathCollection)
            for x in np.asarray(coll.get_offsets())[:, 0]]
    assert sorted(dots) == sorted(T1["adam_0"] + T1["adam_5"] + T1["lars_5"])
    # the bar around each mean is its sample std (ddof=1); none for one seed
    bars = {}
    for container in ax.containers:
        data_line, _, barcols = container.lines
        if data_line.get_marker() == "o" and barcols:
            (x0, _), (x1, _) = barcols[0].get_segments()[0]
            bars[round(data_line.get_xdata()[0], 6)] = (x1 - x0) / 2
    assert bars == pytest.approx({round(np.mean(T1["adam_0"]), 6): np.std(T1["adam_0"], ddof=1),
                                  round(np.mean(T1["lars_5"]), 6): np.std(T1["lars_5"], ddof=1)})
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["Adam", "real (n=3)", "real + fake (n=1)", "LARS", "real (not run)", "real + fake (n=2)"]
    assert [t.get_text() for t in ax.texts] == ["not run"]
    assert ax.texts[0].xy[0] == 70.0  # beside the reported number of the row not run
    assert ax.get_xlabel() == "linear_eval_acc (%), higher is better"
    assert "alpha / t1, scale mini" in ax.get_title()


def test_every_report_writes_and_logs_a_figure_per_table(comparisons, tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    rep = Report("alpha", "mini", out, comparisons, [])
    for table in ("t1", "t2"):
        with Image.open(out / f"{table}_vs_reported.png") as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) > 200
        assert rep.paths[f"{table}_vs_reported.png"] == out / f"{table}_vs_reported.png"
    assert not list(out.glob(".*.tmp"))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = rep.log(uri)
    client = MlflowClient(uri)
    for table, other in (("t1", "t2"), ("t2", "t1")):
        artifacts = {a.path for a in client.list_artifacts(ids[table])}
        assert f"{table}_vs_reported.png" in artifacts and f"{other}_vs_reported.png" not in artifacts
        assert {f"{table}.md", f"{table}.json", f"{table}.table.json"} <= artifacts

    # the MLflow table: one row per table row, numbers as compare() made them, seeds as text
    path = Path(client.download_artifacts(ids["t1"], "t1.table.json", str(tmp_path / "dl")))
    grid = json.loads(path.read_text())
    rows = [dict(zip(grid["columns"], values)) for values in grid["data"]]
    assert [r["row"] for r in rows] == ["adam_0", "adam_5", "lars_0", "lars_5"]
    adam = rows[0]
    assert adam["reported"] == 75.5 and adam["reported std"] == 0.2 and adam["n"] == 3
    assert adam["reproduced mean (mini)"] == pytest.approx(np.mean(T1["adam_0"]))
    assert adam["reproduced std (ddof=1)"] == pytest.approx(np.std(T1["adam_0"], ddof=1))
    assert adam["difference"] == pytest.approx(np.mean(T1["adam_0"]) - 75.5)
    assert adam["per-seed values"] == "seed 0: 51.20, seed 1: 50.10, seed 2: 52.90"
    assert adam["setup"] == "model: real, optimizer: Adam"
    assert rows[2]["per-seed values"] == "not run" and rows[2]["reproduced mean (mini)"] is None
    assert rows[2]["n"] == 0 and rows[2]["difference"] is None
    assert rows[1]["reproduced std (ddof=1)"] is None  # one seed: no spread
    tags = client.get_run(ids["t1"]).data.tags
    assert {"path": "t1.table.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])


def test_table_columns_of_a_table_written_before_values_were_kept(comparisons):
    d = comparisons["t1"].to_dict()
    for row in d["rows"]:
        del row["values"]
    columns = table_columns(Comparison.from_dict(d))
    assert columns["per-seed values"][0] == "seeds 0, 1, 2 (values not recorded)"
    assert len(set(map(len, columns.values()))) == 1  # every column has a value per row
    ax = reported_vs_reproduced(Comparison.from_dict(d)).axes[0]  # still drawn: means and bars only
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len([line for line in ax.lines if line.get_marker() == "o"]) == 3
