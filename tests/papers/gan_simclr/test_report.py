"""papers.gan_simclr.report: Table 1, Figures 3 / 4 and the claims, from synthetic metrics files.

The synthetic runs are hand-built so every expected number is known: the linear-eval curve of
(optimizer, fake count, seed) is BASE + epoch + OFFSET[seed] at epochs 2, 4, ..., 12, and the final
accuracy is its epoch-12 value. With offsets -0.5 / 0 / +0.5 every setup's seed std is 0.5, so a
Welch test of two setups 1.5 apart has t = 1.5 / sqrt(0.25 / 3 * 2) = 3.67 on 4 df (one-sided p = 0.011).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from papers.gan_simclr import report
from shared import records
from shared.comparison import load_reported

from shared.config import REPO_ROOT

REPO = REPO_ROOT
REPORTED = REPO / "papers" / "gan_simclr" / "reported.yaml"
EPOCHS = list(range(2, 13, 2))
OFFSET = {0: -0.5, 1: 0.0, 2: 0.5}
# final accuracies (epoch 12) are BASE + 12; at equal compute Adam reads 0 @ 12, 2.5k @ 8,
# 5k @ 6, 10k @ 4: 82, 77, 76.5, 76 -> the baseline is best, as the paper's Figure 4 says
BASE = {"adam": {0: 70.0, 2500: 69.0, 5000: 70.5, 10000: 72.0},
        "lars": {0: 60.0, 2500: 61.0, 5000: 62.0, 10000: 64.0}}
FAKE = (0, 2500, 5000, 10000)


def write_run(directory: Path, optimizer: str, fakes: int, seed: int, base: float,
              scale: str = "mini", epochs=EPOCHS) -> Path:
    """One metrics file as the pretrain stage writes it, in its own run folder."""
    curve = [{"epoch": e, "linear_test_acc": base + e + OFFSET[seed]} for e in epochs]
    row = f"{optimizer}_fake{fakes}"
    path = directory / f"{row}_seed{seed}" / "metrics.json"
    return records.write(path, records.MetricsRecord(
        paper="gan_simclr", stage="pretrain", table="table1", row=row, scale=scale, seed=seed,
        metrics={"linear_eval_acc": curve[-1]["linear_test_acc"]}, provenance={"command": "test", "commit": "abc"},
        extra={"fake_count": fakes, "real_count": 5000, "optimizer": optimizer, "epochs": epochs[-1],
               "steps": 100, "curve": curve}))


def write_grid(directory: Path, seeds=(0, 1, 2), base=BASE, optimizers=("adam", "lars")) -> Path:
    for optimizer in optimizers:
        for fakes, b in base[optimizer].items():
            for seed in seeds:
                write_run(directory, optimizer, fakes, seed, b)
    return directory


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole grid at 3 seeds, reported once; a seed skipped at this scale lies beside it."""
    tmp = tmp_path_factory.mktemp("full")
    metrics = write_grid(tmp / "pretrain")
    (metrics / "adam_fake0_seed3").mkdir()
    records.write(metrics / "adam_fake0_seed3" / "metrics.json", records.MetricsRecord(
        paper="gan_simclr", stage="pretrain", scale="mini", seed=3, skipped="seed 3 is not run"))
    return report.make_report(REPORTED, metrics, "mini", tmp / "out"), tmp / "out"


def _figure4(rep) -> dict:
    return json.loads(rep.paths["figure4.json"].read_text())["optimizers"]


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


# ---------------------------------------------------------------- reported.yaml

def test_reported_yaml_is_table1_as_printed():
    doc = load_reported(REPORTED)
    rows = doc["tables"]["table1"]["rows"]
    assert doc["paper"] == "gan_simclr" and "Table 1" in doc["source"] and "Halpin-Gregorio" in doc["source"]
    assert doc["tables"]["table1"]["metric"] == "linear_eval_acc" and doc["tables"]["table1"]["unit"] == "%"
    printed = {  # Table 1 of the paper, cell by cell
        "adam_fake0": ("5000 Real", "Adam", 75.51, 0.21),
        "adam_fake2500": ("5000 Real + 2500 Fake", "Adam", 74.05, 0.27),
        "adam_fake5000": ("5000 Real + 5000 Fake", "Adam", 75.73, 0.25),
        "adam_fake10000": ("5000 Real + 10000 Fake", "Adam", 76.71, 0.29),
        "lars_fake0": ("5000 Real", "LARS", 64.86, 0.06),
        "lars_fake2500": ("5000 Real + 2500 Fake", "LARS", 66.12, 0.19),
        "lars_fake5000": ("5000 Real + 5000 Fake", "LARS", 68.25, 0.13),
        "lars_fake10000": ("5000 Real + 10000 Fake", "LARS", 70.323, 0.06),
    }
    assert [r["id"] for r in rows] == list(printed)
    for r in rows:
        assert (r["label"]["model"], r["label"]["optimizer"], r["mean"], r["std"]) == printed[r["id"]]
    text = REPORTED.read_text()
    assert "70.323" in text and "Figure 3" in text and "Figure 4" in text  # the figures' note


# ---------------------------------------------------------------- Table 1

def test_table_is_numpy_mean_and_std_over_seeds(full):
    rep, out = full
    rows = {r.id: r for r in rep.comparisons["table1"].rows}
    for optimizer, bases in BASE.items():
        for fakes, b in bases.items():
            finals = np.array([b + 12 + OFFSET[s] for s in (0, 1, 2)])
            r = rows[f"{optimizer}_fake{fakes}"]
            assert r.reproduced_mean == pytest.approx(finals.mean())
            assert r.reproduced_std == pytest.approx(finals.std(ddof=1))
            assert r.n == 3 and r.seeds == [0, 1, 2]  # the skipped seed-3 file is passed over
    saved = json.loads((out / "table1.json").read_text())
    assert saved["scale"] == "mini" and len(saved["rows"]) == 8
    assert "| lars_fake10000 |" in (out / "table1.md").read_text()
    assert "70.323 ± 0.06" in (out / "table1.md").read_text()  # reported numbers keep their printed digits


# ---------------------------------------------------------------- figures

def test_figures_are_pngs(full):
    _, out = full
    assert _is_png(out / "figure3.png") and _is_png(out / "figure4.png")
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_figure4_reads_each_setup_at_equal_compute(full):
    rep, out = full
    saved = json.loads((out / "figure4.json").read_text())
    assert saved["paper"] == "gan_simclr" and saved["scale"] == "mini" and "commit" in saved
    # 12 baseline epochs; (5000 + Nf) / 5000 times the images per epoch -> 12, 8, 6, 4 epochs
    want_epoch = {0: 12, 2500: 8, 5000: 6, 10000: 4}
    for optimizer, bases in BASE.items():
        f4 = saved["optimizers"][optimizer]
        assert f4["budget_baseline_epochs"] == pytest.approx(12)
        for fakes, b in bases.items():
            e = f4["by_fake_count"][str(fakes)]
            assert e["epoch"] == want_epoch[fakes]
            assert e["target_epoch"] == pytest.approx(12 * 5000 / (5000 + fakes))
            assert e["compute"] == pytest.approx(12)
            values = [b + want_epoch[fakes] + OFFSET[s] for s in (0, 1, 2)]
            assert e["mean"] == pytest.approx(np.mean(values)) and e["std"] == pytest.approx(np.std(values, ddof=1))
            assert e["n"] == 3 and e["seeds"] == [0, 1, 2]


def test_equal_compute_takes_the_point_just_below_the_target(tmp_path):
    # curves every 5 epochs to 30: targets 20, 15, 10 -> exact; with every 4 epochs to 28:
    # targets 18.67, 14, 9.33 -> epochs 16, 12, 8 (at or just below, never above)
    for seed in (0, 1):
        write_run(tmp_path, "adam", 0, seed, 70.0, epochs=list(range(4, 29, 4)))
        for fakes in (2500, 5000, 10000):
            write_run(tmp_path, "adam", fakes, seed, 70.0, epochs=list(range(4, 29, 4)))
    runs = report.load_runs(report.metrics_files(tmp_path), "mini")
    got = report.equal_compute(runs)["adam"]
    assert got["budget_baseline_epochs"] == 28
    assert [got["by_fake_count"][str(k)]["epoch"] for k in (0, 2500, 5000, 10000)] == [28, 16, 12, 8]
    assert report.equal_compute(runs)["lars"] == {"budget_baseline_epochs": None, "by_fake_count": {}}


def test_missing_rows_do_not_break_the_figures(tmp_path):
    # Adam only, two setups, two seeds: LARS panels say "not run", Table 1 says "not run"
    metrics = tmp_path / "m"
    for fakes in (0, 5000):
        for seed in (0, 1):
            write_run(metrics, "adam", fakes, seed, BASE["adam"][fakes])
    rep = report.make_report(REPORTED, metrics, "mini", tmp_path / "out")
    assert _is_png(tmp_path / "out" / "figure3.png") and _is_png(tmp_path / "out" / "figure4.png")
    status = {r.id: r.status for r in rep.comparisons["table1"].rows}
    assert status["adam_fake0"] == "ok" and status["lars_fake0"] == status["adam_fake10000"] == "not run"
    assert _figure4(rep)["adam"]["by_fake_count"]["5000"]["epoch"] == 6
    verdicts = {c["id"]: c for c in rep.claims}
    assert all(c["verdict"] == "inconclusive" and "not run" in c["reason"] for c in verdicts.values())


# ---------------------------------------------------------------- claims

def _v(*means, spread=(-0.5, 0.0, 0.5)):
    """{fake_count: per-seed values}: each mean with the seeds' offsets (sample std 0.5 by default)."""
    return {k: [m + e for e in spread] for k, m in zip((0, 2500, 5000, 10000), means)}


@pytest.mark.parametrize("means, spread, verdict", [
    ((60, 61, 62, 64), (-0.5, 0.0, 0.5), "holds"),
    ((60, 62, 61, 64), (-0.5, 0.0, 0.5), "holds"),  # a trend, not strict monotonicity, is tested
    ((64, 62, 61, 60), (-0.5, 0.0, 0.5), "does not hold"),
    ((60, 60.1, 60.2, 60.3), (-0.5, 0.0, 0.5), "inconclusive"),  # slope 0.03 per 1000, p = 0.2
    ((60, 61, 62, 64), (0.0,), "inconclusive"),  # one seed
])
def test_claim_a_is_the_slope_test_over_every_seed(means, spread, verdict):
    values = _v(*means, spread=spread)
    got = report.more_fakes_better(values)
    assert got["verdict"] == verdict, got["reason"]
    if len(spread) > 1:
        xs = [k / 1000 for k, v in values.items() for _ in v]
        ref = stats.linregress(xs, [y for v in values.values() for y in v], alternative="greater")
        assert got["slope"] == pytest.approx(ref.slope) and got["p"] == pytest.approx(ref.pvalue)
        assert got["n"] == dict.fromkeys(("0 fakes", "2500 fakes", "5000 fakes", "10000 fakes"), 3)
        assert got["estimate"] == "OLS slope per 1000 fake images"
    missing = report.more_fakes_better(values | {5000: None})
    assert missing["verdict"] == "inconclusive" and "not run: 5000 fakes" in missing["reason"]


@pytest.mark.parametrize("means, verdict", [
    ((70, 69, 70.5, 72), "holds"),  # beats 5000 by 1.5: p = 0.011, the largest after Holm
    ((74, 69, 70, 72), "does not hold"),  # the baseline beats it by 2: p = 0.004, x3 after Holm
    ((71.8, 69, 70, 72), "inconclusive"),  # best, but only by 0.2
    ((72.5, 69, 70, 72), "inconclusive"),  # beaten, but only by 0.5
    ((71, 69, 71, 72), "inconclusive"),  # p = 0.035 vs 0 and vs 5000 alone; 0.07 after Holm
])
def test_claim_b_ten_thousand_fakes_best(means, verdict):
    values = _v(*means)
    got = report.best_of(values, 10000)
    assert got["verdict"] == verdict, got["reason"]
    raw = {f"{k} fakes": stats.ttest_ind(values[10000], values[k], equal_var=False, alternative="greater").pvalue
           for k in (0, 2500, 5000)}
    assert {c["vs"]: c["p"] for c in got["comparisons"]} == pytest.approx(raw)
    assert report.best_of(_v(*means, spread=(0.0,)), 10000)["verdict"] == "inconclusive"  # one seed


def test_claim_c_uses_the_equal_compute_numbers():
    table = {"adam": _v(70, 69, 70.5, 72), "lars": _v(60, 61, 62, 64)}

    def f4(means, spread=(-0.5, 0.0, 0.5)):
        return {"adam": {"by_fake_count": {str(k): {"values": v} for k, v in _v(*means, spread=spread).items()}}}

    def verdict(figure4):
        return {c["id"]: c["verdict"] for c in report.claims(table, figure4)}

    assert verdict(f4((82, 77, 76.5, 76))) == {"a": "holds", "b": "holds", "c": "holds"}
    assert verdict(f4((76, 78, 76.5, 76)))["c"] == "does not hold"  # 2500 beats it by 2.0
    assert verdict(f4((77.3, 77, 76.5, 76)))["c"] == "inconclusive"
    assert verdict(f4((82, 77, 76.5, 76), spread=(0.0,)))["c"] == "inconclusive"


def test_claims_json_from_the_full_grid(full):
    rep, out = full
    saved = json.loads((out / "claims.json").read_text())
    assert saved["verdicts"] == {"a": "holds", "b": "holds", "c": "holds"} and saved["alpha"] == 0.05
    c = {x["id"]: x for x in saved["claims"]}
    assert c["c"]["numbers"]["0 fakes"]["mean"] == pytest.approx(82.0)  # the figure4 number, not Table 1's
    assert c["c"]["values"]["0 fakes"] == pytest.approx([81.5, 82.0, 82.5])
    assert c["b"]["numbers"]["10000 fakes"]["mean"] == pytest.approx(84.0)
    assert c["b"]["values"]["10000 fakes"] == pytest.approx([83.5, 84.0, 84.5]) and c["b"]["vs"] == "5000 fakes"
    assert c["b"]["difference"] == pytest.approx(1.5) and c["b"]["ci95"][0] < 1.5 < c["b"]["ci95"][1]
    assert c["a"]["test"].startswith("one-sided OLS slope") and c["a"]["n"]["10000 fakes"] == 3
    finals = {k: [BASE["lars"][k] + 12 + OFFSET[s] for s in (0, 1, 2)] for k in FAKE}
    ref = stats.linregress([k / 1000 for k in FAKE for _ in range(3)], [y for k in FAKE for y in finals[k]],
                           alternative="greater")
    assert c["a"]["slope"] == pytest.approx(ref.slope) and c["a"]["p"] == pytest.approx(ref.pvalue)
    assert all("rule" in x and "reason" in x and x["alpha"] == 0.05 for x in saved["claims"])
    assert c["a"]["reported"].startswith("LARS, fakes 0: ") and "70.323" not in c["b"]["reported"]


def test_single_seed_is_inconclusive(tmp_path):
    rep = report.make_report(REPORTED, write_grid(tmp_path / "m", seeds=(0,)), "mini", tmp_path / "out")
    assert {c["verdict"] for c in rep.claims} == {"inconclusive"}
    assert all(r.reproduced_std is None for r in rep.comparisons["table1"].rows)


# ---------------------------------------------------------------- failing loudly

def test_other_scale_and_bad_files_raise(tmp_path, capsys):
    metrics = write_grid(tmp_path / "m", seeds=(0,), optimizers=("adam",))
    write_run(metrics / "paper_runs", "lars", 0, 0, 60.0, scale="paper")
    with pytest.raises(ValueError, match="scale 'paper'"):
        report.make_report(REPORTED, metrics, "mini", tmp_path / "out")
    assert report.main(["--reported", str(REPORTED), "--metrics-dir", str(metrics), "--scale", "mini",
                        "--out", str(tmp_path / "out")]) == 2
    assert "scale 'paper'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="pretrain stage"):
        report.make_report(REPORTED, tmp_path / "nowhere", "mini", tmp_path / "out")
    bad = tmp_path / "bad"
    path = write_run(bad, "adam", 2500, 0, 70.0)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "fake_count": 5000}))  # row says 2500
    with pytest.raises(ValueError, match="does not match"):
        report.make_report(REPORTED, bad, "mini", tmp_path / "out")


# ---------------------------------------------------------------- the command line

def test_cli_end_to_end(tmp_path, capsys):
    metrics = write_grid(tmp_path / "m", seeds=(0, 1))
    out = metrics / "report"  # inside the metrics folder: its own outputs must not be read back
    argv = ["--reported", str(REPORTED), "--metrics-dir", str(metrics), "--scale", "mini", "--out", str(out)]
    assert report.main(argv) == 0
    assert report.main(argv) == 0  # a second run over its own table1.json / figure4.json
    printed = capsys.readouterr().out
    assert "| adam_fake0 |" in printed and "claim (c)" in printed and "logged to MLflow" not in printed
    assert {p.name for p in out.iterdir()} == {"table1.md", "table1.json", "figure3.png", "figure4.png",
                                               "figure4.json", "claims.json", "summary.json",
                                               "table1_vs_reported.png", "runs"}
    copied = sorted(p.relative_to(out / "runs" / "pretrain") for p in (out / "runs").rglob("*.json"))
    assert copied == sorted(p.relative_to(metrics) for p in metrics.glob("*/metrics.json"))  # not its own runs/
    summary = json.loads((out / "summary.json").read_text())  # what `dvc metrics show` reads: flat, numbers
    rows = json.loads((out / "table1.json").read_text())["rows"]
    assert summary["table1"] == {r["id"]: {"mean": r["reproduced_mean"], "std": r["reproduced_std"], "n": r["n"]}
                                 for r in rows if r["n"]}
    assert summary["claims"] == json.loads((out / "claims.json").read_text())["verdicts"]


PROVENANCE = ("command", "commit", "dirty", "diff_sha256", "torch", "device", "threads", "provenance")


def _results(out: Path) -> dict:
    """The report's JSON files less what says when and how they were made."""
    return {name: {k: v for k, v in json.loads((out / name).read_text()).items() if k not in PROVENANCE}
            for name in ("table1.json", "figure4.json", "claims.json", "summary.json", "gan_quality.json")
            if (out / name).is_file()}


def test_a_report_from_the_committed_runs_alone_is_the_same(tmp_path, capsys):
    """The per-run records copied into <out>/runs recompute every table and claim without the stages'
    outputs (a fresh clone), into a new folder or in place."""
    metrics = write_grid(tmp_path / "pretrain")
    gan = tmp_path / "gan" / "metrics.json"
    records.write(gan, records.MetricsRecord(paper="gan_simclr", stage="train_gan", scale="mini", seed=None,
                                             metrics={"fid_indomain": 4.5}, extra={"fid_label": "in-domain FID",
                                                                                   "best": {"step": 10}}))
    out = tmp_path / "results"
    base = ["--reported", str(REPORTED), "--scale", "mini"]
    assert report.main([*base, "--metrics-dir", str(metrics), "--gan-metrics", str(gan), "--out", str(out)]) == 0
    first = _results(out)
    assert first["gan_quality.json"]["fid_label"] == "in-domain FID"
    assert (out / "runs" / "gan" / "metrics.json").read_bytes() == gan.read_bytes()
    assert len(list((out / "runs" / "pretrain").glob("*/metrics.json"))) == 24
    shutil.rmtree(metrics), shutil.rmtree(gan.parent)  # the stages' outputs are gone

    again = tmp_path / "again"
    assert report.main([*base, "--from-runs", "--runs", str(out / "runs"), "--out", str(again)]) == 0
    assert _results(again) == first
    assert report.main([*base, "--from-runs", "--out", str(out)]) == 0  # in place: the committed case
    assert _results(out) == first and len(list((out / "runs").rglob("*.json"))) == 25
    assert report.main([*base, "--out", str(tmp_path / "x")]) == 2  # neither --metrics-dir nor --from-runs
    assert "--metrics-dir is required" in capsys.readouterr().err


def test_runs_assembled_over_sessions(tmp_path, capsys):
    """Seeds 0-1 in this session's metrics folder, seed 2 only in the committed runs/ (an earlier
    session): the table has all three; where both hold a run, this session's wins."""
    out = tmp_path / "results"
    write_grid(out / "runs" / "pretrain", seeds=(1, 2))  # committed earlier
    metrics = write_grid(tmp_path / "pretrain", seeds=(0,))
    write_run(metrics, "lars", 0, 1, 50.0)  # seed 1 of lars_fake0 re-run here, with another number
    rep = report.make_report(REPORTED, metrics, "mini", out)
    rows = {r.id: r for r in rep.comparisons["table1"].rows}
    assert rows["adam_fake0"].seeds == [0, 1, 2] and rows["lars_fake0"].values[1] == pytest.approx(62.0)
    assert "lars_fake0_seed1/metrics.json" in capsys.readouterr().err  # the note names the record that differs
    copy = records.read(out / "runs" / "pretrain" / "lars_fake0_seed1" / "metrics.json")
    assert copy.metrics["linear_eval_acc"] == pytest.approx(62.0)  # the committed copy follows this session's


def test_cli_log_to_mlflow(tmp_path, monkeypatch, capsys):
    """--log makes the comparison run and the claims run; logged twice, the store still holds one of each."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    metrics = write_grid(tmp_path / "m", seeds=(0, 1))
    argv = ["--reported", str(REPORTED), "--metrics-dir", str(metrics), "--scale", "mini",
            "--out", str(tmp_path / "out"), "--log"]
    assert report.main(argv) == 0
    assert "logged to MLflow run" in capsys.readouterr().out
    assert report.main(argv) == 0  # the report stage run again: its runs replace the first ones
    printed = capsys.readouterr().out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gan_simclr")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["claims/mini", "compare/table1/mini"]  # one per table and scale, one claims run
    run = runs["compare/table1/mini"]
    assert f"table1: logged to MLflow run {run.info.run_id}" in printed
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("paper", "table", "scale", "kind")} == {
        "paper": "gan_simclr", "table": "table1", "scale": "mini", "kind": "comparison"}
    assert run.data.tags["mlflow.note.content"] == (tmp_path / "out" / "table1.md").read_text()
    assert run.data.metrics["reported/lars_fake10000"] == 70.323
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "table1.md", "table1.json", "figure3.png", "figure4.png", "figure4.json", "claims.json",
        "table1_vs_reported.png", "table1.table.json"}

    claims = runs["claims/mini"]
    saved = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert {k: claims.data.tags[k] for k in ("paper", "scale", "kind")} == {
        "paper": "gan_simclr", "scale": "mini", "kind": "claims"}
    assert {k: v for k, v in claims.data.tags.items() if k.startswith("verdict/")} == {
        f"verdict/{k}": v for k, v in saved["verdicts"].items()}
    assert claims.data.params["claim/a"] == saved["claims"][0]["claim"]
    assert "| (a) " in claims.data.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(claims.info.run_id)} == {"claims.json", "claims.md"}


def test_every_table_gets_its_reported_vs_reproduced_figure(full):
    rep, out = full
    assert _is_png(out / "table1_vs_reported.png") and rep.paths["table1_vs_reported.png"] == out / "table1_vs_reported.png"


def test_gan_samples_show_the_best_and_last_grids(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for step, shade in ((10, 50), (20, 100), (30, 200)):
        Image.fromarray(np.full((34, 34, 3), shade, np.uint8)).save(samples / f"step_{step:07d}.png")
    quality = {"method": "diffaugment[color,translation,cutout]", "fid_label": "FID (in-domain)",
               "best": {"step": 20, "fid_indomain": 4.5}, "final": {"step": 30, "fid_indomain": 7.25}}
    fig = report.gan_samples(samples, quality, "smoke")
    shown = [(ax.get_title(), int(ax.images[0].get_array()[0, 0, 0])) for ax in fig.axes]
    assert shown == [("step 20 (best FID: best.pt, the fakes' generator)\nfid_indomain 4.50", 100),
                     ("step 30 (last)\nfid_indomain 7.25", 200)]
    assert "diffaugment[color,translation,cutout]" in fig.texts[0].get_text()
    # the best step drew no grid: only the last one
    assert [ax.get_title() for ax in report.gan_samples(samples, {**quality, "best": {"step": 25}}, "smoke").axes] == [
        "step 30 (last)\nfid_indomain 7.25"]
    empty = report.gan_samples(tmp_path / "none", quality, "smoke")
    assert "no sample grids" in empty.axes[0].texts[0].get_text()
