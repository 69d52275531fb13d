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

ALPHA = {  # the shape gan_simclr's report stage writes, plus the optional `reported`
    "paper": "alpha", "scale": "mini", "note": "rules are the suite's",
    "command": "papers/alpha/report.py --scale mini", "commit": "abc123",
    "claims": [
        {"id": "a", "claim": "more fakes help", "source": "Sec. 5.1", "data": "table1 rows",
         "rule": "holds if mean(10) - mean(0) > combined std",
         "numbers": {"0": {"mean": 34.1049, "std": 0.3465, "n": 2},
                     "10": {"mean": 36.605, "std": 0.0849, "n": 2}},
         "difference": 2.5, "verdict": "holds", "reason": "+2.50 > 0.36",
         "reported": "64.86 -> 70.323"},
        {"id": "b", "claim": "A | B is best", "source": "Fig. 4",
         "numbers": {"0": {"mean": 40.0, "std": None, "n": 1}, "5": {"mean": 41.0, "std": 1.0, "n": 3},
                     "10": None},
         "verdict": "inconclusive", "reported": {"0": 75.51, "5": {"mean": 76.7, "std": 0.29}}},
    ],
}
BETA = {"paper": "beta", "scale": "paper",
        "claims": [{"id": "t1", "claim": "ContraD lowers FID", "verdict": "does not hold",
                    "numbers": {"fid": 12.0}}]}

EXPECTED = """\
| paper | claim | reported | reproduced (scale, seeds) | verdict | rule |
|---|---|---|---|---|---|
| alpha | (a) more fakes help | 64.86 -> 70.323 | table1 rows: 0: 34.10 ± 0.35; 10: 36.60 ± 0.085 (mini, n=2 seeds) | **holds** at mini: +2.50 > 0.36 | holds if mean(10) - mean(0) > combined std |
| alpha | (b) A \\| B is best | 0: 75.51; 5: 76.70 ± 0.29 | 0: 40.00 (n=1); 5: 41.00 ± 1.00 (n=3); 10: not run (mini) | **inconclusive** at mini |  |
| beta | (t1) ContraD lowers FID | not given | fid: 12.00 (paper) | **does not hold** at paper |  |

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
             "numbers": {}, "verdict": "inconclusive"}
    path = write_claims(tmp_path, {"paper": "alpha", "scale": "paper", "claims": [claim]})
    row = scorecard([path], tmp_path).splitlines()[2]
    assert row == ("| alpha | (c) baseline best at equal compute | stated in Sec. 5.2; Figure 4 caption "
                   "| (paper) | **inconclusive** at paper |  |")


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["claims"][0].update(verdict="holds at mini"), "claims[0].verdict"),
    (lambda d: d["claims"][0].pop("claim"), "claims[0].claim"),
    (lambda d: d["claims"].append(dict(d["claims"][0])), "claims[2].id"),
    (lambda d: d.update(scale="huge"), "scale"),
    (lambda d: d["claims"][1].update(reported=75.5), "claims[1].reported"),
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
