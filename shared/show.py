"""Print a paper's results folder: its comparison tables and its claims' verdicts.

The command of each paper's alias stage in the top-level ``dvc.yaml`` (``dvc repro papers/<paper>``
ends with it), and usable alone::

    python -m shared.show papers/<paper>/results/mini

Reads only the folder's files (``*.md`` tables, ``claims.json``); it imports nothing of the suite, so
the alias stage depends on this file and the folder alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def render(folder: str | Path) -> str:
    """The folder's tables (``*.md`` but ``claims.md``) and one line per claim, as text."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no results folder; run the paper's report stage first")
    parts = [path.read_text().rstrip() for path in sorted(folder.glob("*.md")) if path.name != "claims.md"]
    claims_file = folder / "claims.json"
    if claims_file.is_file():
        try:
            doc = json.loads(claims_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{claims_file}: not JSON ({err})") from err
        lines = [f"claims ({claims_file}):"]
        for claim in doc.get("claims", []):
            line = f"  ({claim.get('id')}) {claim.get('claim')}: {claim.get('verdict')}"
            if claim.get("reason"):
                line += f" ({claim['reason']})"
            lines.append(line)
        parts.append("\n".join(lines))
    if not parts:
        parts.append(f"{folder}: no tables or claims yet")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.show", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a results folder: papers/<paper>/results/<scale>")
    parser.add_argument("--debug", action="store_true", help="on a known failure, print the traceback too")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.folder))
    except (FileNotFoundError, ValueError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
