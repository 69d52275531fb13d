"""FID of CIFAR-10 train against test with the Inception pool3 detector: the check that it is the standard one.

    python -m shared.fid_validation --params params.yaml --compared data/fid_stats/cifar10_train.npz \
        --reference data/fid_stats/cifar10_test.npz --out shared/results/mini/fid_validation.json

The `fid_validation` stage of the top-level dvc.yaml. It reads the reference statistics the `fid_stats`
stages computed (:mod:`shared.fid_stats`: the train and test splits' pool3 mean and covariance, made
with the detector :mod:`shared.fid_detector` fetches and :class:`shared.metrics.InceptionPool3`'s
resize and range convention) and computes their Frechet distance, in seconds. It writes a JSON result
with the FID, the sample counts, the convention, the detector's SHA-1, the detector time (the two
statistics' feature time summed: that is what the number cost), provenance and the literature figure
beside it (about 3.1 for CIFAR-10's original PNGs, 50k train against 10k test; the suite's copy is
JPEG re-encoded). Two statistics made by different detectors or conventions are refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shared import config
from shared.cli import add_debug_argument, run_stage
from shared.device import pick_device
from shared.fid_detector import POOL3_MEMBER, POOL3_SHA1, POOL3_WHEEL
from shared.io import atomic_write_text
from shared.metrics import ReferenceStats, StatsMismatchError, frechet_distance
from shared.provenance import provenance

LITERATURE = {"fid": 3.1, "what": "FID of CIFAR-10 train (50k) against test (10k) on the original PNGs with the "
              "TF-Inception pool3 network: about 3.1 (a published figure, not measured here)"}


def validate(params: str | os.PathLike, compared: str | os.PathLike, reference: str | os.PathLike,
             out: str | os.PathLike) -> dict:
    """FID of the ``compared`` statistics (the train split's) against the ``reference`` ones (the test
    split's); writes the result to ``out`` (JSON) and returns it."""
    t_start = time.perf_counter()
    suite = config.load_suite(params)
    train, test = ReferenceStats.load(compared), ReferenceStats.load(reference)
    for what in ("detector_sha1", "convention", "image_shape"):
        if getattr(train, what) != getattr(test, what):
            raise StatsMismatchError(f"{compared} and {reference} differ in {what} ({getattr(train, what)!r} vs "
                                     f"{getattr(test, what)!r}): remake them with `dvc repro fid_stats`")
    fid = frechet_distance(train.mu, train.sigma, test.mu, test.sigma)
    detector_seconds = train.detector_seconds + test.detector_seconds
    total = train.n + test.n
    result = {
        "fid": fid, "metric": "fid_inception", "label": "FID (Inception pool3)",
        "compared": train.name, "reference": test.name, "dataset": train.meta.get("dataset"),
        "n_train": train.n, "n_test": test.n, "limit": train.meta.get("limit"),
        "convention": train.convention,
        "detector": {"file": train.meta.get("detector_file"), "sha1": train.detector_sha1, "pinned_sha1": POOL3_SHA1,
                     "source": f"{POOL3_WHEEL}, member {POOL3_MEMBER}"},
        "data": {"prepared": train.meta.get("prepared"), "source": train.meta.get("source"),
                 "images_sha1": {"train": train.images_sha1, "test": test.images_sha1},
                 "stats": {"train": str(compared), "test": str(reference)},
                 "note": "the offline CIFAR-10 copy is JPEG re-encoded: FIDs on it differ a little from the PNGs'"},
        "literature": LITERATURE, "scale": suite.scale,
        # the detector time is what the number cost: the fid_stats stages' feature time (resumed chunks too)
        "wall_seconds": round(detector_seconds + time.perf_counter() - t_start, 1),
        "detector_seconds": round(detector_seconds, 1),
        "images_per_second": round(total / detector_seconds, 2) if detector_seconds > 0 else None,
        "provenance": provenance(pick_device(suite.device)),
        "features_provenance": {"train": train.meta.get("provenance"), "test": test.meta.get("provenance")},
    }
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"fid_validation: FID(train {result['n_train']}, test {result['n_test']}) = {fid:.4f} "
          f"(literature about {LITERATURE['fid']} on the PNGs) -> {out}")
    return result


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.fid_validation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the suite's params (scale, device)")
    parser.add_argument("--compared", type=Path, default=Path("data/fid_stats/cifar10_train.npz"),
                        help="the statistics compared (the fid_stats stage's train split)")
    parser.add_argument("--reference", type=Path, default=Path("data/fid_stats/cifar10_test.npz"),
                        help="the reference statistics (the fid_stats stage's test split)")
    parser.add_argument("--out", type=Path, required=True, help="the result JSON")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_stage(lambda: validate(args.params, args.compared, args.reference, args.out), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
