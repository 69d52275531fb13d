"""FID of CIFAR-10 train against test with the Inception pool3 detector: the check that it is the standard one.

    python -m shared.fid_validation --params params.yaml --weights data/inception/default_1.pt \
        --prepared data/prepared/cifar10 --work data/fid_validation/mini --out shared/results/mini/fid_validation.json

The `fid_validation` stage of the top-level dvc.yaml. It computes FID(train split, test split) of a
prepared dataset with the detector :mod:`shared.fid_detector` fetches, through
:class:`shared.metrics.InceptionPool3` (its resize and range convention), and writes a JSON result
with the FID, the sample counts, the convention, the detector's SHA-1, the wall time, provenance
and the literature figure beside it (about 3.1 for CIFAR-10's original PNGs, 50k train against
10k test; the suite's copy is JPEG re-encoded). The features are computed in chunks of ``--chunk``
images, each saved under ``--work`` as it is done, so a killed run resumes where it stopped; the
chunks are keyed by the detector's hash, the images' hash and the chunk size, and others are
deleted. Threads and device come from the suite's params.yaml. ``--limit`` takes a stratified
subset of each split, for a quick check.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shared import config, data
from shared.cli import add_debug_argument, run_stage
from shared.device import pick_device
from shared.fid_detector import INCEPTION_WEIGHTS, POOL3_MEMBER, POOL3_SHA1, POOL3_WHEEL
from shared.io import atomic_write, atomic_write_text
from shared.metrics import RESIZE_CONVENTION, InceptionPool3, feature_stats, frechet_distance, load_inception
from shared.provenance import provenance
from shared.stage import set_threads

LITERATURE = {"fid": 3.1, "what": "FID of CIFAR-10 train (50k) against test (10k) on the original PNGs with the "
              "TF-Inception pool3 network: about 3.1",
              "this_copy": 3.113, "this_copy_what": "the same on this suite's JPEG copy with this convention, "
              "as measured when the detector was chosen (issue 11)"}
CHUNK = 500  # images per saved chunk: a killed run loses at most this many (about 2.5 min on 1 CPU thread)
STEP = 50  # images per detector call, and per progress-bar step


def _subset(x: np.ndarray, y: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or limit >= len(x):
        return x
    classes = len(np.unique(y))
    if limit < classes:
        raise ValueError(f"--limit {limit} is below the {classes} classes: need at least one image per class")
    return x[np.sort(data.stratified_subset(y, limit // classes, seed=0))]


def _chunk_key(weights_sha1: str, splits: dict[str, np.ndarray], chunk: int) -> dict:
    return {"detector_sha1": weights_sha1, "convention": RESIZE_CONVENTION, "chunk": chunk,
            "images_sha1": {name: hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
                            for name, x in splits.items()}}


def _prepare_work(work: Path, key: dict) -> None:
    """Keep ``work``'s chunks if they were made with ``key``; else empty it and record ``key``."""
    key_file = work / "key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == key:
        return
    if work.exists():
        for stale in work.glob("*.npz"):
            stale.unlink()
    atomic_write_text(key_file, json.dumps(key, indent=2) + "\n")


def _read_chunk(path: Path, n: int, dim: int) -> tuple[np.ndarray, float] | None:
    """A saved chunk's (features, seconds), or None if it is absent or not what it should be."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            feats, seconds = z["features"], float(z["seconds"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return (feats, seconds) if feats.shape == (n, dim) and np.isfinite(feats).all() else None


def split_features(detector, name: str, x: np.ndarray, work: Path, chunk: int, bar: tqdm) -> tuple[np.ndarray, float]:
    """Features of ``x`` (N, 2048), chunk by chunk, each saved to ``work/<name>_<start>.npz`` as it is done
    and read back on a rerun; returns them with the detector seconds summed over chunks (earlier runs too)."""
    feats, seconds = [], 0.0
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        path = work / f"{name}_{start:06d}.npz"
        done = _read_chunk(path, len(part), detector.dim)
        if done is None:
            t0, pieces = time.perf_counter(), []
            for i in range(0, len(part), STEP):
                pieces.append(detector.features(torch.from_numpy(part[i:i + STEP])).numpy())
                bar.update(len(pieces[-1]))
            f = np.concatenate(pieces)
            done = (f, time.perf_counter() - t0)
            atomic_write(path, lambda fh, f=f, s=done[1]: np.savez(fh, features=f, seconds=np.float64(s)))
        else:
            bar.update(len(part))
        feats.append(done[0])
        seconds += done[1]
    return np.concatenate(feats), seconds


def validate(params: str | os.PathLike, weights: str | os.PathLike, prepared: str | os.PathLike,
             work: str | os.PathLike, out: str | os.PathLike, limit: int | None = None, chunk: int = CHUNK,
             progress: bool = True) -> dict:
    """FID of ``prepared``'s train split against its test split with the Inception pool3 detector;
    writes the result to ``out`` (JSON) and returns it. ``limit``: a stratified subset of each split
    (a quick check); threads and device from the suite's params."""
    t_start = time.perf_counter()
    suite = config.load_suite(params)
    set_threads(suite.threads)
    device = pick_device(suite.device)
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {chunk}")
    detector = load_inception(weights, device)
    if not isinstance(detector, InceptionPool3):  # StyleGAN2-ADA's file: this stage validates the pool3 one
        raise ValueError(f"{weights} is StyleGAN2-ADA's detector; the validation is of {POOL3_MEMBER} "
                         f"(python -m shared.fid_detector fetch)")
    splits = {}
    for name in ("train", "test"):
        x, y = data.load_prepared(prepared, name)
        splits[name] = _subset(x, y, limit)
    work = Path(work)
    _prepare_work(work, _chunk_key(detector.sha1, splits, chunk))
    stats, detector_seconds = {}, 0.0
    total = sum(len(x) for x in splits.values())
    with tqdm(total=total, unit="img", desc="fid_validation", disable=not progress, file=sys.stderr) as bar:
        for name, x in splits.items():
            feats, seconds = split_features(detector, name, x, work, chunk, bar)
            stats[name] = feature_stats(feats)
            detector_seconds += seconds
    (mu_train, sigma_train), (mu_test, sigma_test) = stats["train"], stats["test"]
    fid = frechet_distance(mu_train, sigma_train, mu_test, sigma_test)
    meta_file = Path(prepared) / "meta.json"
    source = json.loads(meta_file.read_text()).get("source") if meta_file.is_file() else None
    result = {
        "fid": fid, "metric": "fid_inception", "label": detector.label,
        "compared": "train split", "reference": "test split", "dataset": Path(prepared).name,
        "n_train": len(splits["train"]), "n_test": len(splits["test"]), "limit": limit,
        "convention": RESIZE_CONVENTION,
        "detector": {"file": str(weights), "sha1": detector.sha1, "pinned_sha1": POOL3_SHA1,
                     "source": f"{POOL3_WHEEL}, member {POOL3_MEMBER}"},
        "data": {"prepared": str(prepared), "source": source,
                 "note": "the offline CIFAR-10 copy is JPEG re-encoded: FIDs on it differ a little from the PNGs'"},
        "literature": LITERATURE, "scale": suite.scale,
        "wall_seconds": round(time.perf_counter() - t_start, 1), "detector_seconds": round(detector_seconds, 1),
        "images_per_second": round(total / detector_seconds, 2) if detector_seconds > 0 else None,
        "provenance": provenance(device),
    }
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"fid_validation: FID(train {result['n_train']}, test {result['n_test']}) = {fid:.4f} "
          f"(literature about {LITERATURE['fid']} on the PNGs) -> {out}")
    return result


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.fid_validation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the suite's params (threads, device)")
    parser.add_argument("--weights", type=Path, default=Path(INCEPTION_WEIGHTS))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/cifar10"))
    parser.add_argument("--work", type=Path, required=True, help="folder of the saved feature chunks (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="the result JSON")
    parser.add_argument("--limit", type=int, help="images per split (a stratified subset), for a quick check")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="images per saved chunk (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_stage(lambda: validate(args.params, args.weights, args.prepared, args.work, args.out, args.limit,
                                      args.chunk, progress=not args.no_progress), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
