"""python -m shared.tracking compare | rebuild | ui: the command line of the tracking modules.

    python -m shared.tracking compare --reported papers/X/reported.yaml --metrics 'glob'
        --table table1 --scale mini --out DIR [--log]     a reported-vs-reproduced table (shared.comparison)
    python -m shared.tracking rebuild [--results 'papers/*/results'] [--scales mini paper]
                                                                        the committed results -> the store
    python -m shared.tracking ui [--port 5000]                           the MLflow UI on the store
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from shared.comparison import RESULTS, compare, log_comparison
from shared.config import COMMITTED_SCALES, SCALES
from shared.tracking import default_tracking_uri, local_sqlite_path
from shared.tracking.store import links, rebuild, ui_command


def _print_links(found: list[tuple[str, str, str]], when: str) -> None:
    """The saved views' links: the result runs' key numbers as columns, in the model-training UI."""
    if found:
        print(f"saved views (open {when}):")
        for experiment, view, url in found:
            print(f"  {experiment}: {view}: {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="reported vs reproduced table from metrics files")
    p.add_argument("--reported", required=True, type=Path, help="papers/<paper>/reported.yaml")
    p.add_argument("--metrics", required=True, nargs="+", help="metrics JSON files or globs ('**' ok)")
    p.add_argument("--table", required=True)
    p.add_argument("--scale", required=True, choices=SCALES)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--log", action="store_true", help="also log the table to MLflow")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    p = sub.add_parser("rebuild", help="load the committed results (papers/*/results) into the store")
    p.add_argument("--results", nargs="+", default=list(RESULTS),
                   help="results folders or globs, relative to the repository (default: %(default)s)")
    p.add_argument("--scales", nargs="+", default=list(COMMITTED_SCALES), choices=SCALES,
                   help="the scales to load (default: the committed ones, %(default)s; smoke results "
                        "are local, e.g. pulled from a DVC remote)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    p = sub.add_parser("ui", help="the MLflow UI on the store (mlflow ui, one worker)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="default: loopback only; on a remote machine forward the port over ssh")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlflow")
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        actions = rebuild(args.results, args.tracking_uri, scales=args.scales)
        for action, name, run_id in actions:
            print(f"{action:9s} {name}  {run_id}")
        counts = {kind: sum(a == kind for a, _, _ in actions) for kind in ("created", "unchanged", "deleted", "skipped")}
        print(", ".join(f"{n} {kind}" for kind, n in counts.items())
              + f" in {args.tracking_uri or default_tracking_uri()}")
        _print_links(links(args.tracking_uri), "with `python -m shared.tracking ui`")
        return 0
    if args.command == "ui":
        try:
            command = ui_command(args.tracking_uri, args.host, args.port)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        db = local_sqlite_path(command[command.index("--backend-store-uri") + 1])
        if db is not None and not db.is_file():
            print(f"note: {db} does not exist yet; `python -m shared.tracking rebuild` loads the "
                  "committed results into it", file=sys.stderr)
        else:
            _print_links(links(args.tracking_uri, f"http://{args.host}:{args.port}"), "once the UI is up")
        print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl+C stops it): {' '.join(command[1:])}",
              flush=True)
        # The suite runs no server-side jobs (GenAI judges): skip MLflow's job runner process.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        os.execve(sys.executable, command, env)  # replaces this process: Ctrl+C reaches mlflow
        return 0  # not reached
    files = sorted({Path(f) for pattern in args.metrics for f in glob.glob(pattern, recursive=True)})
    if not files:
        print(f"warning: no metrics files match {args.metrics}; every row is 'not run'", file=sys.stderr)
    c = compare(args.reported, files, args.table, args.scale, args.out)
    print(c.md_path.read_text(), end="")
    if args.log:
        print(f"logged to MLflow run {log_comparison(c, args.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
