"""shared.scorecard: the claims table against hand-written expected tables, the README markers, and
--check on the repository's own README (it must match the committed results)."""
import json
import os
import re
from pathlib import Path

import pytest

from shared.scorecard import END, START, load_claims, main, scorecard, splice
from shared.comparison import SchemaError

from shared.config import REPO_ROOT

REPO = REPO_ROOT

ALPHA = {  # the shape gan_simclr's report stage writes (shared.claims), plus the optional `reported`
    "paper": "alpha", "scale": "mini", "note": "rules are the suite's",
    "command": "papers/alpha/report.py --scale mini", "commit": "abc123",
    "claims": [
        {"id": "a", "claim": "more fakes help", "source": "Sec. 5.1", "data": "table1 rows",
         "test": "one-sided OLS slope t-test", "alpha": 0.05, "rule": "slope > 0 at p < 0.05",
         "n": {"0": 2, "10": 2}, "values": {"0": [33.86, 34.35], "10": [36.545, 36.665]},
         "numbers": {"0": {"mean": 34.1049, "std": 0.3465, "n": 2},
                     "10": {"mean": 36.605, "std": 0.0849, "n": 2}},
         "estimate": "OLS slope per 1000 fakes", "slope": 0.25, "ci95": [0.2, 0.3], "df": 2.0,
         "p": 0.0004, "p_opposite": 0.9996, "verdict": "holds", "reason": "slope +0.25, p = 0.0004",
         "reported": "64.86 -> 70.323"},
        {"id": "b", "claim": "A | B is best", "source": "Fig. 4", "test": "Welch, Holm", "alpha": 0.05,
         "n": {"0": 1, "5": 3, "10": 0}, "values": {"0": [40.0], "5": [40.0, 41.0, 42.0], "10": []},
         "numbers": {"0": {"mean": 40.0, "std": None, "n": 1}, "5": {"mean": 41.0, "std": 1.0, "n": 3},
                     "10": None},
         "difference": None, "ci95": None, "p": None, "p_adjusted": None,
         "verdict": "inconclusive", "reported": {"0": 75.51, "5": {"mean": 76.7, "std": 0.29}}},
    ],
}
BETA = {"paper": "beta", "scale": "paper",
        "claims": [{"id": "t1", "claim": "ContraD lowers FID", "verdict": "does not hold",
                    "test": "one-sided Welch t-test", "alpha": 0.05,
                    "n": {"contrad": 3, "baseline": 3},
                    "values": {"contrad": [12.0, 13.0, 14.0], "baseline": [9.0, 10.0, 11.0]},
                    "numbers": {"contrad": 13.0, "baseline": 10.0},
                    "estimate": "mean(contrad) - mean(baseline)", "difference": 3.0, "ci95": [0.73, 5.27],
                    "p": 0.9945, "p_opposite": 0.0055}]}

EXPECTED = """\
| paper | claim | reported | reproduced (scale, seeds) | effect (95% CI), p | verdict | test |
|---|---|---|---|---|---|---|
| alpha | (a) more fakes help | 64.86 -> 70.323 | table1 rows: 0: 34.10 ± 0.35; 10: 36.60 ± 0.085 (mini, n=2 seeds) | OLS slope per 1000 fakes = +0.25 (95% CI +0.20 to +0.30), p = 0.0004 | **holds** at mini: slope +0.25, p = 0.0004 | one-sided OLS slope t-test, alpha 0.05 |
| alpha | (b) A \\| B is best | 0: 75.51; 5: 76.70 ± 0.29 | 0: 40.00 (n=1); 5: 41.00 ± 1.00 (n=3); 10: not run (mini) | not tested | **inconclusive** at mini | Welch, Holm, alpha 0.05 |
| beta | (t1) ContraD lowers FID | not given | contrad: 13.00; baseline: 10.00 (paper, n=3 seeds) | mean(contrad) - mean(baseline) = +3.00 (95% CI +0.73 to +5.27), p = 0.99; opposite direction p = 0.0055 | **does not hold** at paper | one-sided Welch t-test, alpha 0.05 |

- `papers/alpha/results/mini/claims.json` (alpha, scale mini), made by `papers/alpha/report.py --scale mini` at commit `abc123`. rules are the suite's.
- `papers/beta/results/paper/claims.json` (beta, scale paper).
"""


def write_claims(root: Path, doc: dict) -> Path:
    path = root / "papers" / doc["paper"] / "results" / doc["scale"] / "claims.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    write_claims(tmp_path, ALPHA)
    write_claims(tmp_path, BETA)
    (tmp_path / "papers" / "alpha" / "results" / "mini" / "table1.md").write_text("ignored")
    return tmp_path


def readme(root: Path, body: str = "old digest\n") -> Path:
    path = root / "README.md"
    path.write_text(f"# Suite\n\n## Results so far\n\n{START}\n{body}{END}\n\n## After\n")
    return path


def test_scorecard_matches_hand_written_table(root):
    files = [root / "papers/alpha/results/mini/claims.json", root / "papers/beta/results/paper/claims.json"]
    assert scorecard(files, root) == EXPECTED


def test_reported_falls_back_to_where_the_paper_states_it(tmp_path):
    claim = {"id": "c", "claim": "baseline best at equal compute", "source": "Sec. 5.2; Figure 4 caption",
             "numbers": {}, "verdict": "inconclusive", "test": "Welch, Holm", "alpha": 0.05, "n": {}, "values": {},
             "difference": None, "ci95": None, "p": None}
    path = write_claims(tmp_path, {"paper": "alpha", "scale": "paper", "claims": [claim]})
    row = scorecard([path], tmp_path).splitlines()[2]
    assert row == ("| alpha | (c) baseline best at equal compute | stated in Sec. 5.2; Figure 4 caption "
                   "| (paper) | not tested | **inconclusive** at paper | Welch, Holm, alpha 0.05 |")


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["claims"][0].update(verdict="holds at mini"), "claims[0].verdict"),
    (lambda d: d["claims"][0].pop("claim"), "claims[0].claim"),
    (lambda d: d["claims"].append(dict(d["claims"][0])), "claims[2].id"),
    (lambda d: d.update(scale="huge"), "scale"),
    (lambda d: d["claims"][1].update(reported=75.5), "claims[1].reported"),
    # the test's fields (shared.claims) are required and checked
    (lambda d: d["claims"][0].pop("test"), "claims[0].test"),
    (lambda d: d["claims"][0].update(alpha=5), "claims[0].alpha"),
    (lambda d: d["claims"][0].update(n={"0": 2, "10": -1}), "claims[0].n"),
    (lambda d: d["claims"][0]["values"].pop("10"), "claims[0].values"),
    (lambda d: d["claims"][0]["values"].update({"10": [36.5]}), "claims[0].values.10"),
    (lambda d: d["claims"][0].pop("slope"), "claims[0].difference"),  # neither difference nor slope
    (lambda d: d["claims"][0].update(difference=1.0), "claims[0].difference"),  # both
    (lambda d: d["claims"][0].update(ci95=[0.3, 0.2]), "claims[0].ci95"),
    (lambda d: d["claims"][0].pop("p"), "claims[0].p"),
    (lambda d: d["claims"][0].update(p=1.5), "claims[0].p"),
    (lambda d: d["claims"][1].update(p_adjusted="0.01"), "claims[1].p_adjusted"),
    (lambda d: d["claims"][1].update(verdict="holds"), "claims[1].p"),  # a verdict needs its p and CI
])
def test_load_claims_names_file_and_key(tmp_path, edit, key):
    doc = json.loads(json.dumps(ALPHA))
    edit(doc)
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=re.escape(f"claims.json: {key}:")):
        load_claims(path)


def test_write_is_idempotent_and_check_sees_changes(root, capsys):
    target = readme(root)
    args = ["--root", str(root)]
    assert main(["--check", str(target), *args]) == 1  # the hand-written digest is out of date
    assert main(["--write", str(target), *args]) == 0
    text = target.read_text()
    assert text.startswith("# Suite\n\n## Results so far\n\n" + START + "\n<!-- made by")
    assert text.endswith(EXPECTED + END + "\n\n## After\n")
    os.utime(target, (0, 0))
    assert main(["--write", str(target), *args]) == 0  # unchanged: not rewritten
    assert target.read_text() == text and target.stat().st_mtime == 0
    assert main(["--check", str(target), *args]) == 0
    write_claims(root, {**BETA, "claims": [{**BETA["claims"][0], "verdict": "holds"}]})
    capsys.readouterr()
    assert main(["--check", str(target), *args]) == 1
    assert "out of date" in capsys.readouterr().err


def test_missing_or_doubled_markers_are_errors(root, capsys):
    target = root / "README.md"
    target.write_text("# Suite\nno markers\n")
    assert main(["--write", str(target), "--root", str(root)]) == 2
    assert "needs exactly one" in capsys.readouterr().err and target.read_text() == "# Suite\nno markers\n"
    with pytest.raises(ValueError, match="comes before"):
        splice(f"{END}\n{START}\n", "x\n")
    with pytest.raises(ValueError, match="found 2 and 1"):
        splice(f"{START}\n{START}\n{END}\n", "x\n")


def test_repository_readme_scorecard_is_up_to_date():
    """The README's scorecard is what the committed claims.json files give; if this fails, run
    `python -m shared.scorecard --write README.md`."""
    assert main(["--check", str(REPO / "README.md")]) == 0


def test_local_smoke_results_never_reach_the_scorecard(root, capsys):
    target = readme(root)
    assert main(["--write", str(target), "--root", str(root)]) == 0
    write_claims(root, {**BETA, "paper": "gamma", "scale": "smoke"})  # a smoke run's results, left locally
    assert main(["--check", str(target), "--root", str(root)]) == 0
    assert "gamma" not in target.read_text()


def test_block_links_each_results_folders_figures(root):
    """After the table, a line per committed results folder with PNGs: relative links from the README,
    the reported-vs-reproduced figures first; smoke folders and folders without figures left out."""
    mini, paper = root / "papers/alpha/results/mini", root / "papers/beta/results/paper"
    for name in ("figure3.png", "table1_vs_reported.png", "gan samples.png"):
        (mini / name).write_bytes(b"\x89PNG")
    smoke = root / "papers/alpha/results/smoke"
    smoke.mkdir()
    (smoke / "table1_vs_reported.png").write_bytes(b"\x89PNG")
    assert not list(paper.glob("*.png"))
    target = readme(root)
    assert main(["--write", str(target), "--root", str(root)]) == 0
    text = target.read_text()
    assert text.endswith(EXPECTED + "\nFigures:\n\n- `papers/alpha/results/mini`: "
                         "[table1_vs_reported](papers/alpha/results/mini/table1_vs_reported.png) · "
                         "[figure3](papers/alpha/results/mini/figure3.png) · "
                         "[gan samples](papers/alpha/results/mini/gan%20samples.png)\n" + END + "\n\n## After\n")
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (root / link.replace("%20", " ")).is_file(), link  # resolves from the README's folder


def test_a_first_rule_file_is_read_and_marked_superseded(tmp_path):
    """claims.json written before the standard tests (no test fields): shown, its verdict kept, its
    rule marked superseded; one claim with a test makes the whole file strict again."""
    old = {"paper": "alpha", "scale": "mini", "claims": [
        {"id": "a", "claim": "more fakes help", "verdict": "holds", "rule": "beyond the combined std",
         "numbers": {"0": {"mean": 34.1, "std": 0.35, "n": 2}, "10": {"mean": 36.6, "std": 0.39, "n": 2}},
         "reason": "monotone, and +2.50 > 0.52"}]}
    path = tmp_path / "papers/alpha/results/mini/claims.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old))
    assert load_claims(path)["legacy"] is True
    row = next(line for line in scorecard([path], tmp_path).splitlines() if line.startswith("| alpha"))
    assert "**holds** at mini" in row and "superseded" in row and "not tested (first rule)" in row
    old["claims"].append({**json.loads(json.dumps(ALPHA))["claims"][0], "id": "b"})
    old["claims"][0]["verdict"] = "holds"
    path.write_text(json.dumps(old))
    with pytest.raises(SchemaError, match=re.escape("claims.json: claims[0].test:")):
        load_claims(path)
