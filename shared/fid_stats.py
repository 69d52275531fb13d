"""FID reference statistics: a real split's Inception pool3 mean and covariance, computed once.

    python -m shared.fid_stats --params params.yaml --weights data/inception/default_1.pt \
        --prepared data/prepared/cifar10 --split test --name "CIFAR-10 test split" \
        --work data/fid_stats/chunks/mini/cifar10_test --out data/fid_stats/cifar10_test.npz

The `fid_stats` stage of the top-level dvc.yaml (one per named set: `cifar10_test`, `cifar10_train`).
It passes a prepared split through the detector :mod:`shared.fid_detector` fetches, with
:class:`shared.metrics.InceptionPool3`'s resize and range convention, and writes
:class:`shared.metrics.ReferenceStats` (mu and sigma in float64, the image count, the detector's
SHA-1, the convention, the image shape, the images' SHA-1 and the detector seconds). Every Inception
FID of the suite reads these files instead of passing the reference through the detector again:
the GAN stages' final FID (against `cifar10_test`) and `shared.fid_validation` (train against test).

The features are computed in chunks of ``--chunk`` images, each saved under ``--work`` as it is
done, so a killed run resumes where it stopped; the chunks are keyed by the detector's hash, the
images' hash and the chunk size, and others are deleted. Threads and device come from the suite's
params.yaml. ``--limit`` takes a stratified subset of the split, for a quick check.
"""
from __future__ import annotations

import argparse
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
from shared.fid_detector import INCEPTION_WEIGHTS, POOL3_MEMBER
from shared.io import atomic_write, atomic_write_text
from shared.metrics import (RESIZE_CONVENTION, InceptionPool3, ReferenceStats, feature_stats, images_sha1,
                            load_inception)
from shared.provenance import provenance
from shared.stage import set_threads

CHUNK = 500  # images per saved chunk: a killed run loses at most this many (about 80 s on 1 CPU thread)
STEP = 50  # images per detector call, and per progress-bar step


def subset(x: np.ndarray, y: np.ndarray, limit: int | None) -> np.ndarray:
    """A stratified subset of ``limit`` images (the same every time), or all of ``x``."""
    if limit is None or limit >= len(x):
        return x
    classes = len(np.unique(y))
    if limit < classes:
        raise ValueError(f"--limit {limit} is below the {classes} classes: need at least one image per class")
    return x[np.sort(data.stratified_subset(y, limit // classes, seed=0))]


def chunk_key(weights_sha1: str, x: np.ndarray, chunk: int) -> dict:
    return {"detector_sha1": weights_sha1, "convention": RESIZE_CONVENTION, "chunk": chunk,
            "images_sha1": images_sha1(x)}


def prepare_work(work: Path, key: dict) -> None:
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


def split_features(detector, name: str, x: np.ndarray, work: Path, chunk: int, bar) -> tuple[np.ndarray, float]:
    """Features of ``x`` (N, D), chunk by chunk, each saved to ``work/<name>_<start>.npz`` as it is done
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


def compute(params: str | os.PathLike, weights: str | os.PathLike, prepared: str | os.PathLike, split: str,
            name: str, work: str | os.PathLike, out: str | os.PathLike, limit: int | None = None,
            chunk: int = CHUNK, progress: bool = True) -> ReferenceStats:
    """Pool3 statistics of ``prepared``'s ``split`` (a stratified ``limit`` subset when given), written to
    ``out`` (.npz, :class:`ReferenceStats`) and returned; threads and device from the suite's params."""
    t_start = time.perf_counter()
    suite = config.load_suite(params)
    set_threads(suite.threads)
    device = pick_device(suite.device)
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {chunk}")
    detector = load_inception(weights, device)
    if not isinstance(detector, InceptionPool3):  # StyleGAN2-ADA's file: the suite's statistics are pool3's
        raise ValueError(f"{weights} is StyleGAN2-ADA's detector; the reference statistics are of {POOL3_MEMBER} "
                         f"(python -m shared.fid_detector fetch)")
    x, y = data.load_prepared(prepared, split)
    x = subset(x, y, limit)
    work = Path(work)
    prepare_work(work, chunk_key(detector.sha1, x, chunk))
    with tqdm(total=len(x), unit="img", desc=f"fid_stats {Path(out).stem}", disable=not progress,
              file=sys.stderr) as bar:
        feats, seconds = split_features(detector, split, x, work, chunk, bar)
    mu, sigma = feature_stats(feats)
    meta_file = Path(prepared) / "meta.json"
    source = json.loads(meta_file.read_text()).get("source") if meta_file.is_file() else None
    stats = ReferenceStats(
        mu=mu, sigma=sigma, n=len(x), detector_sha1=detector.sha1, convention=RESIZE_CONVENTION,
        image_shape=tuple(x.shape[1:]), images_sha1=images_sha1(x), name=name, detector_seconds=round(seconds, 1),
        meta={"dataset": Path(prepared).name, "split": split, "prepared": str(prepared), "source": source,
              "limit": limit, "scale": suite.scale, "detector_file": str(weights),
              "images_per_second": round(len(x) / seconds, 2) if seconds > 0 else None,
              "wall_seconds": round(time.perf_counter() - t_start, 1), "provenance": provenance(device)})
    stats.save(out)
    print(f"fid_stats: {name}, {stats.n} images, {seconds:.0f} s of detector time -> {out}")
    return stats


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.fid_stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the suite's params (threads, device)")
    parser.add_argument("--weights", type=Path, default=Path(INCEPTION_WEIGHTS))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/cifar10"))
    parser.add_argument("--split", required=True, help="the prepared split (train, test)")
    parser.add_argument("--name", required=True, help="what records call the set, e.g. 'CIFAR-10 test split'")
    parser.add_argument("--work", type=Path, required=True, help="folder of the saved feature chunks (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="the statistics (.npz)")
    parser.add_argument("--limit", type=int, help="images (a stratified subset), for a quick check")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="images per saved chunk (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_stage(lambda: compute(args.params, args.weights, args.prepared, args.split, args.name, args.work,
                                     args.out, args.limit, args.chunk, progress=not args.no_progress),
                     debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
