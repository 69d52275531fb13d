"""Stage `report`: Table 1, Figures 3 and 4 and the paper's three claims, from the pretrain metrics.

    python -m papers.gan_simclr.report --reported papers/gan_simclr/reported.yaml \\
        --metrics-dir papers/gan_simclr/outputs/pretrain --scale mini \\
        --out papers/gan_simclr/results/mini [--log]
    python -m papers.gan_simclr.report --scale mini --out papers/gan_simclr/results/mini --from-runs

Reads every ``*.json`` under --metrics-dir (recursively) that is a pretrain metrics file: one per
(optimizer, fake_count, seed), with ``row``, ``seed``, ``metrics.linear_eval_acc``, ``fake_count``,
``real_count``, ``optimizer`` and ``curve`` ([{epoch, linear_test_acc}], epochs counted from 1).
Files without ``paper`` / ``row`` (a seed the scale skips writes ``{"skipped": ...}``) and files
under --out are passed over. A file of another scale raises (shared.comparison.compare).
The committed copies of the records under ``<out>/runs/`` (or --runs) are read too, --metrics-dir's
winning where both have a run (shared.records.gather); --from-runs reads those copies alone, so a
table and its claims can be recomputed without re-running. Every record read is copied into
``<out>/runs/`` (``pretrain/<run>/metrics.json``, ``gan/metrics.json``).

Writes into --out, atomically:
  table1.md / .json   reported vs reproduced, mean ± sample std (ddof=1) over seeds
  figure3.png         linear-eval accuracy per pre-training epoch, a curve per fake count
                      (mean, ± std band), a panel per optimiser
  figure4.png / .json accuracy at equal compute (Sec. 5.2), see :func:`equal_compute`
  table1_vs_reported.png  each row's seeds, mean ± std beside the paper's number (shared.report)
  gan_samples.png     the GAN's sample grids at its best-FID and last steps (with --gan-metrics)
  claims.json         the three claims' numbers, rules and verdicts, see :func:`claims`
With --log, the table and these files go to the MLflow comparison run `compare/table1/<scale>`.

Deviation (documented, on purpose): the paper gives no statistical test. The suite's (shared.claims),
on the per-seed values at alpha = 0.05: claim (a) is the one-sided t-test of the OLS slope of
accuracy on the fake count over every seed's point of the LARS rows; (b) and (c) are one-sided
Welch t-tests of the claimed best setup against each other setup, Holm-corrected. A claim "holds"
or "does not hold" when the claimed or the opposite direction is significant, else it is
"inconclusive", as it is with fewer than 2 seeds in a setup or a setup not run.
Sec. 5.2 says "200 epochs for 1000 fake samples"; the 10000-fake setup is
meant (5000 / 15000 * 600 = 200), and 10000 is what is used.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shared import records
from shared import claims as claim_tests
from shared.claims import STD_NOTE
from shared.comparison import SchemaError, compare
from shared.io import atomic_write_text
from shared.report import Report, band, figure, not_run, report_parser, run_report, runs_dir, seed_stats

PAPER, TABLE = "gan_simclr", "table1"
OPTIMIZERS = {"adam": "Adam", "lars": "LARS"}  # metrics-file name -> the paper's label
FAKE_COUNTS = (0, 2500, 5000, 10000)  # Table 1's setups, all with 5000 real images
EQUAL_COMPUTE_RULE = (
    "budget B = min over setups of (last epoch every seed evaluated) * (Nr + Nf) / Nr, in "
    "baseline-epoch equivalents (the baseline's final epoch when all setups ran equally long); "
    "each setup is read at its curve point at or just below B * Nr / (Nr + Nf)")


@dataclasses.dataclass
class Run:
    """One pretrain metrics file: a (row, seed) with its final accuracy and its curve."""
    path: Path
    row: str
    optimizer: str
    fake_count: int
    real_count: int
    seed: int
    final: float
    curve: dict[int, float]  # epoch -> linear-eval test accuracy (%)
    fakes_used: int  # fake images actually used: fake_count scaled to real_count (see pretrain.py)


def row_id(optimizer: str, fake_count: int) -> str:
    return f"{optimizer}_fake{fake_count}"


# ---------------------------------------------------------------- reading the metrics files

def metrics_files(metrics_dir: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """The pretrain records under ``metrics_dir`` (skip markers and files under ``exclude`` passed over)."""
    if not Path(metrics_dir).is_dir():
        raise FileNotFoundError(f"metrics folder {metrics_dir} does not exist; make it with the "
                                f"pretrain stage (dvc repro papers/gan_simclr/dvc.yaml)")
    return records.find(metrics_dir, exclude=exclude)


def _need(data: dict, key: str, kinds: tuple, path: Path):
    value = data.get(key)
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise SchemaError(f"{path}: {key}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def load_runs(files: list[Path], scale: str) -> list[Run]:
    """The table1 runs of gan_simclr among ``files``; raises naming the file and key on a bad one."""
    runs = []
    for path in files:
        record = records.read(path)
        if record.paper != PAPER or record.table != TABLE:
            continue
        if record.scale != scale:
            raise ValueError(f"{path}: scale {record.scale!r} but reporting scale {scale!r}")
        data = {**record.extra, "row": record.row, "seed": record.seed, "metrics": record.metrics}
        optimizer = _need(data, "optimizer", (str,), path)
        fake_count = _need(data, "fake_count", (int,), path)
        real_count = _need(data, "real_count", (int,), path)
        if optimizer not in OPTIMIZERS or data["row"] != row_id(optimizer, fake_count) or real_count < 1:
            raise SchemaError(f"{path}: row {data['row']!r} does not match optimizer {optimizer!r}, "
                              f"fake_count {fake_count}, real_count {real_count}")
        curve = {}
        for i, point in enumerate(_need(data, "curve", (list,), path)):
            if not isinstance(point, dict):
                raise SchemaError(f"{path}: curve[{i}]: expected a mapping, got {point!r}")
            epoch = _need(point, "epoch", (int,), path)
            curve[epoch] = float(_need(point, "linear_test_acc", (int, float), path))
        runs.append(Run(Path(path), data["row"], optimizer, fake_count, real_count,
                        _need(data, "seed", (int,), path),
                        float(data["metrics"]["linear_eval_acc"]), curve,
                        int(data.get("fakes_used", fake_count))))
    for row in {r.row for r in runs}:
        counts = {r.real_count for r in runs if r.row == row}
        if len(counts) > 1:
            raise ValueError(f"row {row!r}: seeds disagree on real_count ({sorted(counts)})")
    return runs


def setups(runs: list[Run], optimizer: str) -> dict[int, list[Run]]:
    """{fake_count: that setup's runs (one per seed)} for ``optimizer``, by fake count."""
    out: dict[int, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.fake_count, r.seed)):
        if r.optimizer == optimizer:
            out.setdefault(r.fake_count, []).append(r)
    return out


def common_epochs(runs: list[Run]) -> list[int]:
    """Epochs every seed of a setup evaluated (a band over fewer seeds would mislead)."""
    return sorted(set.intersection(*(set(r.curve) for r in runs)))


def curve_stats(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(epochs, mean, std or None below 2 seeds) over the seeds of one setup."""
    epochs = common_epochs(runs)
    acc = np.array([[r.curve[e] for e in epochs] for r in runs], dtype=float).reshape(len(runs), -1)
    return np.array(epochs), acc.mean(0), acc.std(0, ddof=1) if len(runs) >= 2 else None


def compute(epoch: float, real_count: int, fake_count: int) -> float:
    """Pre-training compute in baseline-epoch equivalents: an epoch over Nr + Nf images costs
    (Nr + Nf) / Nr epochs over the Nr real images alone (Sec. 5.2)."""
    return epoch * (real_count + fake_count) / real_count


# ---------------------------------------------------------------- Figure 4: equal compute

def equal_compute(runs: list[Run]) -> dict:
    """Accuracy at the largest compute budget every setup reached, per optimiser (Sec. 5.2).

    The budget, in baseline-epoch equivalents, is the smallest over the setups of (its last
    epoch evaluated by every seed) * (Nr + Nf) / Nr. With every setup trained for E epochs that is
    the baseline's E (600 in the paper). A setup with Nf fakes is then read at the curve point at
    or just below E * Nr / (Nr + Nf) (paper: 600, 400, 300, 200 epochs for 0, 2.5k, 5k, 10k),
    mean ± std over seeds. A setup whose first point lies beyond its target gets no value.
    """
    out = {}
    for optimizer in OPTIMIZERS:
        by_fakes = setups(runs, optimizer)
        reach = {k: compute(common_epochs(rs)[-1], rs[0].real_count, rs[0].fakes_used)
                 for k, rs in by_fakes.items() if common_epochs(rs)}
        budget = min(reach.values()) if reach else None
        entries = {}
        for k, rs in by_fakes.items():
            epochs = common_epochs(rs)
            nr, nf = rs[0].real_count, rs[0].fakes_used
            target = None if budget is None else budget * nr / (nr + nf)
            # 1e-9 relative: 12 * 5000 / 7500 must pick epoch 8, not 6
            below = [e for e in epochs if target is not None and e <= target * (1 + 1e-9)]
            epoch = below[-1] if below else None
            values = [r.curve[epoch] for r in rs] if epoch is not None else []
            entry = {"row": row_id(optimizer, k), "fake_count": k, "real_count": rs[0].real_count,
                     "target_epoch": target, "epoch": epoch,
                     "compute": None if epoch is None else compute(epoch, nr, nf),
                     "seeds": [r.seed for r in rs], "values": values,
                     **seed_stats(values)}
            entries[str(k)] = entry
        out[optimizer] = {"budget_baseline_epochs": budget, "by_fake_count": entries}
    return out


# ---------------------------------------------------------------- claims

def _named(values: dict[int, list[float] | None]) -> dict[str, list[float] | None]:
    return {f"{k} fakes": v for k, v in sorted(values.items())}


def more_fakes_better(values: dict[int, list[float] | None]) -> dict:
    """Claim (a) on {fake_count: per-seed accuracies, or None / [] (not run)}: the one-sided t-test of
    the OLS slope over every seed's point (shared.claims.increases), in % per 1000 fake images."""
    return claim_tests.increases(_named(values), {f"{k} fakes": k / 1000 for k in values},
                                 x_unit="1000 fake images")


def best_of(values: dict[int, list[float] | None], target: int) -> dict:
    """Claims (b) and (c): is `target` fakes the best setup? One-sided Welch t-tests against each other
    setup, Holm-corrected (shared.claims.best_of)."""
    return claim_tests.best_of(_named(values), f"{target} fakes")


def claims(table_values: dict[str, dict[int, list[float] | None]], figure4: dict) -> list[dict]:
    """The paper's three claims, each with its test, numbers and verdict.

    ``table_values``: {optimizer: {fake_count: per-seed accuracies, or None / [] (not run)}} from
    Table 1's rows; claim (c) reads figure 4's per-seed values at equal compute.
    """
    adam_equal = {int(k): e["values"] for k, e in figure4["adam"]["by_fake_count"].items()}
    adam_equal = {k: adam_equal.get(k) for k in sorted(set(FAKE_COUNTS) | set(adam_equal))}
    return [
        {"id": "a", "claim": "more fake images give higher accuracy with LARS",
         "source": "Sec. 5.1; Table 1 caption; Figure 3 caption", "data": "table1 lars rows",
         **more_fakes_better(table_values["lars"])},
        {"id": "b", "claim": "10k fakes are best with Adam",
         "source": "Sec. 5.1; Table 1 caption", "data": "table1 adam rows",
         **best_of(table_values["adam"], 10000)},
        {"id": "c", "claim": "at equal compute the baseline is best with Adam",
         "source": "Sec. 5.2; Figure 4 caption", "data": "figure4.json adam",
         **best_of(adam_equal, 0)},
    ]


# ---------------------------------------------------------------- figures

def _color(fake_count: int) -> str:
    """One colour per fake count in both panels and both figures, whichever setups ran."""
    return f"C{FAKE_COUNTS.index(fake_count)}" if fake_count in FAKE_COUNTS else "gray"


def figure3(runs: list[Run], scale: str):
    fig, axes = figure(len(OPTIMIZERS))
    for ax, (optimizer, label) in zip(axes, OPTIMIZERS.items()):
        by_fakes = setups(runs, optimizer)
        for k, rs in by_fakes.items():
            epochs, mean, std = curve_stats(rs)
            band(ax, epochs, mean, std, f"{k} fake (n={len(rs)})", _color(k))
        if not by_fakes:
            not_run(ax)
        else:
            ax.legend(fontsize=8)
        ax.set(title=label, xlabel="pre-training epoch", ylabel="linear eval accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"gan_simclr Figure 3: linear eval accuracy vs epoch, scale {scale} (mean ± std over seeds)")
    return fig


def figure4(runs: list[Run], equal: dict, scale: str):
    fig, axes = figure(len(OPTIMIZERS))
    for ax, (optimizer, label) in zip(axes, OPTIMIZERS.items()):
        by_fakes = setups(runs, optimizer)
        for k, rs in by_fakes.items():
            epochs, mean, std = curve_stats(rs)
            line = band(ax, compute(epochs, rs[0].real_count, k), mean, std, f"{k} fake (n={len(rs)})",
                         _color(k))
            e = equal[optimizer]["by_fake_count"][str(k)]
            if e["mean"] is not None:
                ax.plot([e["compute"]], [e["mean"]], "*", markersize=11, color=line.get_color())
        budget = equal[optimizer]["budget_baseline_epochs"]
        if budget is not None:
            ax.axvline(budget, color="k", linestyle="--", linewidth=1, label=f"equal compute ({budget:g})")
        if not by_fakes:
            not_run(ax)
        else:
            ax.legend(fontsize=8)
        ax.set(title=label, xlabel="compute (baseline-epoch equivalents: epoch × (Nr+Nf)/Nr)",
               ylabel="linear eval accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"gan_simclr Figure 4: accuracy at equal compute, scale {scale} (★ = value compared)")
    return fig


def gan_samples(samples_dir: str | Path, quality: dict, scale: str):
    """The GAN's sample grids (G_ema, fixed latents) as the train_gan stage wrote them: the one at the
    best-FID step, when a grid was drawn there (best.pt, the generator of pretrain's fakes), and the last."""
    grids = {int(p.stem.removeprefix("step_")): p for p in sorted(Path(samples_dir).glob("step_*.png"))}
    best, final = quality.get("best") or {}, quality.get("final") or {}
    shown = [s for s in dict.fromkeys([best.get("step"), max(grids, default=None)]) if s in grids]
    fig, axes = figure(max(len(shown), 1), width=4.6, height=5.0)
    for ax, step in zip(axes, shown):
        ax.imshow(np.asarray(Image.open(grids[step]).convert("RGB")))
        ax.axis("off")
        point = best if step == best.get("step") else final if step == final.get("step") else {}
        fid = ", ".join(f"{k} {v:.2f}" for k, v in point.items() if k.startswith("fid_"))
        role = "best FID: best.pt, the fakes' generator" if step == best.get("step") else "last"
        ax.set_title(f"step {step} ({role})" + (f"\n{fid}" if fid else ""), fontsize=9)
    if not shown:
        not_run(axes[0], f"no sample grids in {samples_dir}")
        axes[0].axis("off")
    fig.suptitle(f"gan_simclr GAN samples, {quality.get('method') or 'GAN'}, scale {scale}"
                 + (f"\n{quality['fid_label']}" if quality.get("fid_label") else ""), fontsize=10)
    return fig


# ---------------------------------------------------------------- the stage

def gan_quality(gan_metrics: str | Path, scale: str) -> dict:
    """The GAN's sample quality from the train_gan stage's record, with its detector's label."""
    record = records.read(gan_metrics)
    if record.scale != scale:
        raise ValueError(f"{gan_metrics} is from scale {record.scale!r}, the report is for {scale!r}")
    # what the record says of its FID (shared.metrics.FIDScorer.describe: counts, reference, detector, IS source)
    keep = ("fid_label", "fid_samples", "fid_n_generated", "fid_n_reference", "fid_reference", "fid_detector",
            "is_label", "is_note", "best", "final", "steps", "kimg", "train_images", "method",
            "indomain")  # the in-domain FID's description when the fid_* ones are the final Inception FID's
    return {k: record.extra.get(k) for k in keep}


def make_report(reported: str | Path, metrics_dir: str | Path | None, scale: str, out: str | Path,
                gan_metrics: str | Path | None = None, allow_dirty: bool = False,
                runs: str | Path | None = None) -> Report:
    """Everything the module docstring lists, for one scale; returns what it wrote.

    The records are those under ``metrics_dir`` and ``gan_metrics`` with their committed copies under
    ``runs`` (default ``<out>/runs``); ``metrics_dir`` None reads the copies alone.
    """
    out = Path(out)
    runs = out / records.RUNS if runs is None else Path(runs)
    pretrain = records.gather(metrics_dir, runs / "pretrain", exclude=out,
                              hint="make it with the pretrain stage (dvc repro papers/gan_simclr/dvc.yaml)")
    gan_name = "metrics.json" if gan_metrics is None else Path(gan_metrics).name
    gan = records.gather(None if gan_metrics is None else Path(gan_metrics).parent, runs / "gan", gan_name,
                         recursive=False, hint="make it with the train_gan stage")
    if gan_metrics is not None and not gan.files:
        raise FileNotFoundError(f"metrics record not found: {gan_metrics} (nor a copy in {runs / 'gan'})")
    quality = gan_quality(gan.files[gan_name], scale) if gan.files else None
    files = pretrain.paths()
    if not files:
        print(f"warning: no metrics files under {metrics_dir} or {runs / 'pretrain'}; every row is 'not run'",
              file=sys.stderr)
    # compare first: it validates every file and raises on another scale or paper, or an unknown row
    comparison = compare(reported, files, TABLE, scale, out)
    runs = load_runs(files, scale)
    by_id = {r.id: r for r in comparison.rows}
    table_values = {optimizer: {k: (row.values if (row := by_id.get(row_id(optimizer, k))) is not None else [])
                                for k in FAKE_COUNTS}
                    for optimizer in OPTIMIZERS}
    equal = equal_compute(runs)
    verdicts = claims(table_values, equal)
    printed = {opt: ", ".join(f"{k}: {by_id[row_id(opt, k)].reported_mean:g}" for k in FAKE_COUNTS) for opt in OPTIMIZERS}
    for claim, text in zip(verdicts, (f"LARS, fakes {printed['lars']}", f"Adam, fakes {printed['adam']}",
                                      "Figure 4 (its values are not in the text)")):
        claim["reported"] = text  # what the paper printed, for the suite's scorecard
    report = Report(PAPER, scale, out, {TABLE: comparison}, verdicts, allow_dirty=allow_dirty,
                    paths={"table1.md": comparison.md_path, "table1.json": comparison.json_path})
    report.save_figure("figure3.png", figure3(runs, scale), dpi=120)
    report.save_figure("figure4.png", figure4(runs, equal, scale), dpi=120)
    if gan_metrics is not None and Path(gan_metrics).is_file():  # train_gan writes its grids to samples/ beside it
        report.save_figure("gan_samples.png", gan_samples(Path(gan_metrics).parent / "samples", quality, scale))
    report.write_json("figure4.json", {"metric": "linear_test_acc", "unit": "%", "std": STD_NOTE,
                                       "rule": EQUAL_COMPUTE_RULE, "optimizers": equal})
    report.write_claims("the tests are this suite's, not the paper's (it gives none); fewer than 2 seeds in a "
                        "setup -> inconclusive; per-run records in runs/")
    if quality is not None:
        report.write_json("gan_quality.json", quality)
    # the headline numbers as flat JSON for DVC (`dvc metrics show / diff`): each row's mean, std, seeds
    atomic_write_text(out / "summary.json", json.dumps({
        TABLE: {r.id: {"mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n} for r in comparison.rows if r.n},
        "claims": {c["id"]: c["verdict"] for c in verdicts}}, indent=2) + "\n")
    pretrain.copy_to(out / records.RUNS / "pretrain")  # last: only a report that finished commits its inputs
    gan.copy_to(out / records.RUNS / "gan")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(PAPER, __doc__)
    parser.add_argument("--metrics-dir", type=Path, default=None,
                        help="the pretrain stage's outputs (required unless --from-runs)")
    parser.add_argument("--gan-metrics", type=Path, default=None,
                        help="the train_gan stage's metrics.json: its FID goes into gan_quality.json")

    def make(a) -> Report:
        if a.metrics_dir is None and not a.from_runs:
            raise ValueError("--metrics-dir is required (or --from-runs: the committed records alone)")
        return make_report(a.reported, None if a.from_runs else a.metrics_dir, a.scale, a.out,
                           None if a.from_runs else a.gan_metrics, a.allow_dirty, runs_dir(a))

    return run_report(parser, make, argv)


if __name__ == "__main__":
    sys.exit(main())
