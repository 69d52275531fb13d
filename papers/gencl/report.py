"""Stage `report`: GenCL's Tables 1-4 reproduced vs reported, the claims of the wave-2 spec (1.B), the figures.

    python -m papers.gencl.report --reported papers/gencl/reported.yaml --eval-dir papers/gencl/outputs/eval \\
        --cost-dir papers/gencl/outputs/cost --augment-dir papers/gencl/outputs/augment \\
        --generators-dir papers/gencl/outputs --prepared data/prepared/tinyimagenet100 \\
        --indices data/subsets/tinyimagenet100_ssl10k.npy --scale mini --out papers/gencl/results/mini [--log]
    python -m papers.gencl.report --scale mini --out papers/gencl/results/mini --from-runs

Reads the evaluate stage's records, one per (run, seed) (every ``metrics.json`` under ``--eval-dir``: table
``runs``, row = the run's name, ``cells`` = the (table, row label as printed) pairs the run fills, metrics
``lin_top1``, ``lin_top5``, ``semi1_top1``, ``semi1_top5``, ``semi10_top1``, ``semi10_top5``, ``knn_top1``, and
``semi_protocol``), and the cost stage's (``--cost-dir``: ``rows/<row>/table4_{fid,ssim,time_ms,params_m}.json``),
each with its committed copies under ``<out>/runs/`` (shared.records.gather: the stage's copy wins, a skip marker
hides a committed copy). One run fills several cells (``baseline`` is Table 2's and Table 3's 0%,
``pair_generative`` Table 1's Generative and Table 4's Noise-Based): each of reported.yaml's tables (one per
column) is compared (shared.comparison.compare) on copies of the records of the runs filling it, relabelled with
the table and the row id whose label is the cell's. Writes into --out:

  <table>.md / .json          reported vs reproduced for the 23 tables (table{1,2,3}_<column>, table4_*): mean ±
                              sample std (ddof=1) over seeds; the semi-supervised tables say "(linear probe)" in
                              their caption and figure where the records' semi_protocol is linear_probe; Table 4's
                              FID is compared under the key the cost records carry (fid_indomain: no delta)
  <table>_vs_reported.png     each row's seeds, mean ± std beside the printed number (shared.report)
  tables.md                   every table, one after another
  gamma.png                   linear top-1 vs gamma, mask- and noise-based: each seed, mean ± std band; the
                              paper's Tables 2-3 dashed on the right axis
  pairings.png                Table 1: linear top-1 per pairing (bars: mean, each seed a dot, ± std) and the
                              paper's numbers
  augmentations.png           rows of original | mask-based | noise-based for a few SSL images, read from the
                              augment stages' .npy files by SSL position (every row's source fingerprint checked)
  mask_grid.png, noise_pairs.png   copies of the augment stages' grids, where they exist
  tokenizer_recon.png, icgan_neighbourhoods.png   copies of the generator stages' pictures (``--generators-dir``):
                              held-out images and their VQ reconstructions; IC-GAN instances | samples | neighbours
  claims.json                 the claims G1-G18 the runs allow (shared.claims tests on per-seed values)
  summary.json                per table and row: reported, mean, std, n, seeds; every run's numbers (knn_top1
                              too); Table 4's time ratios; the semi protocol; the generators' headline numbers
                              (``generators``: the tokenizer's, in-painter's and IC-GAN's records); the verdicts
  runs/eval/..., runs/cost/..., runs/generators/...   every record read, committed (--from-runs recomputes tables
                              and claims alone)

The paper prints one number per cell and gives no test; the tests are the suite's (one-sided Welch t-tests,
Holm over the parts of a claim that names several, the OLS slope for a trend) at alpha 0.05. Table 4's FID,
SSIM and time are one measurement per augmentation: their orderings are reported as observed, with no test and
the verdict inconclusive.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from papers.gencl.runs import RUN_NAMES, get_run, runs_of
from shared import records
from shared.claims import beats, best_of, each_of, increases, seed_stats
from shared.comparison import VS_REPORTED, Comparison, compare, load_reported
from shared.data import evenly_spaced, load_indices, load_prepared
from shared.io import atomic_write, atomic_write_text
from shared.report import (Report, band, figure, not_run, report_parser, reported_vs_reproduced, run_report, runs_dir,
                           stage_headline)
from shared.view_sources import PrecomputedViews

PAPER = "gencl"
COLUMNS = ("lin_top1", "lin_top5", "semi1_top1", "semi10_top1", "semi1_top5", "semi10_top5")  # reported.yaml's
SEMI = tuple(c for c in COLUMNS if c.startswith("semi"))
METRIC = "lin_top1"  # the claims' metric (the paper's text argues on linear top-1)
EXTRA_METRICS = ("knn_top1",)  # in the records, in no table
EVAL_TABLES = tuple(f"table{i}_{c}" for i in (1, 2, 3) for c in COLUMNS) + ("table4_lin_top1",)
COST_TABLES = {"table4_fid": None, "table4_ssim": "ssim", "table4_time_ms": "time_ms", "table4_params_m": "params_m"}
FID_KEYS = ("fid_inception", "fid_indomain")  # the cost stage's FID key names its detector
LINEAR_PROBE = "linear_probe"
# Table 1's pairings (spec 1.B G4: crop and flip are geometric; solarization, colour jitter, blur and greyscale
# are the paper's "color augmentations", blur counted with them as in Sec. 4.1)
GENERATIVE = "pair_generative"
GEOMETRIC = ("pair_crop", "pair_flip")
COLOUR = ("pair_solarize", "pair_jitter", "pair_blur", "pair_grayscale")
PAIRINGS = (GENERATIVE, *GEOMETRIC, *COLOUR)
BASELINE, MASK_GENONLY = "baseline", "mask_genonly"
# gamma -> run, per generator (Tables 2 and 3; gamma 0 is the shared baseline)
GAMMA_RUNS = {gen: {r.gamma: r.name for r in runs_of(table)} for gen, table in (("noise", "table2"),
                                                                              ("mask", "table3"))}
COST_ROWS = ("noise", "mask", "crop", "jitter", "blur")  # Table 4's rows (reported.yaml ids)
GRIDS = (("mask_grid.png", "mask/grid.png"), ("noise_pairs.png", "noise/pairs.png"))  # (output, under augment-dir)
# the generator stages' records and pictures, under --generators-dir: (name, stage folder), (output, path)
GENERATORS = (("tokenizer", "tokenizer"), ("inpainter", "inpainter"), ("icgan", "icgan/train"))
GENERATOR_GRIDS = (("tokenizer_recon.png", "tokenizer/recon.png"),
                   ("icgan_neighbourhoods.png", "icgan/train/neighbourhoods.png"))
AUGMENT = {"mask": ("mask/mask.npy", "papers/gencl/dvc.yaml:mask_augment"),
           "noise": ("noise/noise.npy", "papers/gencl/dvc.yaml:noise_augment")}
GRID_IMAGES = 8
HINT = "make it with dvc repro papers/gencl/dvc.yaml"


# ---------------------------------------------------------------- the evaluate records

@dataclasses.dataclass
class Evaluated:
    """One evaluate record: a (run, seed) with its numbers and the cells it fills."""
    path: Path
    record: records.MetricsRecord
    run: str
    cells: tuple[tuple[str, str], ...]

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def semi_protocol(self) -> str | None:
        return self.record.extra.get("semi_protocol")


def load_evaluated(files: list[Path], scale: str) -> list[Evaluated]:
    """The evaluate records among ``files``; raises naming the file and the key on one that does not fit."""
    found, seen = [], {}
    for path in files:
        record = records.read(path)
        if record.skipped:
            continue
        where = f"{path}: "
        if record.paper != PAPER or record.stage != "evaluate":
            raise ValueError(f"{where}paper/stage {record.paper}/{record.stage}, expected {PAPER}/evaluate")
        if record.scale != scale:
            raise ValueError(f"{where}scale {record.scale!r} but the report is for scale {scale!r}; never mix scales")
        run = record.extra.get("run", record.row)
        if run not in RUN_NAMES:
            raise ValueError(f"{where}key 'run': {run!r} is not a run of papers/gencl/runs.py")
        cells = tuple(tuple(c) for c in record.extra.get("cells") or get_run(run).rows)
        if set(cells) != set(get_run(run).rows):
            raise ValueError(f"{where}key 'cells': {list(cells)} but the registry says run {run!r} fills "
                             f"{list(get_run(run).rows)}: re-run its evaluation")
        for key in COLUMNS:
            if not isinstance(record.metrics.get(key), (int, float)):
                raise ValueError(f"{where}key 'metrics.{key}': missing (has {sorted(record.metrics)})")
        if record.seed is None or (run, record.seed) in seen:
            raise ValueError(f"seed {record.seed} of run {run!r} is missing or appears twice: "
                             f"{seen.get((run, record.seed))} and {path}")
        seen[run, record.seed] = path
        found.append(Evaluated(path, record, run, cells))
    return sorted(found, key=lambda e: (e.run, e.seed))


def per_seed(evaluated: list[Evaluated], metric: str = METRIC) -> dict[str, list[float]]:
    """{run: its seeds' values in seed order} for every run of the registry ([] where it did not run)."""
    out: dict[str, list[float]] = {name: [] for name in RUN_NAMES}
    for e in evaluated:
        if isinstance(e.record.metrics.get(metric), (int, float)):
            out[e.run].append(float(e.record.metrics[metric]))
    return out


def semi_protocol(evaluated: list[Evaluated]) -> str | None:
    """The records' one semi-supervised protocol (finetune | linear_probe; None without records or key)."""
    protocols = {e.semi_protocol for e in evaluated} - {None}
    if len(protocols) > 1:
        which = {p: sorted({f"{e.run}/seed{e.seed}" for e in evaluated if e.semi_protocol == p}) for p in protocols}
        raise ValueError(f"the evaluate records mix semi-supervised protocols {which}: one table cannot hold both")
    return protocols.pop() if protocols else None


def row_of(doc: dict, table: str, label: str) -> str:
    """The id of the row of reported table ``table`` whose label is ``label`` (a cell's label as printed)."""
    rows = [r["id"] for r in doc["tables"][table]["rows"] if label in map(str, r["label"].values())]
    if len(rows) != 1:
        raise ValueError(f"reported.yaml table {table}: {len(rows)} rows labelled {label!r} (ids {rows}); "
                         f"the run registry's labels must name exactly one row")
    return rows[0]


def cells_of(doc: dict, table: str, evaluated: list[Evaluated]) -> list[tuple[Evaluated, str]]:
    """(record, row id) for every record whose run fills a cell of reported table ``table`` (``table1_lin_top1``
    takes the cells of ``table1``)."""
    paper_table = table.split("_")[0]
    return [(e, row_of(doc, table, label)) for e in evaluated for t, label in e.cells if t == paper_table]


def split_reported(doc: dict, tables, protocol: str | None, tmp: Path) -> dict[str, Path]:
    """{table: a reported.yaml copy in ``tmp`` holding that table alone}, so that each :func:`compare` parses one
    table, not the paper's 23 (0.5 s a parse); the semi-supervised captions say how the suite measured them when
    the records' protocol is the linear probe (``doc``: reported.yaml as :func:`load_reported` reads it)."""
    out = {}
    for name in tables:
        table = dict(doc["tables"][name])
        if protocol == LINEAR_PROBE and name.endswith(SEMI):
            table["caption"] = (f"{table['caption']} Reproduced (linear probe): a linear head on the frozen encoder's "
                                f"features of the 1% / 10% label subsets, not the paper's fine-tuning.")
        out[name] = tmp / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump({"paper": doc["paper"], "source": doc["source"], "tables": {name: table}},
                                            sort_keys=False, allow_unicode=True))
    return out


def compare_eval_tables(reported: Path, evaluated: list[Evaluated], scale: str, out: Path,
                        protocol: str | None) -> dict[str, Comparison]:
    """Every reported table of Tables 1-4 measured by the evaluate stage, compared on copies of its runs' records
    relabelled (table, row id): a record is named table ``runs`` and one run fills several tables."""
    doc = load_reported(reported)
    comparisons = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = split_reported(doc, EVAL_TABLES, protocol, Path(tmp))
        for table in EVAL_TABLES:
            files = [records.write(Path(tmp) / table / f"{e.run}_seed{e.seed}.json",
                                   dataclasses.replace(e.record, table=table, row=row, extra={}))
                     for e, row in cells_of(doc, table, evaluated)]
            comparisons[table] = compare(sources[table], files, table, scale, out)
    return comparisons


# ---------------------------------------------------------------- the cost records (Table 4)

def load_cost(gathered: dict[str, records.Gathered], scale: str) -> dict[str, list[Path]]:
    """{table: its record files}; each must name its table, this paper and scale, and a known row."""
    out = {}
    for table, found in gathered.items():
        out[table] = []
        for path in found.paths():
            record = records.read(path)
            if record.paper != PAPER or record.scale != scale or record.table != table or record.row not in COST_ROWS:
                raise ValueError(f"{path}: paper/scale/table/row {record.paper}/{record.scale}/{record.table}/"
                                 f"{record.row}, expected {PAPER}/{scale}/{table}/one of {COST_ROWS}")
            out[table].append(path)
    return out


def fid_key(files: list[Path]) -> str | None:
    """The FID key the cost records carry (its detector); None without records; several kinds are an error."""
    kinds = {k for path in files for k in records.read(path).metrics if k in FID_KEYS}
    if len(kinds) > 1:
        raise ValueError(f"the table4_fid records mix FID detectors {sorted(kinds)}: never compare across detectors")
    return kinds.pop() if kinds else None


def compare_cost_tables(reported: Path, files: dict[str, list[Path]], scale: str,
                        out: Path) -> dict[str, Comparison]:
    comparisons = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = split_reported(load_reported(reported), COST_TABLES, None, Path(tmp))
        for table, metric in COST_TABLES.items():
            metric = fid_key(files[table]) if table == "table4_fid" else metric
            comparisons[table] = compare(sources[table], files[table], table, scale, out, metric=metric)
    return comparisons


def cost_values(comparisons: dict[str, Comparison]) -> dict[str, dict[str, list[float]]]:
    """{table: {row id: values}} of Table 4's measured columns."""
    return {t: {r.id: list(r.values or []) for r in comparisons[t].rows} for t in COST_TABLES}


def measuring_runs(files: list[Path]) -> dict[str, str]:
    """{row: the cost run that measured it (its record's commit and command)}: per-image times compare only
    within one run (the same machine and load), FID and SSIM across runs too."""
    out = {}
    for path in files:
        record = records.read(path)
        out[record.row] = f"{record.provenance.get('commit')} {record.provenance.get('command')}"
    return out


def time_ratios(times: dict[str, list[float]], runs: dict[str, str] | None = None) -> dict[str, float | str]:
    """mask / other per-image time (the paper: 4.99 vs noise, 26.7-170.6 vs the classic ops), for the rows timed
    in the mask row's cost run (``runs``: :func:`measuring_runs`); a row timed in another run is named, no ratio."""
    mean = {k: float(np.mean(v)) for k, v in times.items() if v}
    if "mask" not in mean:
        return {}
    runs = runs or {}
    apart = sorted(k for k in mean if runs.get(k) != runs.get("mask"))
    out: dict[str, float | str] = {f"mask_over_{k}": mean["mask"] / v for k, v in mean.items()
                                   if k != "mask" and k not in apart and v > 0}
    if apart:
        out["not_compared"] = f"timed in another cost run than mask's (machine and load differ): {', '.join(apart)}"
    return out


# ---------------------------------------------------------------- claims

def ordering(values: dict[str, list[float]], target: str, other: str, higher_is_better: bool) -> dict:
    """"``target`` is better than ``other``" on a measurement: :func:`shared.claims.beats` where both have >= 2
    values; with one measurement each (Table 4's FID, SSIM, time) no test exists: the verdict stays inconclusive,
    ``difference`` is the observed one (no CI, no p) and ``observed_direction`` says whether it is the claimed
    order."""
    got = beats(values, target, other, higher_is_better)
    a, b = got["values"][target], got["values"][other]
    if not (len(a) == 1 and len(b) == 1):
        return got
    d = a[0] - b[0]
    agrees = d > 0 if higher_is_better else d < 0
    observed = "as claimed" if agrees else "equal" if d == 0 else "opposite"
    return {**got, "test": "ordering of one measurement per setup (no test)",
            "rule": ("one measurement per setup, no seeds: no test and no p-value; the verdict stays inconclusive and "
                     "observed_direction says whether the observed order is the claimed one"),
            "difference": d, "observed_direction": observed,
            "reason": (f"one measurement per setup (n = 1): no test; observed {target} {a[0]:.4g} vs {other} "
                       f"{b[0]:.4g} ({'higher' if higher_is_better else 'lower'} is better): {observed}")}


def printed(doc: dict, table: str, *runs: str) -> str:
    """What the paper prints for ``runs`` in reported table ``table`` ("run value", "not printed" where no cell)."""
    parts = []
    for run in runs:
        label = next((lab for t, lab in get_run(run).rows if t == table.split("_")[0]), None)
        value = None if label is None else next(r["mean"] for r in doc["tables"][table]["rows"]
                                                if r["id"] == row_of(doc, table, label))
        parts.append(f"{run} {'not printed' if value is None else format(value, 'g')}")
    return ", ".join(parts)


def claims(values: dict[str, dict[str, list[float]]], cost: dict[str, dict[str, list[float]]],
           doc: dict, time_runs: dict[str, str] | None = None) -> list[dict]:
    """The claims of the wave-2 spec (1.B) the runs allow: G1-G9, G11, G14, G15 on per-seed accuracies,
    G16-G18 as orderings of Table 4's single measurements (G18's times: ``time_runs``, :func:`measuring_runs`;
    a pair timed in different cost runs says so)."""
    v = values[METRIC]

    def pick(*runs: str, metric: str = METRIC) -> dict[str, list[float]]:
        return {r: values[metric][r] for r in runs}

    def claim(id_: str, text: str, source: str, data: str, reported: str, result: dict) -> dict:
        return {"id": id_, "claim": text, "source": source, "reported": reported, "data": data, **result}

    t1, t2, t3, t4 = "table1_lin_top1", "table2_lin_top1", "table3_lin_top1", "table4_lin_top1"
    noise, mask = GAMMA_RUNS["noise"], GAMMA_RUNS["mask"]
    positive = [g for g in sorted(mask) if g > 0]
    lin = f"final {METRIC} (linear top-1, %) of runs"
    out = [
        claim("G1", "Crop + Generative has the highest linear top-1 of Table 1's seven pairings", "Table 1; Sec. 4.1",
              f"{lin} {', '.join(PAIRINGS)}", printed(doc, t1, *PAIRINGS), best_of(pick(*PAIRINGS), "pair_crop")),
        claim("G2", "Crop + Generative beats Generative alone (+8.4 linear top-1)", "Table 1; Sec. 4.1",
              f"{lin} pair_crop, {GENERATIVE}", printed(doc, t1, "pair_crop", GENERATIVE),
              beats(v, "pair_crop", GENERATIVE)),
        claim("G3", "Flip + Generative beats Generative alone (+3.0 linear top-1)", "Table 1; Sec. 4.1",
              f"{lin} pair_flip, {GENERATIVE}", printed(doc, t1, "pair_flip", GENERATIVE),
              beats(v, "pair_flip", GENERATIVE)),
        claim("G4", "both geometric pairings (crop, flip) beat every colour pairing (solarization, colour jitter, "
              "blur, greyscale) in linear top-1: 8 comparisons", "Table 1; Sec. 4.1",
              f"{lin} {', '.join(GEOMETRIC + COLOUR)}", printed(doc, t1, *GEOMETRIC, *COLOUR),
              each_of({f"{g} vs {c}": beats(pick(g, c), g, c) for g in GEOMETRIC for c in COLOUR}, "pair")),
        claim("G5", "Solarization + Generative and Color Jitter + Generative beat Generative alone (~1%)",
              "Table 1; Sec. 4.1", f"{lin} pair_solarize, pair_jitter, {GENERATIVE}",
              printed(doc, t1, "pair_solarize", "pair_jitter", GENERATIVE),
              each_of({r: beats(pick(r, GENERATIVE), r, GENERATIVE) for r in ("pair_solarize", "pair_jitter")},
                     "pairing")),
        claim("G6", "Greyscale + Generative is below Generative alone", "Table 1; Sec. 4.1",
              f"{lin} {GENERATIVE}, pair_grayscale", printed(doc, t1, GENERATIVE, "pair_grayscale"),
              beats(v, GENERATIVE, "pair_grayscale")),
        claim("G7", "noise-based gamma 25% has the highest linear top-1 of Table 2's rates", "Table 2; Sec. 4.2",
              f"{lin} {', '.join(noise.values())}", printed(doc, t2, *noise.values()),
              best_of(pick(*noise.values()), noise[0.25])),
        claim("G9", "noise-based gamma 100% is below gamma 0% (plain VICReg)", "Table 2; Sec. 4.2",
              f"{lin} {BASELINE}, {noise[1.0]}", printed(doc, t2, BASELINE, noise[1.0]),
              beats(v, BASELINE, noise[1.0])),
        claim("G9b", "noise-based gamma 75% is below gamma 0%", "Table 2; Sec. 4.2",
              f"{lin} {BASELINE}, {noise[0.75]}", printed(doc, t2, BASELINE, noise[0.75]),
              beats(v, BASELINE, noise[0.75])),
        claim("G9c", "noise-based linear top-1 decreases with gamma from 25% to 100%", "Table 2; Sec. 4.2",
              f"{lin} {', '.join(noise[g] for g in positive)}", printed(doc, t2, *(noise[g] for g in positive)),
              increases(pick(*(noise[g] for g in positive)), {noise[g]: g for g in positive}, increasing=False,
                        x_unit="unit of gamma (0.25 = 25%)")),
        claim("G11", "every mask-based gamma > 0 beats gamma 0% in linear top-1", "Table 3; Sec. 4.2 (\"any amount "
              "of mask-based augmentations increases our downstream accuracy\")",
              f"{lin} {BASELINE}, {', '.join(mask[g] for g in positive)}", printed(doc, t3, *mask.values()),
              each_of({mask[g]: beats(pick(mask[g], BASELINE), mask[g], BASELINE) for g in positive}, "gamma")),
        claim("G11_columns", "every mask-based gamma > 0 beats gamma 0% in all six columns (24 comparisons)",
              "Table 3 (spec 1.B G11)", f"final values of every column of runs {BASELINE}, "
              f"{', '.join(mask[g] for g in positive)}", "Table 3: every gamma > 0 above 0% in all six columns",
              each_of({f"{mask[g]} {c}": beats({f"{mask[g]}:{c}": values[c][mask[g]], f"{BASELINE}:{c}":
                                              values[c][BASELINE]}, f"{mask[g]}:{c}", f"{BASELINE}:{c}")
                      for g in positive for c in COLUMNS}, "cell")),
        claim("G14", "mask-based beats noise-based at every gamma (25, 50, 75, 100%) in linear top-1",
              "Tables 2-3; Sec. 4.2", f"{lin} {', '.join(mask[g] + ' / ' + noise[g] for g in positive)}",
              "; ".join(f"{printed(doc, t3, mask[g])} vs {printed(doc, t2, noise[g])}" for g in positive),
              each_of({f"gamma {g:g}": beats(pick(mask[g], noise[g]), mask[g], noise[g]) for g in positive}, "gamma")),
        claim("G14_columns", "mask-based beats noise-based at every gamma > 0 in all six columns (24 comparisons)",
              "Tables 2-3 (spec 1.B G14)", f"final values of every column of the mask and noise runs at gamma "
              f"{', '.join(f'{g:g}' for g in positive)}", "Tables 2-3: mask above noise in every cell",
              each_of({f"gamma {g:g} {c}": beats({f"{mask[g]}:{c}": values[c][mask[g]],
                                                 f"{noise[g]}:{c}": values[c][noise[g]]},
                                                f"{mask[g]}:{c}", f"{noise[g]}:{c}")
                      for g in positive for c in COLUMNS}, "cell")),
        claim("G15", "mask-based generative-only beats noise-based generative-only in linear top-1 (+13.4)",
              "Table 4; Sec. 4.3", f"{lin} {MASK_GENONLY}, {GENERATIVE}", printed(doc, t4, MASK_GENONLY, GENERATIVE),
              beats(v, MASK_GENONLY, GENERATIVE)),
    ]
    fid, ssim, time = cost["table4_fid"], cost["table4_ssim"], cost["table4_time_ms"]
    reported = {t: {r["id"]: r["mean"] for r in doc["tables"][t]["rows"]}
                for t in ("table4_fid", "table4_ssim", "table4_time_ms")}

    def shown(table: str, *rows: str) -> str:
        return ", ".join(f"{r} {reported[table][r]:g}" for r in rows)

    def timed(result: dict, other: str) -> dict:
        runs = time_runs or {}
        if runs.get("mask") == runs.get(other):
            return result
        return {**result, "caveat": f"mask and {other} were timed in different cost runs (machine and load differ): "
                                    "the observed order is not a like-for-like comparison"}

    out += [
        claim("G16", "the mask-based augmentations are closer to the originals than the noise-based ones: lower FID",
              "Table 4; Sec. 4.3", "table4_fid records (one set-level FID per augmentation)",
              shown("table4_fid", "mask", "noise"), ordering(fid, "mask", "noise", higher_is_better=False)),
        claim("G17", "the mask-based augmentations keep more structure than the noise-based ones: higher SSIM",
              "Table 4; Sec. 4.3", "table4_ssim records (mean SSIM per augmentation)",
              shown("table4_ssim", "mask", "noise"), ordering(ssim, "mask", "noise", higher_is_better=True)),
        claim("G18", "mask-based augmentation is slower per image than noise-based (~5x)", "Table 4; Sec. 4.3",
              "table4_time_ms records (batch 1)", shown("table4_time_ms", "mask", "noise"),
              timed(ordering(time, "mask", "noise", higher_is_better=True), "noise")),
    ]
    for op in ("crop", "jitter", "blur"):
        out.append(claim(f"G18_{op}", f"mask-based augmentation is slower per image than {op}",
                         "Table 4; Sec. 4.3 (\"27-171 times slower\")", "table4_time_ms records (batch 1)",
                         shown("table4_time_ms", "mask", op),
                         timed(ordering(time, "mask", op, higher_is_better=True), op)))
    return out


# ---------------------------------------------------------------- figures

def gamma_figure(values: dict[str, list[float]], doc: dict, scale: str):
    """Linear top-1 vs gamma, mask- and noise-based: each seed (open circles), mean ± std band (reproduced, left
    axis); the paper's Tables 2-3 dashed (right axis: another dataset and encoder)."""
    fig, (ax,) = figure(1, width=7.0, height=4.6)
    right = ax.twinx()
    drawn = False
    for i, (gen, table) in enumerate((("noise", "table2"), ("mask", "table3"))):
        color = f"C{i}"
        ran = {g: values[r] for g, r in sorted(GAMMA_RUNS[gen].items()) if values[r]}
        for g, xs in ran.items():
            ax.scatter([g] * len(xs), xs, s=14, facecolors="none", edgecolors=color, linewidths=0.8)
        if ran:
            stats = [seed_stats(xs) for xs in ran.values()]
            std = [s["std"] for s in stats]
            band(ax, list(ran), [s["mean"] for s in stats], None if None in std else np.array(std),
                 f"{gen}-based, reproduced (mean ± std over seeds)", color=color)
            drawn = True
        rows = {r["id"]: r["mean"] for r in doc["tables"][f"{table}_{METRIC}"]["rows"]}
        gammas = sorted(GAMMA_RUNS[gen])
        right.plot(gammas, [rows[row_of(doc, f"{table}_{METRIC}", get_run(GAMMA_RUNS[gen][g]).row(table))]
                            for g in gammas], color=color, linestyle="--", marker="D", markersize=3,
                   label=f"{gen}-based, reported ({table.replace('table', 'Table ')})")
    if not drawn:
        not_run(ax)
    right.set_ylabel("reported linear top-1 (%), ImageNet / ResNet-50", color="C3")
    ax.set(xlabel="gamma (fraction of samples whose generated branch starts from the generated image)",
           ylabel=f"reproduced linear top-1 (%), {scale}", title=f"gencl: linear top-1 vs gamma, scale {scale}")
    ax.set_xticks(sorted(GAMMA_RUNS["mask"]))
    ax.grid(alpha=0.3)
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def pairings_figure(values: dict[str, list[float]], doc: dict, scale: str):
    """Table 1: reproduced linear top-1 per pairing (bar: mean, bar of ± std, each seed a dot) beside the paper's."""
    fig, axes = figure(2, width=5.2, height=4.2)
    names = [get_run(r).row("table1").replace(" + Generative", "\n+ Gen.") for r in PAIRINGS]
    x = np.arange(len(PAIRINGS))
    stats = [seed_stats(values[r]) for r in PAIRINGS]
    ax = axes[0]
    if any(stats):
        ax.bar(x, [s["mean"] if s else 0 for s in stats], yerr=[(s["std"] or 0) if s else 0 for s in stats],
               color=["C1" if r in GEOMETRIC else "C0" if r in COLOUR else "0.5" for r in PAIRINGS], capsize=3)
        for i, r in enumerate(PAIRINGS):
            ax.scatter([i] * len(values[r]), values[r], s=10, color="k", zorder=3)
            if not values[r]:
                ax.text(i, 0, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="gray")
        finite = [v for r in PAIRINGS for v in values[r]]
        ax.set_ylim(min(finite) - 2, max(finite) + 2)
    else:
        not_run(ax)
    reported = doc["tables"][f"table1_{METRIC}"]["rows"]
    axes[1].bar(x, [next(row["mean"] for row in reported if row["id"] == row_of(doc, f"table1_{METRIC}",
                                                                                 get_run(r).row("table1")))
                    for r in PAIRINGS], color=["C1" if r in GEOMETRIC else "C0" if r in COLOUR else "0.5"
                                               for r in PAIRINGS])
    axes[1].set_ylim(50, 64)
    for a, title in ((ax, f"reproduced, {scale} (mean ± std, dots: seeds)"), (axes[1], "reported (Table 1)")):
        a.set_xticks(x, names, fontsize=7)
        a.set(title=title, ylabel="linear top-1 (%)")
        a.grid(axis="y", alpha=0.3)
    fig.suptitle("gencl Table 1: pairings with the noise-based generative view (orange: geometric, blue: colour)",
                 fontsize=10)
    return fig


def augmentation_rows(prepared: Path, indices: Path, augment_dir: Path,
                      n: int = GRID_IMAGES) -> tuple[np.ndarray, dict[str, np.ndarray | None], np.ndarray]:
    """``n`` SSL images spread evenly over the SSL set (positions in --indices order) and their mask- and
    noise-based augmentations (None where the file is absent), read from the augment stages' .npy files by
    position; every row's source fingerprint is checked (a shuffled or misaligned file is an error)."""
    x, _ = load_prepared(prepared, "train")
    rows = load_indices(indices)
    if len(rows) and rows.max() >= len(x):
        raise ValueError(f"{indices}: row {rows.max()} is beyond the prepared train split ({len(x)} rows)")
    positions = evenly_spaced(len(rows), n).numpy()
    originals = torch.from_numpy(x[rows[positions]])
    generated: dict[str, np.ndarray | None] = {}
    for gen, (rel, stage) in AUGMENT.items():
        path = Path(augment_dir) / rel
        if not path.is_file():
            print(f"note: {path} does not exist: the {gen}-based column of augmentations.png is empty",
                  file=sys.stderr)
            generated[gen] = None
            continue
        views = PrecomputedViews(path, stage=stage)
        if len(views) != len(rows):
            raise ValueError(f"{path} holds {len(views)} images, the SSL set ({indices}) {len(rows)}: made for "
                             f"another set; rerun `dvc repro {stage}`")
        img = views.generated(originals, torch.from_numpy(positions))  # checks every row's fingerprint
        generated[gen] = (img * 255).round().to(torch.uint8).numpy()
    return originals.numpy(), generated, positions


def augmentations_figure(originals: np.ndarray, generated: dict[str, np.ndarray | None], positions: np.ndarray,
                         scale: str):
    """Rows of original | mask-based | noise-based (a grey tile where a file is absent)."""
    columns = [("original", originals), ("mask-based", generated["mask"]), ("noise-based", generated["noise"])]
    n, c, h, w = originals.shape
    pad = 2
    grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for j, (_, imgs) in enumerate(columns):
        for i in range(n):
            tile = np.full((h, w, 3), 160, np.uint8) if imgs is None else np.moveaxis(imgs[i], 0, -1)
            tile = np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile
            grid[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = tile
    fig, (ax,) = figure(1, width=1.3 * len(columns) + 0.8, height=1.1 * n + 0.8)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([pad + j * (w + pad) + w / 2 for j in range(len(columns))],
                  [name + (" (absent)" if imgs is None else "") for name, imgs in columns], fontsize=8)
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(n)], [f"#{p}" for p in positions], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"gencl augmentations, scale {scale}\n(SSL-set position #)", fontsize=9)
    return fig


def copy_grids(sources: dict[str, Path | None], out: Path) -> dict[str, Path]:
    """Copy each stage picture ``sources[name]`` into ``out/name`` (None: nothing to copy, a committed copy
    stays); returns every one ``out`` holds."""
    held = {}
    for name, src in sources.items():
        if src is not None and src.is_file():
            data = src.read_bytes()
            atomic_write(out / name, lambda f, data=data: f.write(data))
        elif src is not None:
            print(f"note: no {src}: {name} not copied", file=sys.stderr)
        if (out / name).is_file():
            held[name] = out / name
    return held


# ---------------------------------------------------------------- the report

def make_report(args) -> Report:
    """The report at one scale from the stages' records and their committed copies (``--from-runs``: the copies
    alone)."""
    out = Path(args.out)
    runs = runs_dir(args)
    own = (lambda d: None) if args.from_runs else (lambda d: d)
    doc = load_reported(args.reported)
    found = records.gather(own(args.eval_dir), runs / "eval", "metrics.json", exclude=out, hint=HINT)
    cost_found = {t: records.gather(own(args.cost_dir), runs / "cost", f"{t}.json", exclude=out, hint=HINT,
                                    optional=True) for t in COST_TABLES}
    generators_dir = own(args.generators_dir)
    generators = {name: records.gather(None if generators_dir is None else generators_dir / rel,
                                       runs / "generators" / name, exclude=out, recursive=False, hint=HINT,
                                       optional=True)
                  for name, rel in GENERATORS}
    evaluated = load_evaluated(found.paths(), args.scale)
    if not evaluated:
        print(f"warning: no evaluate records under {args.eval_dir} or {runs / 'eval'}: every row is 'not run'",
              file=sys.stderr)
    protocol = semi_protocol(evaluated)
    values = {m: per_seed(evaluated, m) for m in (*COLUMNS, *EXTRA_METRICS)}
    comparisons = compare_eval_tables(args.reported, evaluated, args.scale, out, protocol)
    cost_files = load_cost(cost_found, args.scale)
    comparisons.update(compare_cost_tables(args.reported, cost_files, args.scale, out))
    cost = cost_values(comparisons)
    time_runs = measuring_runs(cost_files["table4_time_ms"])
    verdicts = claims(values, cost, doc, time_runs)

    report = Report(PAPER, args.scale, out, comparisons, verdicts, allow_dirty=args.allow_dirty)
    if protocol == LINEAR_PROBE:  # the shared figure again, its title saying how the semi columns were measured
        for table in (t for t in comparisons if t.endswith(SEMI)):
            fig = reported_vs_reproduced(comparisons[table])
            fig.axes[0].set_title(f"{fig.axes[0].get_title()}\nsemi-supervised column reproduced as a linear probe "
                                  f"(not fine-tuned)", fontsize=10)
            report.save_figure(VS_REPORTED.format(table=table), fig)
    atomic_write_text(out / "tables.md", "\n".join(c.md_path.read_text() for c in comparisons.values()))
    report.save_figure("gamma.png", gamma_figure(values[METRIC], doc, args.scale), dpi=120)
    report.save_figure("pairings.png", pairings_figure(values[METRIC], doc, args.scale), dpi=120)
    augment_dir = own(args.augment_dir)
    if augment_dir is not None and args.prepared is not None and args.indices is not None:
        report.save_figure("augmentations.png", augmentations_figure(
            *augmentation_rows(args.prepared, args.indices, augment_dir), args.scale), dpi=120)
    elif (out / "augmentations.png").is_file():  # a report from runs/ keeps the committed grid
        report.paths["augmentations.png"] = out / "augmentations.png"
    report.paths.update(copy_grids(
        {**{name: None if augment_dir is None else augment_dir / rel for name, rel in GRIDS},
         **{name: None if generators_dir is None else generators_dir / rel for name, rel in GENERATOR_GRIDS}}, out))
    label = {LINEAR_PROBE: "linear probe on frozen features (not the paper's fine-tuning)",
             "finetune": "fine-tuned (VICReg's protocol)"}.get(protocol, "no records")
    report.write_claims(
        "the tests are this suite's, not the paper's (it prints one number per cell); Tiny-ImageNet-100 at 64 px "
        "and small generators stand in for ImageNet, IC-GAN and MaskGIT; claims naming several comparisons "
        "Holm-correct over those that ran; fewer than 2 seeds in a setup -> inconclusive; Table 4's FID, SSIM and "
        "time are one measurement per augmentation: their orderings are observed, never tested; per-run records "
        "in runs/", semi_protocol=label)
    summary = {
        **{t: {r.id: {"reported": r.reported_mean, "mean": r.reproduced_mean, "std": r.reproduced_std, "n": r.n,
                      "seeds": r.seeds} for r in c.rows} for t, c in comparisons.items()},
        "semi_protocol": protocol, "semi_label": label,
        "fid_metric": comparisons["table4_fid"].metric,
        "runs": {name: {"seeds": [e.seed for e in evaluated if e.run == name],
                        **{m: seed_stats(values[m][name]) for m in (*COLUMNS, *EXTRA_METRICS)}}
                 for name in RUN_NAMES},
        "extra_rows": {"knn_top1": {"note": "weighted kNN top-1 (%) on the frozen features; in no table of the "
                                            "paper", **{n: seed_stats(values["knn_top1"][n]) for n in RUN_NAMES}},
                       "time_ratios": {"note": "mean per-image time of the mask-based augmentation over the others' "
                                               "(the paper: 4.99 over noise, 26.7-170.6 over the classic ops)",
                                       **time_ratios(cost["table4_time_ms"], time_runs)}},
        "generators": {name: {rel: h for rel, path in sorted(g.files.items())
                              if (h := stage_headline(path, PAPER, args.scale))} for name, g in generators.items()},
        "figures": sorted(name for name in report.paths if name.endswith(".png")),
        "claims": {c["id"]: c["verdict"] for c in verdicts},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    report.paths["summary.json"] = out / "summary.json"
    found.copy_to(out / records.RUNS / "eval")  # last: only a report that finished commits its inputs
    for gathered in cost_found.values():
        gathered.copy_to(out / records.RUNS / "cost")
    for name, gathered in generators.items():
        gathered.copy_to(out / records.RUNS / "generators" / name)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(PAPER, __doc__)
    parser.add_argument("--eval-dir", type=Path, default=None,
                        help="the evaluate stage's outputs (required unless --from-runs)")
    parser.add_argument("--cost-dir", type=Path, default=None,
                        help="the cost stage's outputs (rows/<row>/table4_*.json)")
    parser.add_argument("--augment-dir", type=Path, default=None,
                        help="the augment stages' outputs (mask/mask.npy, noise/noise.npy, their grids)")
    parser.add_argument("--generators-dir", type=Path, default=None,
                        help="the package's outputs folder: the generator stages' records and pictures "
                             "(tokenizer/, inpainter/, icgan/train/)")
    parser.add_argument("--prepared", type=Path, default=None, help="the prepared dataset (train.npz)")
    parser.add_argument("--indices", type=Path, default=None, help="the SSL set's train rows (.npy)")

    def make(a) -> Report:
        if a.eval_dir is None and not a.from_runs:
            raise ValueError("--eval-dir is required (or --from-runs: the committed records alone)")
        return make_report(a)

    return run_report(parser, make, argv)


if __name__ == "__main__":
    sys.exit(main())
