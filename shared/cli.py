"""What every stage command line shares: the params arguments and how a known failure is reported.

A failure the user can act on (a config key, a missing or corrupt file, a diverged run, a full disk,
an output folder it may not write) is one line on stderr naming what to fix, exit code 2, no
traceback. ``--debug`` (every stage parser has it) or ``REPRO_DEBUG=1`` prints the traceback above
that line. Anything else is a bug and keeps Python's own traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

# Failures a user can fix whose message already says what to fix: printed as they are.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)
DEBUG_ENV = "REPRO_DEBUG"
EXIT_USER_ERROR = 2

# Known by "module.Class" and looked up in sys.modules, not imported: importing them would make every
# command that reports errors (shared.prepare too) import the trainers and torch's checkpoint code, and
# list them as DVC deps. An instance can only exist once its module has been imported.
NON_FINITE_LOSS = "shared.trainers.common.NonFiniteLossError"
CORRUPT_FILES = ("shared.checkpoint.CheckpointError", "shared.detector.CorruptWeightsError")

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}  # no space left; disk quota exceeded
_NOT_ALLOWED = {errno.EACCES, errno.EPERM}


def add_debug_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--debug``: print the traceback of a known failure too (as ``REPRO_DEBUG=1`` does)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"on a known failure, print the traceback too (or set {DEBUG_ENV}=1)")
    return parser


def stage_parser(doc: str | None, params: Path) -> argparse.ArgumentParser:
    """A parser with the paper's `--params` (default `params`), the suite's `--suite-params` and `--debug`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=params, help="the paper's params file")
    parser.add_argument("--suite-params", type=Path, default=Path("params.yaml"), help="scale, seed, device, ...")
    return add_debug_argument(parser)


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``REPRO_DEBUG`` set to anything but empty / 0 / false / no."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _loaded(qualname: str) -> type | None:
    module, _, name = qualname.rpartition(".")
    return getattr(sys.modules.get(module), name, None)


def _is(err: BaseException, *qualnames: str) -> bool:
    return any(isinstance(err, cls) for cls in map(_loaded, qualnames) if isinstance(cls, type))


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _os_error(err: OSError) -> str | None:
    """The message for a full disk or a folder this user may not write; None for other OSErrors."""
    where = os.fsdecode(err.filename) if err.filename is not None else None
    folder = str(Path(where).parent) if where else None
    if err.errno in _NO_SPACE:
        return (f"{err.strerror or os.strerror(err.errno)} while writing {where or 'an output'}: "
                f"free space on that disk (or write the outputs to another disk), then rerun the stage")
    if err.errno == errno.EROFS:
        return (f"cannot write {where or 'an output'}: {folder or 'its folder'} is on a read-only file system; "
                f"write the outputs to a writable folder (--out) or remount it read-write, then rerun")
    if err.errno in _NOT_ALLOWED:
        return (f"permission denied: {where or 'a file'}: this user may not write in {folder or 'its folder'}; "
                f"make it writable (e.g. chmod u+w) or write the outputs elsewhere (--out), then rerun")
    return None


def describe(err: BaseException, errors: tuple[type[BaseException], ...] = USER_ERRORS) -> str | None:
    """The message to print for ``err`` if a user can fix it, None if it is a bug."""
    if _is(err, NON_FINITE_LOSS):
        return (f"{_one_line(err)}. The run diverged: lower the learning rate (or check the data and the "
                f"loss), then rerun the stage")
    if _is(err, *CORRUPT_FILES):
        return _one_line(err)  # they name the file and what to do (delete it, or where to get it)
    if isinstance(err, OSError) and (message := _os_error(err)):
        return message
    if isinstance(err, errors):
        return str(err)
    return None


def run_stage(run: Callable[[], Any], errors: tuple[type[BaseException], ...] = USER_ERRORS, *,
              debug: bool = False) -> int:
    """Call `run()`: 0 on success; a user error (:func:`describe`) prints `error: ...` and returns 2.

    With ``debug`` (``--debug``) or ``REPRO_DEBUG=1`` the traceback is printed above that line.
    """
    try:
        run()
    except Exception as err:  # noqa: BLE001 - describe() decides; a bug is re-raised as it came
        message = describe(err, errors)
        if message is None:
            raise
        if debug_requested(debug):
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
