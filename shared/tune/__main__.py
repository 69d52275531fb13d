"""python -m shared.tune SWEEP_FILE [options]: run or resume a sweep (see :mod:`shared.tune`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared import config, tune
from shared.config import REPO_ROOT
from shared.tune.outputs import format_values
from shared.tune.study import DEFAULT_STORAGE, run_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tune", description=tune.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep file, e.g. papers/<paper>/sweep.yaml")
    parser.add_argument("--scale", choices=config.SCALES, default=None, help="default: params.yaml's scale")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="the study's total of finished trials (default: the sweep file's; 0: outputs only)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the study (default 1)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB URL (default: %(default)s)")
    parser.add_argument("--study", default=None, help="study name (default: <the sweep's name>-<scale>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="outputs folder (default: papers/<paper>/results/sweeps/<scale>)")
    parser.add_argument("--suite-params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--no-references", action="store_true", help="skip the reference runs")
    args = parser.parse_args(argv)
    try:
        summary = run_sweep(args.sweep, scale=args.scale, n_trials=args.n_trials, workers=args.workers,
                            storage=args.storage, study_name=args.study, out=args.out,
                            suite_params=args.suite_params, references=not args.no_references)
    except (config.ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary["best"]:
        print(f"best {summary['objective']['metric']} {summary['best']['value']:.2f} "
              f"(trial {summary['best']['trial']}): {format_values(summary['best']['params'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
