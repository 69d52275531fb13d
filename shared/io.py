"""Atomic file writes: every output of the suite appears whole or not at all.

A write that fails (a full disk, a read-only or unwritable folder) removes its temp file and raises
an ``OSError`` of the same errno (so ``PermissionError`` stays a ``PermissionError``) naming the
*final* path: the user must learn which output could not be written, not a random temp name.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Mapping


def _temp_prefix(final: Path) -> str:
    return f".{final.name}."


def _naming_final(err: BaseException, final: Path) -> BaseException:
    """``err`` as an OSError naming ``final`` if it named our temp file or nothing; else ``err`` itself.

    An error naming another file (the folder ``mkdir`` could not make, a file the writer was reading)
    is left as it is: that name is the one to act on.
    """
    if not isinstance(err, OSError) or err.errno is None:
        return err
    named = err.filename
    if named is not None and not (Path(os.fsdecode(named)).parent == final.parent
                                  and Path(os.fsdecode(named)).name.startswith(_temp_prefix(final))):
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(final))  # errno picks the subclass


def _raise_naming_final(err: BaseException, final: Path):
    renamed = _naming_final(err, final)
    if renamed is err:
        raise err
    raise renamed from err


def write_temp(final: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Run ``write(f)`` on a temp file beside ``final`` (same filesystem), fsync it, return its path.

    The caller moves it into place with :func:`replace_temp`, alone or together with sibling files.
    On any failure the temp file is removed; an ``OSError`` names ``final`` (see the module doc).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)  # an error here names the folder it could not make
    try:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=_temp_prefix(final), suffix=".tmp")
    except OSError as err:  # EACCES / EROFS / ENOSPC on creating the file: it names the temp path
        _raise_naming_final(err, final)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs should read like any file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only show here (or on close)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_naming_final(err, final)
    return Path(tmp)


def replace_temp(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """``os.replace(tmp, final)``; on failure the temp file is removed and the error names ``final``."""
    try:
        os.replace(tmp, final)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_naming_final(err, Path(final))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temp file and ``os.replace``: a crash leaves the old file or none."""
    replace_temp(write_temp(path, write), path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_many(writers: Mapping[str | os.PathLike, Callable[[BinaryIO], None]]) -> None:
    """Write several files that belong together: every one staged as a temp file first, then moved into
    place in the mapping's order (put the file readers look for last).

    A failure while staging leaves every final path as it was (the temps are removed); only a failing
    ``os.replace`` itself, after the first, can leave the set part old, part new.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for final, write in writers.items():
            staged.append((write_temp(final, write), Path(final)))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        replace_temp(tmp, final)
