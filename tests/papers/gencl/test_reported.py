"""papers/gencl/reported.yaml: loads through the suite's loader; cells typed here from the paper
(../shared/papers/gencl.txt, Tables 1-4) match; Table 4's derived and unexplained cells are flagged."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.comparison import load_reported

REPORTED = Path(__file__).resolve().parents[3] / "papers" / "gencl" / "reported.yaml"
COLUMNS = ("lin_top1", "lin_top5", "semi1_top1", "semi10_top1", "semi1_top5", "semi10_top5")


@pytest.fixture(scope="module")
def doc():
    return load_reported(REPORTED)


def cell(doc, table: str, row: str) -> dict:
    rows = {r["id"]: r for r in doc["tables"][table]["rows"]}
    return rows[row]


def test_every_column_is_one_table(doc):
    expected = {f"table{t}_{c}" for t in (1, 2, 3) for c in COLUMNS}
    expected |= {f"table4_{c}" for c in ("lin_top1", "fid", "ssim", "time_ms", "params_m")}
    assert set(doc["tables"]) == expected
    assert doc["paper"] == "gencl"
    for name in expected - {"table4_params_m"}:
        assert len(doc["tables"][name]["rows"]) == {"1": 7, "2": 5, "3": 5, "4": 5}[name[5]], name


@pytest.mark.parametrize("table, row, value", [
    # typed from the paper's text, one or two cells per table and column
    ("table1_lin_top1", "crop", 62.8),
    ("table1_lin_top5", "greyscale", 77.3),
    ("table1_semi1_top1", "solarize", 32.9),
    ("table1_semi10_top5", "blur", 75.2),
    ("table2_lin_top1", "noise_g25", 66.3),
    ("table2_semi10_top1", "noise_g50", 60.5),
    ("table2_semi1_top5", "noise_g100", 68.3),
    ("table3_lin_top1", "mask_g50", 68.5),
    ("table3_lin_top5", "mask_g75", 88.4),
    ("table3_semi1_top1", "mask_g100", 48.5),
    ("table3_semi10_top5", "mask_g25", 85.3),
    ("table4_lin_top1", "mask", 67.8),
    ("table4_lin_top1", "blur", 6.5),
    ("table4_fid", "noise", 21.13),
    ("table4_fid", "jitter", 0.23),
    ("table4_ssim", "mask", 0.32),
    ("table4_ssim", "blur", 0.88),
    ("table4_time_ms", "mask", 98.93),
    ("table4_time_ms", "crop", 0.58),
    ("table4_params_m", "noise", 116),
    ("table4_params_m", "mask", 227),
])
def test_cells_as_printed(doc, table, row, value):
    assert cell(doc, table, row)["mean"] == value


def test_tables_2_and_3_share_the_baseline_row(doc):
    for c in COLUMNS:
        assert cell(doc, f"table2_{c}", "noise_g0")["mean"] == cell(doc, f"table3_{c}", "mask_g0")["mean"]


def test_table4_noise_equals_table1_generative(doc):
    assert cell(doc, "table4_lin_top1", "noise")["mean"] == cell(doc, "table1_lin_top1", "generative")["mean"] == 54.4


def test_derived_cells_are_flagged(doc):
    for row in ("crop", "jitter", "blur"):
        note = cell(doc, "table4_lin_top1", row)["note"]
        assert note is not None and "derived" in note and "not measured" in note
    for row in ("noise", "mask"):
        assert "derived" not in (cell(doc, "table4_lin_top1", row)["note"] or "")
    # no other table has a derived cell
    for name, table in doc["tables"].items():
        if name != "table4_lin_top1":
            assert not any("derived" in (r["note"] or "") for r in table["rows"]), name


def test_mask_67_8_is_noted_and_in_no_table3_cell(doc):
    note = cell(doc, "table4_lin_top1", "mask")["note"]
    assert "no Table 3 cell" in note
    assert 67.8 not in {r["mean"] for r in doc["tables"]["table3_lin_top1"]["rows"]}


def test_parameters_only_for_the_generators(doc):
    # crop / jitter / blur print N/A: absent rows, not zeros
    assert [r["id"] for r in doc["tables"]["table4_params_m"]["rows"]] == ["noise", "mask"]
    assert doc["tables"]["table4_fid"]["metric"] == "fid_inception"
