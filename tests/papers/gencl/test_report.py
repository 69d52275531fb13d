"""papers.gencl.report: relabelling the per-run records into the paper's tables, the claims against scipy, the
semi-supervised labelling, the augmentation grid's alignment check, and the report end to end.

The synthetic world is built so every verdict is known: column ``c`` of run ``r`` at seed ``s`` is
MEAN[r] + SHIFT[c] + OFFSET[s] (offsets -0.3 / 0 / +0.3: seed std 0.3), so two runs 1 point apart give a Welch t
of 1 / sqrt(2 * 0.09 / 3) = 4.08 on 4 df (one-sided p = 0.0075).
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from papers.gencl import report
from papers.gencl.evaluate import EvaluateConfig, protocol_notes, run_cells
from papers.gencl.runs import RUN_NAMES, get_run
from shared import records
from shared.claims import FAILS, HOLDS, INCONCLUSIVE, holm
from shared.comparison import load_reported
from shared.config import REPO_ROOT
from shared.data import save_indices
from shared.scorecard import load_claims
from shared.view_sources.precomputed import write_precomputed

REPORTED = REPO_ROOT / "papers" / "gencl" / "reported.yaml"
OFFSET = {0: -0.3, 1: 0.0, 2: 0.3}
SHIFT = {"lin_top1": 0.0, "lin_top5": 20.0, "semi1_top1": -10.0, "semi10_top1": -5.0, "semi1_top5": 10.0,
         "semi10_top5": 15.0, "knn_top1": -2.0}
# a world where crop is the best pairing, geometric beats colour, mask beats noise at every gamma, every mask
# gamma beats the baseline, noise gamma 100% is below it
MEAN = {"baseline": 30.0, "noise_g0p25": 31.0, "noise_g0p5": 30.2, "noise_g0p75": 29.0, "noise_g1": 28.0,
        "mask_g0p25": 33.0, "mask_g0p5": 34.0, "mask_g0p75": 34.2, "mask_g1": 33.5,
        "pair_generative": 20.0, "pair_crop": 28.0, "pair_flip": 24.0, "pair_solarize": 21.5, "pair_jitter": 21.3,
        "pair_blur": 19.9, "pair_grayscale": 19.0, "mask_genonly": 26.0}
# Table 4's single measurements: FID / SSIM / ms per image
COST = {"table4_fid": {"noise": 40.0, "mask": 12.0, "crop": 5.0, "jitter": 1.0, "blur": 8.0},
        "table4_ssim": {"noise": 0.1, "mask": 0.3, "crop": 0.2, "jitter": 0.8, "blur": 0.9},
        "table4_time_ms": {"noise": 2.0, "mask": 10.0, "crop": 0.1, "jitter": 0.4, "blur": 0.2},
        "table4_params_m": {"noise": 1.5, "mask": 3.0}}


def value(run, column, seed, means=MEAN):
    return means[run] + SHIFT[column] + OFFSET[seed]


def write_eval(folder: Path, run: str, seed: int, protocol="linear_probe", means=MEAN, scale="mini") -> Path:
    """One record as the evaluate stage writes it (its extra keys: run, cells, the protocol notes)."""
    return records.write(folder / run / f"seed{seed}" / "metrics.json", records.MetricsRecord(
        paper="gencl", stage="evaluate", scale=scale, seed=seed, table="runs", row=run,
        metrics={c: value(run, c, seed, means) for c in SHIFT}, provenance={"command": "test", "commit": "abc"},
        extra={"run": run, "cells": run_cells(run), **protocol_notes(EvaluateConfig(semi_protocol=protocol))}))


def write_world(folder: Path, means=MEAN, seeds=OFFSET, protocol="linear_probe") -> Path:
    for run in means:
        for seed in seeds:
            write_eval(folder, run, seed, protocol, means)
    return folder


def write_cost(folder: Path, cost=COST, fid_key="fid_indomain") -> Path:
    for table, rows in cost.items():
        metric = {"table4_fid": fid_key, "table4_ssim": "ssim", "table4_time_ms": "time_ms",
                  "table4_params_m": "params_m"}[table]
        for row, v in rows.items():
            records.write(folder / "rows" / row / f"{table}.json", records.MetricsRecord(
                paper="gencl", stage="cost", scale="mini", seed=0, table=table, row=row, metrics={metric: v},
                provenance={"command": "test"}))
    return folder


def evaluated(folder: Path):
    return report.load_evaluated(records.find(folder), "mini")


def test_the_report_names_runs_of_the_registry():
    named = {*report.PAIRINGS, report.BASELINE, report.MASK_GENONLY,
             *(r for runs in report.GAMMA_RUNS.values() for r in runs.values())}
    assert named == set(RUN_NAMES)
    assert set(report.GAMMA_RUNS["mask"]) == set(report.GAMMA_RUNS["noise"]) == {0.0, 0.25, 0.5, 0.75, 1.0}


# ---------------------------------------------------------------- relabelling

def test_each_run_fills_every_cell_it_names(tmp_path):
    found = evaluated(write_world(tmp_path / "eval"))
    comparisons = report.compare_eval_tables(REPORTED, found, "mini", tmp_path / "out", "linear_probe")
    doc = load_reported(REPORTED)
    filled = set()
    for run in RUN_NAMES:
        for paper_table, label in get_run(run).rows:
            columns = ("lin_top1",) if paper_table == "table4" else report.COLUMNS
            for column in columns:
                table = f"{paper_table}_{column}"
                row = next(r for r in comparisons[table].rows if r.id == report.row_of(doc, table, label))
                assert row.seeds == [0, 1, 2] and row.values == pytest.approx([value(run, column, s) for s in OFFSET])
                assert row.reproduced_mean == pytest.approx(MEAN[run] + SHIFT[column])
                filled.add((table, row.id))
    # the shared baseline is Table 2's and Table 3's 0%; the generative pairing Table 1's and Table 4's
    t2 = {r.id: r for r in comparisons["table2_semi10_top1"].rows}
    t3 = {r.id: r for r in comparisons["table3_semi10_top1"].rows}
    assert t2["noise_g0"].values == t3["mask_g0"].values == pytest.approx([value("baseline", "semi10_top1", s)
                                                                           for s in OFFSET])
    t4 = {r.id: r for r in comparisons["table4_lin_top1"].rows}
    assert t4["noise"].values == pytest.approx([value("pair_generative", "lin_top1", s) for s in OFFSET])
    assert t4["mask"].values == pytest.approx([value("mask_genonly", "lin_top1", s) for s in OFFSET])
    # every row of Tables 1-3 is filled; Table 4's derived rows are not run
    for table in report.EVAL_TABLES:
        for r in comparisons[table].rows:
            assert ((table, r.id) in filled) == (r.status == "ok"), (table, r.id)
    assert {r.id for r in comparisons["table4_lin_top1"].rows if r.status == "not run"} == {"crop", "jitter", "blur"}


def test_missing_runs_are_not_run_rows(tmp_path):
    means = {k: v for k, v in MEAN.items() if k != "mask_g0p5"}
    found = evaluated(write_world(tmp_path / "eval", means))
    c = report.compare_eval_tables(REPORTED, found, "mini", tmp_path / "out", "linear_probe")["table3_lin_top1"]
    status = {r.id: r.status for r in c.rows}
    assert status["mask_g50"] == "not run" and status["mask_g25"] == "ok"
    assert "| mask_g50 |" in c.md_path.read_text() and "not run" in c.md_path.read_text()


def test_load_refuses_other_scales_unknown_runs_wrong_cells_and_repeats(tmp_path):
    write_eval(tmp_path / "a", "baseline", 0, scale="smoke")
    with pytest.raises(ValueError, match="never mix scales"):
        evaluated(tmp_path / "a")
    path = write_eval(tmp_path / "b", "baseline", 0)
    doc = json.loads(path.read_text())
    doc["run"] = "no_such_run"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="no_such_run"):
        evaluated(tmp_path / "b")
    path = write_eval(tmp_path / "c", "baseline", 0)
    doc = json.loads(path.read_text())
    doc["cells"] = [["table2", "0%"]]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="cells"):
        evaluated(tmp_path / "c")
    write_eval(tmp_path / "d" / "x", "baseline", 0)
    write_eval(tmp_path / "d" / "y", "baseline", 0)
    with pytest.raises(ValueError, match="appears twice"):
        evaluated(tmp_path / "d")


# ---------------------------------------------------------------- the semi-supervised protocol

def test_linear_probe_tables_say_so(tmp_path):
    found = evaluated(write_world(tmp_path / "eval"))
    assert report.semi_protocol(found) == "linear_probe"
    comparisons = report.compare_eval_tables(REPORTED, found, "mini", tmp_path / "out", "linear_probe")
    for table, c in comparisons.items():
        probe = "(linear probe)" in c.caption
        assert probe == (table.split("_", 1)[1] in report.SEMI), table
        assert probe == ("(linear probe)" in c.md_path.read_text())
        assert probe == ("(linear probe)" in json.loads(c.json_path.read_text())["caption"])


def test_fine_tuned_tables_keep_the_papers_caption_and_mixed_protocols_are_refused(tmp_path):
    found = evaluated(write_world(tmp_path / "eval", protocol="finetune"))
    assert report.semi_protocol(found) == "finetune"
    comparisons = report.compare_eval_tables(REPORTED, found, "mini", tmp_path / "out", "finetune")
    assert not any("linear probe" in c.caption for c in comparisons.values())
    write_eval(tmp_path / "mixed", "baseline", 0, "finetune")
    write_eval(tmp_path / "mixed", "baseline", 1, "linear_probe")
    with pytest.raises(ValueError, match="mix semi-supervised protocols"):
        report.semi_protocol(evaluated(tmp_path / "mixed"))


# ---------------------------------------------------------------- claims

def world_claims(tmp_path, means=MEAN, seeds=OFFSET, cost=COST):
    found = evaluated(write_world(tmp_path / "eval", means, seeds))
    values = {m: report.per_seed(found, m) for m in (*report.COLUMNS, *report.EXTRA_METRICS)}
    cost_dir = write_cost(tmp_path / "cost", cost)
    gathered = {t: records.gather(cost_dir, None, f"{t}.json") for t in report.COST_TABLES}
    comparisons = report.compare_cost_tables(REPORTED, report.load_cost(gathered, "mini"), "mini", tmp_path / "out")
    return {c["id"]: c for c in report.claims(values, report.cost_values(comparisons), load_reported(REPORTED))}, \
        comparisons


def test_claims_on_the_synthetic_world(tmp_path):
    got, _ = world_claims(tmp_path)
    for id_ in ("G1", "G2", "G3", "G4", "G5", "G6", "G7", "G9", "G9b", "G9c", "G11", "G11_columns", "G14",
                "G14_columns", "G15"):
        assert got[id_]["verdict"] == HOLDS, (id_, got[id_]["reason"])
    # one measurement per augmentation: no test, the observed order named
    for id_ in ("G16", "G17", "G18", "G18_crop", "G18_jitter", "G18_blur"):
        assert got[id_]["verdict"] == INCONCLUSIVE and got[id_]["p"] is None and got[id_]["ci95"] is None
        assert got[id_]["observed_direction"] == "as claimed" and "no test" in got[id_]["reason"]
    assert got["G16"]["difference"] == pytest.approx(12.0 - 40.0)


def test_a_verdict_matches_scipy(tmp_path):
    got, _ = world_claims(tmp_path)
    crop = [value("pair_crop", "lin_top1", s) for s in OFFSET]
    gen = [value("pair_generative", "lin_top1", s) for s in OFFSET]
    expected = stats.ttest_ind(crop, gen, equal_var=False, alternative="greater")
    assert got["G2"]["p"] == pytest.approx(expected.pvalue)
    assert got["G2"]["difference"] == pytest.approx(8.0)
    # G14: one Welch test per gamma, Holm over the four
    ps = []
    for g in ("0p25", "0p5", "0p75", "1"):
        m = [value(f"mask_g{g}", "lin_top1", s) for s in OFFSET]
        n = [value(f"noise_g{g}", "lin_top1", s) for s in OFFSET]
        ps.append(stats.ttest_ind(m, n, equal_var=False, alternative="greater").pvalue)
    order = np.argsort(ps)
    by_hand = np.maximum.accumulate(np.minimum(1, (4 - np.arange(4)) * np.array(ps)[order]))
    adjusted = [c["p_adjusted"] for c in got["G14"]["comparisons"]]
    assert sorted(adjusted) == pytest.approx(sorted(by_hand)) and adjusted == pytest.approx(holm(ps))
    # G9: baseline above noise at gamma 100%, the "reversed" direction
    base = [value("baseline", "lin_top1", s) for s in OFFSET]
    g1 = [value("noise_g1", "lin_top1", s) for s in OFFSET]
    assert got["G9"]["p"] == pytest.approx(stats.ttest_ind(base, g1, equal_var=False, alternative="greater").pvalue)
    # G9c: the OLS slope over gamma 0.25..1
    xs = [g for g in (0.25, 0.5, 0.75, 1.0) for _ in OFFSET]
    ys = [value(report.GAMMA_RUNS["noise"][g], "lin_top1", s) for g in (0.25, 0.5, 0.75, 1.0) for s in OFFSET]
    fit = stats.linregress(xs, ys, alternative="less")
    assert got["G9c"]["slope"] == pytest.approx(fit.slope) and got["G9c"]["p"] == pytest.approx(fit.pvalue)


def test_claims_fail_where_the_world_goes_the_other_way(tmp_path):
    means = {**MEAN, "pair_flip": 29.5, "mask_g1": 25.0}  # flip beats crop; mask below noise at gamma 1
    cost = {**COST, "table4_fid": {**COST["table4_fid"], "mask": 60.0}}
    got, _ = world_claims(tmp_path, means, cost=cost)
    assert got["G1"]["verdict"] == FAILS and got["G1"]["vs"] == "pair_flip"
    assert got["G14"]["verdict"] == FAILS and "gamma 1" in got["G14"]["reason"]
    assert got["G16"]["verdict"] == INCONCLUSIVE and got["G16"]["observed_direction"] == "opposite"


def test_times_from_different_cost_runs_are_not_compared(tmp_path):
    cost_dir = write_cost(tmp_path / "cost")
    noise = cost_dir / "rows" / "noise" / "table4_time_ms.json"  # the noise row timed by another run
    records.write(noise, dataclasses.replace(records.read(noise), provenance={"command": "another"}))
    files = report.load_cost({t: records.gather(cost_dir, None, f"{t}.json") for t in report.COST_TABLES}, "mini")
    runs = report.measuring_runs(files["table4_time_ms"])
    assert runs["noise"] != runs["mask"] == runs["crop"]
    times = {row: [v] for row, v in COST["table4_time_ms"].items()}
    ratios = report.time_ratios(times, runs)
    assert ratios["mask_over_crop"] == pytest.approx(100.0) and "mask_over_noise" not in ratios
    assert ratios["not_compared"].endswith(": noise")
    assert report.time_ratios(times)["mask_over_noise"] == pytest.approx(5.0)  # one run: every ratio
    found = evaluated(write_world(tmp_path / "eval"))
    values = {m: report.per_seed(found, m) for m in (*report.COLUMNS, *report.EXTRA_METRICS)}
    comparisons = report.compare_cost_tables(REPORTED, files, "mini", tmp_path / "out")
    got = {c["id"]: c for c in report.claims(values, report.cost_values(comparisons), load_reported(REPORTED), runs)}
    assert "different cost runs" in got["G18"]["caveat"] and "caveat" not in got["G18_crop"]


def test_missing_runs_and_single_seeds_leave_claims_inconclusive(tmp_path):
    means = {k: v for k, v in MEAN.items() if k not in ("mask_g0p5", "mask_genonly", "pair_crop")}
    found_dir = write_world(tmp_path / "eval", means)
    write_eval(found_dir, "mask_genonly", 0)  # one seed only
    found = evaluated(found_dir)
    values = {m: report.per_seed(found, m) for m in (*report.COLUMNS, *report.EXTRA_METRICS)}
    empty = {t: {} for t in report.COST_TABLES}
    got = {c["id"]: c for c in report.claims(values, empty, load_reported(REPORTED))}
    assert got["G15"]["verdict"] == INCONCLUSIVE and "fewer than 2 seeds" in got["G15"]["reason"]
    assert got["G2"]["verdict"] == INCONCLUSIVE and "not run: pair_crop" in got["G2"]["reason"]
    assert got["G1"]["verdict"] == INCONCLUSIVE and "not run" in got["G1"]["reason"]
    # "at every gamma" over the gammas that ran, the one left out named
    assert got["G14"]["verdict"] == HOLDS and "not run, left out: gamma 0.5" in got["G14"]["reason"]
    assert got["G14"]["not_run"] == ["gamma 0.5"]
    for id_ in ("G16", "G17", "G18"):
        assert got[id_]["verdict"] == INCONCLUSIVE and "not run" in got[id_]["reason"]


# ---------------------------------------------------------------- the augmentation grid

def augment_world(tmp_path, n_train=40, shuffle=False):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, (n_train, 3, 8, 8), dtype=np.uint8)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.savez(prepared / "train.npz", x=x, y=np.arange(n_train, dtype=np.int64) % 4, classes=np.array(list("abcd")))
    indices = np.array([37, 3, 12, 25, 8, 30, 1, 19, 22, 5, 14, 33], np.int64)  # not sorted: order matters
    save_indices(tmp_path / "ssl.npy", indices)
    sources = x[indices]
    for gen, made in (("mask", 255 - sources), ("noise", sources // 2)):
        order = np.roll(np.arange(len(indices)), 1) if shuffle and gen == "noise" else np.arange(len(indices))
        write_precomputed(tmp_path / "augment" / gen / f"{gen}.npy", made, sources[order])
    return prepared, tmp_path / "ssl.npy", tmp_path / "augment", x, indices


def test_the_grid_reads_rows_in_index_order(tmp_path):
    prepared, ssl, augment, x, indices = augment_world(tmp_path)
    originals, generated, positions = report.augmentation_rows(prepared, ssl, augment, n=4)
    assert positions.tolist() == [0, 4, 7, 11]
    assert np.array_equal(originals, x[indices[positions]])
    assert np.array_equal(generated["mask"], 255 - originals)
    assert np.array_equal(generated["noise"], originals // 2)
    fig = report.augmentations_figure(originals, generated, positions, "mini")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["original", "mask-based", "noise-based"]


def test_a_shuffled_augmentation_file_is_refused(tmp_path):
    prepared, ssl, augment, _, _ = augment_world(tmp_path, shuffle=True)
    with pytest.raises(ValueError, match="misaligned or shuffled"):
        report.augmentation_rows(prepared, ssl, augment, n=4)


def test_an_absent_augmentation_file_leaves_its_column_empty(tmp_path):
    prepared, ssl, augment, _, _ = augment_world(tmp_path)
    for suffix in (".npy", ".fingerprint.npy", ".meta.json"):
        (augment / "noise" / f"noise{suffix}").unlink()
    originals, generated, positions = report.augmentation_rows(prepared, ssl, augment, n=3)
    assert generated["noise"] is None and generated["mask"] is not None
    report.augmentations_figure(originals, generated, positions, "mini")


# ---------------------------------------------------------------- end to end

@pytest.fixture
def quick_figures(monkeypatch):
    """The shared reported-vs-reproduced figure (tested in tests/shared) as a stub: 23 tables x 0.6 s each."""
    from shared import report as shared_report

    def stub(c):
        fig, (ax,) = shared_report.figure(1, width=1.0, height=1.0)
        ax.set_title(c.table)
        return fig

    monkeypatch.setattr(shared_report, "reported_vs_reproduced", stub)
    monkeypatch.setattr(report, "reported_vs_reproduced", stub)


def test_report_end_to_end(tmp_path, capsys, quick_figures):
    outputs = tmp_path / "outputs"
    write_world(outputs / "eval")
    records.write(outputs / "eval" / "mask_genonly" / "seed3" / "metrics.json", records.MetricsRecord(
        paper="gencl", stage="evaluate", scale="mini", seed=3, skipped="seed 3 is not run at scale mini"))
    write_cost(outputs / "cost")
    records.write(outputs / "cost" / "metrics.json", records.MetricsRecord(  # the cost stage's flat record
        paper="gencl", stage="cost", scale="mini", seed=0, metrics={"ssim_mask": 0.3}))
    prepared, ssl, augment, _, _ = augment_world(tmp_path)
    (augment / "mask" / "grid.png").write_bytes(b"mask grid")
    records.write(outputs / "tokenizer" / "metrics.json", records.MetricsRecord(  # a generator stage's record
        paper="gencl", stage="tokenizer", scale="mini", seed=0, metrics={"psnr": 19.5}, extra={"steps": 1500}))
    (outputs / "tokenizer" / "recon.png").write_bytes(b"recon")
    (outputs / "tokenizer" / "sub").mkdir()  # only the stage folder's own record is read
    records.write(outputs / "tokenizer" / "sub" / "metrics.json", records.MetricsRecord(
        paper="gencl", stage="tokenizer", scale="smoke", seed=0, metrics={"psnr": 1.0}))
    out = tmp_path / "results" / "mini"
    argv = ["--reported", str(REPORTED), "--eval-dir", str(outputs / "eval"), "--cost-dir", str(outputs / "cost"),
            "--augment-dir", str(augment), "--generators-dir", str(outputs), "--prepared", str(prepared),
            "--indices", str(ssl), "--scale", "mini", "--out", str(out), "--allow-dirty"]
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert "claim (G14)" in printed and "table1_lin_top1" in printed
    for name in ("summary.json", "claims.json", "tables.md", "gamma.png", "pairings.png", "augmentations.png",
                 "mask_grid.png", "table1_semi1_top1_vs_reported.png", "table4_fid_vs_reported.png",
                 *(f"{t}.json" for t in (*report.EVAL_TABLES, *report.COST_TABLES))):
        assert (out / name).is_file(), name
    assert not (out / "noise_pairs.png").exists()  # the noise stage wrote no pairs.png here
    assert (out / "tokenizer_recon.png").read_bytes() == b"recon" and not (out / "icgan_neighbourhoods.png").exists()
    claims = load_claims(out / "claims.json")  # the scorecard's schema check
    assert claims["verdicts"]["G14"] == HOLDS and claims["semi_protocol"].startswith("linear probe")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table3_lin_top1"]["mask_g0"]["n"] == 3 and summary["semi_protocol"] == "linear_probe"
    assert summary["fid_metric"] == "fid_indomain" and summary["claims"]["G1"] == HOLDS
    assert summary["extra_rows"]["time_ratios"]["mask_over_noise"] == pytest.approx(5.0)
    assert summary["runs"]["baseline"]["knn_top1"]["mean"] == pytest.approx(28.0)
    assert summary["generators"] == {
        "tokenizer": {"metrics.json": {"stage": "tokenizer", "metrics": {"psnr": 19.5}, "steps": 1500}},
        "inpainter": {}, "icgan": {}}
    fid = json.loads((out / "table4_fid.json").read_text())
    assert fid["metric"] == "fid_indomain" and all(r["delta"] is None for r in fid["rows"])
    # every record read is committed under runs/, the skip marker's seed and the flat cost record are not
    assert (out / "runs" / "eval" / "baseline" / "seed2" / "metrics.json").is_file()
    assert not (out / "runs" / "eval" / "mask_genonly" / "seed3").exists()
    assert (out / "runs" / "cost" / "rows" / "mask" / "table4_fid.json").is_file()
    assert not (out / "runs" / "cost" / "metrics.json").exists()
    assert (out / "runs" / "generators" / "tokenizer" / "metrics.json").is_file()

    # the committed records alone give the same tables and verdicts; the grids stay
    tables = {t: json.loads((out / f"{t}.json").read_text())["rows"] for t in ("table2_lin_top1", "table4_ssim")}
    assert report.main(["--reported", str(REPORTED), "--scale", "mini", "--out", str(out), "--from-runs"]) == 0
    for t, rows in tables.items():
        assert json.loads((out / f"{t}.json").read_text())["rows"] == rows
    assert load_claims(out / "claims.json")["verdicts"] == claims["verdicts"]
    assert (out / "augmentations.png").is_file() and (out / "mask_grid.png").read_bytes() == b"mask grid"
    assert (out / "tokenizer_recon.png").read_bytes() == b"recon"
    assert json.loads((out / "summary.json").read_text())["generators"]["tokenizer"] == summary["generators"]["tokenizer"]


def test_report_needs_the_eval_records(tmp_path, capsys):
    assert report.main(["--reported", str(REPORTED), "--scale", "mini", "--out", str(tmp_path / "o")]) == 2
    assert "--eval-dir" in capsys.readouterr().err
