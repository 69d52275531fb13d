"""GenCL's run registry against the tables as printed (wave-2 spec 1.A)."""
import pytest

from papers.gencl import runs
from papers.gencl.runs import RUN_NAMES, RUNS, Run, get_run, runs_of

# Row labels as printed in the paper's tables (spec 1.A), transcribed here independently of runs.py.
TABLE1 = ["Generative", "Crop + Generative", "Flip + Generative", "Solarization + Generative",
          "Color Jitter + Generative", "Gaussian Blur + Generative", "Greyscale + Generative"]
GAMMA_ROWS = ["0%", "25%", "50%", "75%", "100%"]
TABLE4_RUNS = ["Noise-Based", "Mask-Based"]  # Crop / Color Jitter / Gaussian Blur are derived (dagger): no run


def test_names_are_unique_and_one_run_per_name():
    assert len(RUN_NAMES) == len(set(RUN_NAMES)) == len(RUNS) == 17  # spec 1.D: 17 configs
    assert all(RUNS[n].name == n for n in RUN_NAMES)
    assert RUN_NAMES[0] == "baseline"


def test_every_printed_row_has_exactly_one_run():
    for table, labels in (("table1", TABLE1), ("table2", GAMMA_ROWS), ("table3", GAMMA_ROWS),
                          ("table4", TABLE4_RUNS)):
        filled = [r.row(table) for r in runs_of(table)]
        assert sorted(filled) == sorted(labels), table


def test_the_cells_mean_what_the_tables_say():
    base = get_run("baseline")
    assert (base.generator, base.gamma, base.policy) == ("none", 0.0, "vicreg")
    assert base.row("table2") == base.row("table3") == "0%"  # one shared baseline run
    for r in runs_of("table1"):  # every pairing: noise-based, gamma 100%, one family or none
        assert (r.generator, r.gamma, r.policy) == ("noise", 1.0, "pairwise")
    assert get_run("pair_generative").ops == () and get_run("pair_crop").ops == ("crop",)
    assert get_run("pair_solarize").ops == ("solarize",) and get_run("pair_grayscale").ops == ("grayscale",)
    assert get_run("pair_generative").row("table4") == "Noise-Based"  # 54.4 in both tables (claim G21)
    for generator, table in (("noise", "table2"), ("mask", "table3")):
        for gamma, label in zip((0.25, 0.5, 0.75, 1.0), GAMMA_ROWS[1:]):
            name = f"{generator}_g{gamma:g}".replace(".", "p")
            r = get_run(name)
            assert (r.generator, r.gamma, r.policy, r.row(table)) == (generator, gamma, "vicreg", label)
    genonly = get_run("mask_genonly")
    assert (genonly.generator, genonly.gamma, genonly.policy, genonly.ops) == ("mask", 1.0, "pairwise", ())
    assert genonly.row("table4") == "Mask-Based"


def test_generated_ops_are_t_g():
    assert set(runs.GENERATED_OPS) == {"crop", "flip", "solarize", "jitter"}


def test_unknown_names_and_bad_runs_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"unknown GenCL run 'pair_cutout'.*baseline"):
        get_run("pair_cutout")
    with pytest.raises(KeyError, match="fills no row of table1"):
        get_run("baseline").row("table1")
    with pytest.raises(ValueError, match="gamma > 0 needs a generator"):
        Run("x", (), "none", 0.5, "vicreg")
    with pytest.raises(ValueError, match="pairwise run has gamma 1"):
        Run("x", (), "noise", 0.5, "pairwise", ("crop",))
    with pytest.raises(ValueError, match="unknown table"):
        Run("x", (("table9", "a"),), "noise", 1.0, "vicreg")
