"""The claims scorecard: every paper's claims and verdicts, from its committed results, in one table.

    python -m shared.scorecard                     # print the table
    python -m shared.scorecard --write README.md   # put it between the README's markers
    python -m shared.scorecard --check README.md   # exit 1 if the README's copy is out of date

Reads every `papers/<paper>/results/<scale>/claims.json`, as a paper's report stage writes it
(the claim's test and its fields: shared.claims):

    {"paper": str, "scale": str, "claims": [claim, ...], "note"?: str, "command"?: str, "commit"?: str}
    claim: {"id": str, "claim": str, "verdict": "holds" | "does not hold" | "inconclusive",
            "test": str, "alpha": number in (0, 1), "n": {setup: int >= 0},
            "values": {setup: [number, ...]} (n[setup] per-seed values, the same setups as n),
            "difference" | "slope": number | null (exactly one of the two), "ci95": [low, high] | null,
            "p": number in [0, 1] | null, "p_opposite"? / "p_adjusted"? / "p_opposite_adjusted"?: the same,
            "df"?: number | null, "estimate"?: str | null, "vs"?: str | null, "comparisons"?: list,
            "source"?: str, "data"?: str, "rule"?: str, "reason"?: str,
            "numbers"?: {setup: {"mean", "std", "n"} | number | null},
            "reported"?: str | {setup: number | {"mean", "std"}}}

A verdict other than "inconclusive" must carry its p and CI.

A file with neither the top-level ``statistics`` key nor a ``test`` in any claim was written under
the suite's first rule (a
difference beyond the combined seed std, before the standard tests): it is read with the claim's
first-rule fields only, marked ``legacy``, and its rows say the rule is superseded and the re-run
with the tests is pending. Its verdicts are shown, never re-labelled.

`reported` (optional) is what the paper reports for the claim; a report stage that can derive it
from its reported.yaml should write it. Without it the column says where the paper states the
claim ("stated in <source>"). Other keys are allowed and ignored. The table is written between
`<!-- scorecard:start -->` and `<!-- scorecard:end -->`; nothing in it is typed by hand (STYLE 8).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.claims import INCONCLUSIVE, VERDICTS, effect_text
from shared.comparison import RESULTS, SchemaError, display_path, format_number, results_dirs
from shared.config import REPO_ROOT, SCALES
from shared.io import atomic_write_text

START, END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
COMMAND = "python -m shared.scorecard --write README.md"
COLUMNS = ("paper", "claim", "reported", "reproduced (scale, seeds)", "effect (95% CI), p", "verdict", "test")


def _require(cond: bool, where: Path | str, key: str, message: str) -> None:
    if not cond:
        raise SchemaError(f"{where}: {key}: {message}")


def load_claims(path: str | Path) -> dict:
    """Read and check a claims.json; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"claims file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not JSON: {e}") from e
    _require(isinstance(doc, dict), path, "<top>", "expected a mapping")
    for key in ("paper", "scale"):
        _require(isinstance(doc.get(key), str), path, key, f"expected a string, got {doc.get(key)!r}")
    _require(doc["scale"] in SCALES, path, "scale", f"{doc['scale']!r} is not one of {SCALES}")
    _require(isinstance(doc.get("claims"), list), path, "claims", "expected a list")
    # the first rule's file (see the module's docstring): no test named anywhere in it
    legacy = "statistics" not in doc and not any(isinstance(c, dict) and "test" in c for c in doc["claims"])
    seen = set()
    for i, claim in enumerate(doc["claims"]):
        at = f"claims[{i}]"
        _require(isinstance(claim, dict), path, at, "expected a mapping")
        for key in ("id", "claim", "verdict"):
            _require(isinstance(claim.get(key), str), path, f"{at}.{key}",
                     f"expected a string, got {claim.get(key)!r}")
        _require(claim["id"] not in seen, path, f"{at}.id", f"repeats {claim['id']!r}")
        seen.add(claim["id"])
        _require(claim["verdict"] in VERDICTS, path, f"{at}.verdict",
                 f"{claim['verdict']!r} is not one of {VERDICTS}")
        for key in ("source", "data", "rule", "reason"):
            _require(claim.get(key) is None or isinstance(claim[key], str), path, f"{at}.{key}",
                     f"expected a string, got {claim.get(key)!r}")
        for key in ("numbers", "reported"):
            kinds = (dict,) if key == "numbers" else (dict, str)
            _require(claim.get(key) is None or isinstance(claim[key], kinds), path, f"{at}.{key}",
                     f"expected {' or '.join(k.__name__ for k in kinds)}, got {claim.get(key)!r}")
        if not legacy:
            _check_statistics(claim, path, at)
    doc["legacy"] = legacy
    return doc


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_statistics(claim: dict, path: Path, at: str) -> None:
    """The test's fields of one claim (shared.claims): present, typed, and consistent with the verdict."""
    _require(isinstance(claim.get("test"), str), path, f"{at}.test", f"expected a string, got {claim.get('test')!r}")
    alpha = claim.get("alpha")
    _require(_number(alpha) and 0 < alpha < 1, path, f"{at}.alpha", f"expected a number in (0, 1), got {alpha!r}")
    n, values = claim.get("n"), claim.get("values")
    _require(isinstance(n, dict) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                         for v in n.values()),
             path, f"{at}.n", f"expected {{setup: seeds >= 0}}, got {n!r}")
    _require(isinstance(values, dict) and set(values) == set(n), path, f"{at}.values",
             f"expected per-seed values for the setups of n {sorted(n)}, got {values!r}")
    for setup, xs in values.items():
        _require(isinstance(xs, list) and all(_number(x) for x in xs) and len(xs) == n[setup], path,
                 f"{at}.values.{setup}", f"expected {n[setup]} numbers, got {xs!r}")
    effects = [key for key in ("difference", "slope") if key in claim]
    _require(len(effects) == 1, path, f"{at}.difference", f"expected exactly one of difference / slope, got {effects}")
    _require(claim[effects[0]] is None or _number(claim[effects[0]]), path, f"{at}.{effects[0]}",
             f"expected a number or null, got {claim[effects[0]]!r}")
    _require("ci95" in claim and "p" in claim, path, f"{at}.{'p' if 'ci95' in claim else 'ci95'}", "missing")
    ci = claim["ci95"]
    _require(ci is None or (isinstance(ci, list) and len(ci) == 2 and all(map(_number, ci)) and ci[0] <= ci[1]),
             path, f"{at}.ci95", f"expected [low, high] or null, got {ci!r}")
    for key in ("p", "p_opposite", "p_adjusted", "p_opposite_adjusted"):
        value = claim.get(key)
        _require(value is None or (_number(value) and 0 <= value <= 1), path, f"{at}.{key}",
                 f"expected a probability or null, got {value!r}")
    for key, ok in (("df", _number), ("estimate", lambda v: isinstance(v, str)), ("vs", lambda v: isinstance(v, str)),
                    ("comparisons", lambda v: isinstance(v, list))):
        _require(claim.get(key) is None or ok(claim[key]), path, f"{at}.{key}", f"unexpected value {claim.get(key)!r}")
    if claim["verdict"] != INCONCLUSIVE:
        _require(claim["p"] is not None and ci is not None, path, f"{at}.p",
                 f"a verdict {claim['verdict']!r} needs its p and 95% CI")


# ---------------------------------------------------------------- cells

def _cell(text: str) -> str:
    """One line of Markdown table cell: pipes escaped, whitespace folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(entry: Any) -> tuple[str, int | None]:
    """A setup's number as text, and its seed count where known."""
    if entry is None:
        return "not run", None
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return format_number(entry), None
    if isinstance(entry, dict) and "mean" in entry:
        if entry["mean"] is None:
            return "not run", None
        text = format_number(entry["mean"])
        if entry.get("std") is not None:
            text += f" ± {format_number(entry['std'])}"
        return text, entry.get("n")
    return str(entry), None


def _setups(numbers: dict, n: dict | None = None) -> tuple[str, set[int]]:
    """"setup: value; ..." and the seed counts seen (``n`` where given); where the counts differ each
    setup shows its n."""
    values = [(setup, text, (n or {}).get(setup, count)) for setup, entry in numbers.items()
              for text, count in [_value(entry)]]
    ns = {n for _, _, n in values if n is not None}
    each = len(ns) > 1
    return "; ".join(f"{setup}: {text}" + (f" (n={n})" if each and n is not None and text != "not run" else "")
                     for setup, text, n in values), ns


def reported_cell(claim: dict) -> str:
    reported = claim.get("reported")
    if isinstance(reported, str):
        return reported
    if isinstance(reported, dict):
        return _setups(reported)[0]
    return f"stated in {claim['source']}" if claim.get("source") else "not given"


def reproduced_cell(claim: dict, scale: str) -> str:
    numbers = claim.get("numbers") or {}
    if not numbers:
        return f"({scale})"
    text, ns = _setups(numbers, claim.get("n"))
    seeds = f", n={ns.pop()} seeds" if len(ns) == 1 else ""
    data = f"{claim['data']}: " if claim.get("data") else ""
    return f"{data}{text} ({scale}{seeds})"


LEGACY_TEST = "combined-std rule (superseded; re-run with the standard tests pending)"


def statistics_cell(claim: dict) -> str:
    """The effect with its 95% CI and p (shared.claims.effect_text); a first-rule claim has none."""
    return effect_text(claim) if "test" in claim else "not tested (first rule)"


def verdict_cell(claim: dict, scale: str) -> str:
    reason = f": {claim['reason']}" if claim.get("reason") else ""
    return f"**{claim['verdict']}** at {scale}{reason}"


# ---------------------------------------------------------------- the table

def scorecard(claims_files: Iterable[str | Path], root: str | Path | None = None) -> str:
    """The Markdown table of every claim in `claims_files`, then the file, command and commit
    each came from (paths shown relative to `root`, default: the repository)."""
    docs = [(Path(f), load_claims(f)) for f in claims_files]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, doc in docs:
        for c in doc["claims"]:
            test = LEGACY_TEST if doc["legacy"] else f"{c['test']}, alpha {c['alpha']:g}"
            cells = [doc["paper"], f"({c['id']}) {c['claim']}", reported_cell(c),
                     reproduced_cell(c, doc["scale"]), statistics_cell(c), verdict_cell(c, doc["scale"]), test]
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    if not docs:
        lines.append("| " + " | ".join(["no committed claims yet", *[""] * (len(COLUMNS) - 1)]) + " |")
    lines.append("")
    for path, doc in docs:
        made = f", made by `{doc['command']}`" if doc.get("command") else ""
        commit = f" at commit `{doc['commit']}`" if doc.get("commit") else ""
        note = f" {doc['note'].rstrip('.')}." if doc.get("note") else ""
        lines.append(f"- `{display_path(path, root)}` ({doc['paper']}, scale {doc['scale']})"
                     f"{made}{commit}.{note}")
    return "\n".join(lines) + "\n"


def claims_files(patterns: Iterable[str] = RESULTS, root: str | Path | None = None) -> list[Path]:
    """Every `<results>/<scale>/claims.json` of a committed scale (mini, paper; see
    shared.comparison.results_dirs), papers in name order, then scales in order."""
    return [d / "claims.json" for d in results_dirs(patterns, root) if (d / "claims.json").is_file()]


def figure_links(patterns: Iterable[str] = RESULTS, root: str | Path | None = None) -> str:
    """A line per committed results folder that holds figures: links to its PNGs, relative to `root`
    (default: the repository, where README.md lies), each table's reported-vs-reproduced figure first."""
    lines = []
    for folder in results_dirs(patterns, root):
        pngs = sorted(folder.glob("*.png"), key=lambda p: (not p.stem.endswith("_vs_reported"), p.name))
        if pngs:
            links = " · ".join(f"[{p.stem}]({quote(display_path(p, root))})" for p in pngs)
            lines.append(f"- `{display_path(folder, root)}`: {links}")
    return "\nFigures:\n\n" + "\n".join(lines) + "\n" if lines else ""


def block(patterns: Iterable[str] = RESULTS, root: str | Path | None = None) -> str:
    """What goes between the markers: a do-not-edit line, the scorecard and the figures' links."""
    return (f"<!-- made by `{COMMAND}` from papers/*/results/<scale>/claims.json; "
            "do not edit by hand -->\n" + scorecard(claims_files(patterns, root), root)
            + figure_links(patterns, root))


def _markers(text: str, where: str) -> tuple[int, int]:
    """Where the block starts (just after START's line) and ends (at END)."""
    starts, ends = text.count(START), text.count(END)
    if starts != 1 or ends != 1:
        raise ValueError(f"{where}: needs exactly one {START} and one {END} line "
                         f"(found {starts} and {ends})")
    start, end = text.index(START) + len(START), text.index(END)
    if end < start:
        raise ValueError(f"{where}: {END} comes before {START}")
    return start, end


def splice(text: str, new_block: str, where: str = "<text>") -> str:
    """`text` with what lies between the markers replaced by `new_block`."""
    start, end = _markers(text, where)
    return text[:start] + "\n" + new_block + text[end:]


def current(text: str, where: str = "<text>") -> str:
    """What lies between the markers now (as `splice` puts it)."""
    start, end = _markers(text, where)
    return text[start:end].removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.scorecard", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", type=Path, metavar="README", help="replace the block between the markers")
    mode.add_argument("--check", type=Path, metavar="README",
                      help="exit 1 if the block between the markers is not what --write would write")
    parser.add_argument("--results", nargs="+", default=list(RESULTS),
                        help="results folders or globs, relative to --root (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="default: the repository")
    args = parser.parse_args(argv)
    try:
        new = block(args.results, args.root)
        target = args.write or args.check
        if target is None:
            print(new, end="")
            return 0
        if not target.is_file():
            raise FileNotFoundError(f"{target} not found")
        text = target.read_text()
        if args.check:
            if current(text, str(target)) != new:
                print(f"{target}: the scorecard is out of date; run `{COMMAND}`", file=sys.stderr)
                return 1
            print(f"{target}: the scorecard is up to date")
            return 0
        updated = splice(text, new, str(target))
        if updated != text:  # unchanged: leave the file (and its mtime) alone
            atomic_write_text(target, updated)
        print(f"{target}: scorecard {'written' if updated != text else 'already up to date'}")
        return 0
    except (FileNotFoundError, ValueError) as err:  # SchemaError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
