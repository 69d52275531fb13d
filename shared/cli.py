"""What every stage command line shares: the params arguments and how a known failure is reported."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

# Failures a user can fix (a config key, a missing or corrupt file, a bad value): one line on
# stderr naming what to fix, exit code 2, no traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)


def stage_parser(doc: str | None, params: Path) -> argparse.ArgumentParser:
    """A parser with the paper's `--params` (default `params`) and the suite's `--suite-params`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=params, help="the paper's params file")
    parser.add_argument("--suite-params", type=Path, default=Path("params.yaml"), help="scale, seed, device, ...")
    return parser


def run_stage(run: Callable[[], Any], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """Call `run()`; a user error prints `error: ...` and returns 2, success returns 0."""
    try:
        run()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
