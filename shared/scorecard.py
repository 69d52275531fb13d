"""The claims scorecard: every paper's claims and verdicts, from its committed results, in one table.

    python -m shared.scorecard                     # print the table
    python -m shared.scorecard --write README.md   # put it between the README's markers
    python -m shared.scorecard --check README.md   # exit 1 if the README's copy is out of date

Reads every `papers/<paper>/results/<scale>/claims.json`, as a paper's report stage writes it:

    {"paper": str, "scale": str, "claims": [claim, ...], "note"?: str, "command"?: str, "commit"?: str}
    claim: {"id": str, "claim": str, "verdict": "holds" | "does not hold" | "inconclusive",
            "source"?: str, "data"?: str, "rule"?: str, "reason"?: str,
            "numbers"?: {setup: {"mean", "std", "n"} | number | null},
            "reported"?: str | {setup: number | {"mean", "std"}}}

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

from shared.claims import VERDICTS
from shared.comparison import RESULTS, SchemaError, display_path, format_number, results_dirs
from shared.config import REPO_ROOT, SCALES
from shared.io import atomic_write_text

START, END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
COMMAND = "python -m shared.scorecard --write README.md"
COLUMNS = ("paper", "claim", "reported", "reproduced (scale, seeds)", "verdict", "rule")


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
    return doc


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


def _setups(numbers: dict) -> tuple[str, set[int]]:
    """"setup: value; ..." and the seed counts seen; where the counts differ each setup shows its n."""
    values = [(setup, *_value(entry)) for setup, entry in numbers.items()]
    ns = {n for _, _, n in values if n is not None}
    each = len(ns) > 1
    return "; ".join(f"{setup}: {text}" + (f" (n={n})" if each and n is not None else "")
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
    text, ns = _setups(numbers)
    seeds = f", n={ns.pop()} seeds" if len(ns) == 1 else ""
    data = f"{claim['data']}: " if claim.get("data") else ""
    return f"{data}{text} ({scale}{seeds})"


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
            cells = [doc["paper"], f"({c['id']}) {c['claim']}", reported_cell(c),
                     reproduced_cell(c, doc["scale"]), verdict_cell(c, doc["scale"]),
                     c.get("rule") or ""]
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


def block(patterns: Iterable[str] = RESULTS, root: str | Path | None = None) -> str:
    """What goes between the markers: a do-not-edit line and the scorecard."""
    return (f"<!-- made by `{COMMAND}` from papers/*/results/<scale>/claims.json; "
            "do not edit by hand -->\n" + scorecard(claims_files(patterns, root), root))


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
