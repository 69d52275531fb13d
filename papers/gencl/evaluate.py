"""Stage `evaluate`: one pre-trained encoder's cells of Tables 1-4: linear top-1 / top-5 on frozen features and the
semi-supervised top-1 / top-5 on the 1% and 10% label subsets (VICReg's `evaluate.py` protocol, Sec. 4).

    python -m papers.gencl.evaluate --run pair_crop --seeds 0 1 2 --params papers/gencl/params.yaml \\
        --pretrain papers/gencl/outputs/pretrain/pair_crop \\
        --prepared data/prepared/tinyimagenet100 [--indices <ssl subset>.npy] \\
        --semi1 <1% subset>.npy --semi10 <10% subset>.npy --out papers/gencl/outputs/eval/pair_crop \\
        [--metrics <flat json for DVC>] [--plots <linear head's curves for DVC>]

(the DVC stage: seed i reads ``<pretrain>/seed<i>/encoder.pt`` and writes in ``<out>/seed<i>``, one process per
run; ``--seed i --encoder <encoder.pt>`` instead evaluates one encoder in ``--out`` itself.)

Linear (`evaluate.linear`): the encoder frozen in eval mode; features of the head's training images
(`evaluate.linear_train`: the whole train split, or the SSL subset `--indices`) and of the test split computed
once; a Linear head (weights N(0, 0.01), bias 0) trained on those cached features with SGD momentum 0.9, lr 0.02,
wd 1e-6, batch 256, cosine over `epochs` (VICReg's evaluate.py and README command). The head's accuracy is that
of the **final epoch**: VICReg's script prints the best epoch's (`best_acc`, a max over epochs on the validation
set); that max is recorded beside it (`linear_best_epoch_top1`), never reported. Deviation: VICReg trains the head
on RandomResizedCrop + flip views and tests on Resize(256) + CenterCrop(224); cached features are of the
un-augmented images at the prepared resolution for both.

Semi-supervised (`evaluate.semi_protocol`):
- `finetune` (VICReg's protocol; paper scale, and smoke with a few steps): a copy of the encoder and a new head
  trained together on the labelled subset for 20 epochs, batch 256, SGD momentum 0.9, wd 0, cosine; 1%: lr
  backbone 0.03, head 0.08; 10%: lr backbone 0.01, head 0.1; train views RandomResizedCrop (scale 0.08-1) +
  flip; batch norm in train mode; top-1 / top-5 of the final epoch on the whole test split. Checkpointed each
  epoch (`<out>/checkpoint.pt`).
- `linear_probe` (mini: fine-tuning does not fit the budget): a linear head on the cached frozen features of the
  1% / 10% subsets (`evaluate.probe.semi1` / `.semi10`), final epoch. The record says so
  (`semi_protocol: "linear_probe"`, `semi_label`, `metric_labels`): these are not fine-tuned numbers.

Writes `<out>/metrics.json`: metrics `lin_top1`, `lin_top5`, `semi1_top1`, `semi1_top5`, `semi10_top1`,
`semi10_top5` (%, reported.yaml's metric names) and `knn_top1` (%, weighted kNN on the linear head's features,
when `evaluate.knn_k` > 0); beside them `linear_best_epoch_top1` / `linear_best_epoch` (VICReg's `best_acc`, never
a table's number). One record per run: table `runs`, row the run's name (`--table` / `--row` override them), and
`cells`, the (table, row label) pairs the run fills (papers/gencl/runs.py; a report relabels the record per table);
the curves (`linear_curve`, `semi1_curve`, `semi10_curve`), counts, seconds and protocol notes. A seed the scale
does not run (`runs.n_seeds`), or an encoder the pretrain stage skipped (its skip marker beside the encoder's
path), writes a skip marker. `--metrics` (flat, for DVC): the metrics above, with `--seeds` as `seed<i>/<key>`
per seed that ran; `--plots`: the linear head's test top-1 per epoch, with `--seeds` one `seed<i>` column per seed.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from papers.gencl.encoder import ENCODER_FILE, load_encoder
from papers.gencl.runs import get_run
from shared import checkpoint, config, records
from shared.cli import run_stage, stage_parser
from shared.config import RunsConfig
from shared.data import DeviceLoader, load_indices, load_prepared, sha256_file
from shared.device import autocast, prepare_batch
from shared.stage import start, write_seed_files
from shared.trainers.common import NonFiniteLossError
from shared.trainers.linear_eval import (LinearEvalConfig, extract_features, fit_linear, knn_accuracy,
                                         topk_accuracy, topk_correct)
from shared.views import random_resized_crop

PARAMS = Path(__file__).with_name("params.yaml")
SUBSETS = ("semi1", "semi10")  # the 1% and the 10% label subset
PERCENT = {"semi1": "1%", "semi10": "10%"}
PROTOCOL_LABEL = {"finetune": "fine-tuned", "linear_probe": "linear probe"}


# ---------------------------------------------------------------- config

@dataclasses.dataclass
class VICRegLinearConfig(LinearEvalConfig):
    """A linear head as VICReg's evaluate.py trains it (`--lr-head 0.02`, the README's linear command; wd 1e-6,
    its default): SGD momentum 0.9, batch 256, 100 epochs, cosine, weights N(0, 0.01), bias 0."""
    epochs: int = 100
    optimizer: Literal["adam", "sgd"] = "sgd"
    lr: float = 0.02
    weight_decay: float = 1e-6
    schedule: Literal["multistep", "cosine"] = "cosine"
    init_std: float | None = 0.01


@dataclasses.dataclass
class ProbeConfig:
    """The linear probes that stand in for fine-tuning (`semi_protocol: linear_probe`), one head per subset."""
    semi1: VICRegLinearConfig = dataclasses.field(default_factory=VICRegLinearConfig)
    semi10: VICRegLinearConfig = dataclasses.field(default_factory=VICRegLinearConfig)


@dataclasses.dataclass
class SemiLR:
    lr_backbone: float
    lr_head: float

    def __post_init__(self):
        if self.lr_backbone < 0 or self.lr_head <= 0:
            raise ValueError(f"lr_backbone must be >= 0 and lr_head > 0, got {self.lr_backbone}, {self.lr_head}")


@dataclasses.dataclass
class FinetuneConfig:
    """VICReg's semi-supervised fine-tuning (README: `--weights finetune --train-perc 1|10 --epochs 20
    --lr-backbone 0.03|0.01 --lr-head 0.08|0.1 --weight-decay 0`)."""
    epochs: int = 20
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    init_std: float = 0.01
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop's defaults
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    max_steps: int | None = None  # smoke: stop each subset's fine-tuning after this many optimiser steps
    eval_batch_size: int = 512
    semi1: SemiLR = dataclasses.field(default_factory=lambda: SemiLR(lr_backbone=0.03, lr_head=0.08))
    semi10: SemiLR = dataclasses.field(default_factory=lambda: SemiLR(lr_backbone=0.01, lr_head=0.1))

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")


@dataclasses.dataclass
class EvaluateConfig:
    """`evaluate` of papers/gencl/params.yaml. Defaults: the paper's (VICReg's evaluate.py) protocol."""
    linear: VICRegLinearConfig = dataclasses.field(default_factory=VICRegLinearConfig)
    linear_train: Literal["train", "ssl_subset"] = "train"  # the head's training images: the split or --indices
    semi_protocol: Literal["finetune", "linear_probe"] = "finetune"
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    knn_k: int = 200  # weighted kNN beside the linear head (Wu et al. 2018); 0: none
    knn_temperature: float = 0.1

    def __post_init__(self):
        if self.knn_k < 0 or self.knn_temperature <= 0:
            raise ValueError(f"knn_k must be >= 0 and knn_temperature > 0, got {self.knn_k}, {self.knn_temperature}")


# ---------------------------------------------------------------- linear heads on cached features

def linear_head(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], cfg: LinearEvalConfig,
                num_classes: int) -> dict:
    """A linear head on cached features: top-1 / top-5 (%) on ``test`` of the final epoch's head, the best
    epoch's top-1 beside it (VICReg's `best_acc`; not the reported number) and the per-epoch curve."""
    head, curve = fit_linear(*train, cfg, num_classes, eval_sets={"test": test})
    with torch.no_grad():
        top1, top5 = topk_accuracy(head(test[0]), test[1], (1, 5))
    best = max(curve, key=lambda r: r["test_top1"])
    return {"top1": top1, "top5": top5, "best_epoch_top1": best["test_top1"], "best_epoch": best["epoch"],
            "curve": curve}


# ---------------------------------------------------------------- fine-tuning (VICReg's semi-supervised protocol)

def new_head(feature_dim: int, num_classes: int, init_std: float, seed: int, device: torch.device) -> nn.Linear:
    """Linear(feature_dim, num_classes), weights N(0, init_std) from a CPU generator seeded with ``seed``, bias 0."""
    head = nn.Linear(feature_dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)) * init_std)
        head.bias.zero_()
    return head.to(device)


@torch.no_grad()
def classify(encoder: nn.Module, head: nn.Module, images: Tensor, labels: Tensor, device: torch.device,
             batch_size: int) -> tuple[float, float]:
    """Top-1 / top-5 (%) of ``head(encoder(x))`` over uint8 ``images``, both in eval mode (modes restored)."""
    modes = encoder.training, head.training
    encoder.eval(), head.eval()
    correct = torch.zeros(2, dtype=torch.int64, device=device)
    for first in range(0, len(images), batch_size):
        x = images[first:first + batch_size].to(device).float().div_(255)
        with autocast(device):
            logits = head(encoder(prepare_batch(x, device))).float()
        correct += topk_correct(logits, labels[first:first + batch_size].to(device), (1, 5))
    encoder.train(modes[0]), head.train(modes[1])
    return tuple(c / len(images) * 100 for c in correct.tolist())


def finetune(encoder: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], cfg: FinetuneConfig,
             lr: SemiLR, num_classes: int, device: torch.device, seed: int, *, key: str = "finetune",
             resume: dict | None = None, save: Callable[[dict], None] | None = None,
             progress: bool = False) -> dict:
    """Fine-tune ``encoder`` (in place) and a new linear head on uint8 ``train`` images; top-1 / top-5 (%) on
    ``test`` after every epoch, the final epoch's reported.

    One explicit loop: views (RandomResizedCrop + flip, a device generator seeded with ``seed`` and the epoch),
    forward in train mode, cross-entropy, SGD step (two parameter groups, head and backbone, as VICReg's),
    cosine per epoch. ``save(state)`` is called after every epoch with a state ``resume`` continues from.
    A non-finite epoch loss stops naming ``key`` (the config section of the lrs).
    """
    x_train, y_train = train
    feature_dim = extract_features(encoder, x_train[:1], device).shape[1]
    head = new_head(feature_dim, num_classes, cfg.init_std, seed, device)
    encoder.requires_grad_(True).train()  # a loaded encoder comes frozen (encoder.load_encoder)
    opt = torch.optim.SGD([{"params": head.parameters(), "lr": lr.lr_head},
                           {"params": encoder.parameters(), "lr": lr.lr_backbone}],
                          lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loader = DeviceLoader(x_train, y_train, cfg.batch_size, shuffle=True, seed=seed, device=device)
    start_epoch, step, curve = 0, 0, []
    if resume is not None:
        encoder.load_state_dict(resume["backbone"])
        head.load_state_dict(resume["head"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        start_epoch, step, curve = resume["epoch"], resume["step"], resume["curve"]
    for epoch in tqdm(range(start_epoch, cfg.epochs), desc=key, disable=not progress):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        loader.set_epoch(epoch)
        gen = torch.Generator(device=device).manual_seed(seed + epoch)
        loss_sum, seen = torch.zeros((), device=device), 0
        for x, y, _ in loader:
            views = random_resized_crop(x.float().div_(255), cfg.crop_scale, cfg.crop_ratio, cfg.flip_p, generator=gen)
            with autocast(device):
                logits = head(encoder(prepare_batch(views, device)))
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            seen, step = seen + len(y), step + 1
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        lrs = [g["lr"] for g in opt.param_groups]
        sched.step()
        mean_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"fine-tuning loss is {mean_loss} in epoch {epoch + 1}: lower {key}.lr_backbone "
                                     f"({lr.lr_backbone}) / {key}.lr_head ({lr.lr_head})")
        top1, top5 = classify(encoder, head, *test, device, cfg.eval_batch_size)
        curve.append({"epoch": epoch + 1, "step": step, "loss": mean_loss, "lr_head": lrs[0], "lr_backbone": lrs[1],
                      "test_top1": top1, "test_top5": top5})
        if save is not None:
            save({"epoch": epoch + 1, "step": step, "curve": curve, "backbone": encoder.state_dict(),
                  "head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    if not curve:
        raise RuntimeError(f"{key}: no epoch was trained (epochs {cfg.epochs}, max_steps {cfg.max_steps})")
    return {"top1": curve[-1]["test_top1"], "top5": curve[-1]["test_top5"], "steps": step,
            "epochs": curve[-1]["epoch"], "curve": curve}


# ---------------------------------------------------------------- the stage

def read_subset(path: str | Path, n_train: int, what: str) -> np.ndarray:
    """Sorted unique row indices of the train split from an index file (shared.data.save_indices)."""
    idx = load_indices(path)
    if len(idx) == 0 or idx.max() >= n_train or len(np.unique(idx)) != len(idx):
        raise ValueError(f"{path} ({what}): expected distinct row indices of the train split in [0, {n_train}), "
                         f"got {len(idx)} indices (max {idx.max() if len(idx) else None})")
    return np.sort(idx)


def run_cells(run: str) -> list[list[str]]:
    """The (table, row label) pairs ``run`` fills (the run registry; an unknown name is an error listing the runs)."""
    return [list(cell) for cell in get_run(run).rows]


def pretrain_skipped(encoder: Path) -> str | None:
    """The reason the pretrain stage gave for not writing ``encoder`` (its skip marker beside it), or None."""
    marker = Path(encoder).parent / "metrics.json"
    if Path(encoder).is_file() or not marker.is_file():
        return None
    return records.read(marker).skipped


def evaluate_encoder(encoder: nn.Module, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                     linear_rows: np.ndarray | None, subsets: dict[str, np.ndarray], cfg: EvaluateConfig,
                     device: torch.device, seed: int, *, resume: dict | None = None,
                     save: Callable[[dict], None] | None = None, progress: bool = False) -> dict:
    """Every number of one encoder: the linear head (rows ``linear_rows`` of ``train``, None for all), kNN and
    the semi-supervised cells of ``subsets`` ({"semi1": rows, "semi10": rows}).

    Frozen features (eval mode, un-augmented) are computed once, for the union of the rows any head trains on and
    for the test split. Fine-tuning works on a copy of ``encoder``; its checkpoint state is ``{"done": {subset:
    result}, "running": {...}}``, given to ``save`` after every epoch and continued from ``resume``.
    """
    x_train, y_train = train
    x_test, y_test = torch.as_tensor(test[0]), torch.as_tensor(test[1])
    num_classes = int(max(y_train.max(), test[1].max())) + 1
    probe = cfg.semi_protocol == "linear_probe"
    t0 = time.perf_counter()

    # ---- frozen features, once: the rows any head trains on, and the test split
    rows = np.arange(len(y_train)) if linear_rows is None else linear_rows
    if probe:
        rows = np.union1d(rows, np.concatenate(list(subsets.values())))
    bs = cfg.linear.feature_batch_size
    feats = extract_features(encoder, torch.as_tensor(x_train[rows]), device, bs)
    test_f = extract_features(encoder, x_test, device, bs)
    labels, test_y = torch.as_tensor(y_train[rows]).to(device), y_test.to(device)
    pick = lambda idx: torch.as_tensor(np.searchsorted(rows, idx), device=device)  # noqa: E731 - rows are sorted
    lin = pick(rows if linear_rows is None else linear_rows)
    feature_seconds = time.perf_counter() - t0

    # ---- linear head (and kNN) on the cached features
    linear = linear_head((feats[lin], labels[lin]), (test_f, test_y), cfg.linear, num_classes)
    metrics = {"lin_top1": linear["top1"], "lin_top5": linear["top5"]}
    if cfg.knn_k:
        metrics["knn_top1"] = knn_accuracy(feats[lin], labels[lin], test_f, test_y, cfg.knn_k, cfg.knn_temperature)
    linear_seconds = time.perf_counter() - t0 - feature_seconds

    # ---- semi-supervised: linear probes on cached features, or VICReg's fine-tuning
    curves, state = {}, {"done": dict((resume or {}).get("done", {}))}
    for name, idx in subsets.items():
        if probe:
            sel = pick(idx)
            result = linear_head((feats[sel], labels[sel]), (test_f, test_y), getattr(cfg.probe, name), num_classes)
        elif name in state["done"]:
            result = state["done"][name]
        else:
            running = (resume or {}).get("running")

            def keep(epoch_state: dict, name: str = name) -> None:  # the finished subsets, and this one's epoch
                save({**state, "running": {"subset": name, **epoch_state}})

            subset = (torch.as_tensor(x_train[idx]), torch.as_tensor(y_train[idx]))
            result = finetune(copy.deepcopy(encoder), subset, (x_test, y_test), cfg.finetune,
                              getattr(cfg.finetune, name), num_classes, device, seed + SUBSETS.index(name) + 1,
                              key=f"evaluate.finetune.{name}", progress=progress,
                              resume=running if running and running["subset"] == name else None,
                              save=keep if save is not None else None)
            state["done"][name] = result
            if save is not None:
                save(state)  # the finished subset's numbers; its model state is dropped
        metrics[f"{name}_top1"], metrics[f"{name}_top5"] = result["top1"], result["top5"]
        curves[f"{name}_curve"] = result["curve"]
    counts = {"linear_train_images": len(lin), "test_images": len(y_test), "classes": num_classes,
              "feature_dim": feats.shape[1], **{f"{n}_images": len(i) for n, i in subsets.items()}}
    if not probe:
        counts.update({f"{n}_finetune_steps": state["done"][n]["steps"] for n in subsets})
    seconds = {"features": feature_seconds, "linear": linear_seconds,
               "semi": time.perf_counter() - t0 - feature_seconds - linear_seconds}
    return {"metrics": metrics, "linear_curve": linear["curve"], "linear_best_epoch_top1": linear["best_epoch_top1"],
            "linear_best_epoch": linear["best_epoch"], **curves, "counts": counts, "seconds": seconds}


def protocol_notes(cfg: EvaluateConfig) -> dict:
    """What a table built from this record must say about how its numbers were made."""
    label = PROTOCOL_LABEL[cfg.semi_protocol]
    notes = {
        "linear_reported_epoch": "final (the head after its last epoch; VICReg's evaluate.py prints the best "
                                 "epoch's accuracy, kept here as linear_best_epoch_top1, not reported)",
        "linear_features": "frozen encoder in eval mode, features of un-augmented images at the prepared resolution, "
                           "computed once (VICReg: RandomResizedCrop + flip for the head's training, Resize 256 + "
                           "CenterCrop 224 for the test)",
        "semi_protocol": cfg.semi_protocol,
        "semi_label": f"semi-supervised ({label})",
        "metric_labels": {"lin_top1": "Linear top-1", "lin_top5": "Linear top-5",
                          **{f"{n}_top{k}": f"Semi top-{k} {PERCENT[n]} ({label})" for n in SUBSETS for k in (1, 5)}},
    }
    if cfg.semi_protocol == "linear_probe":
        notes["semi_note"] = ("linear probe: a linear head on the frozen encoder's cached features of the 1% / 10% "
                              "label subsets, NOT the paper's fine-tuning (deviation at this scale)")
    else:
        notes["semi_note"] = ("fine-tuned: encoder and head trained on the 1% / 10% label subsets (VICReg's "
                              "protocol), final epoch" + (f", stopped after {cfg.finetune.max_steps} steps"
                                                          if cfg.finetune.max_steps is not None else ""))
    return notes


def run(args: argparse.Namespace) -> dict | None:
    stage = start("gencl", "evaluate", suite_params=args.suite_params, out=args.out, trial=args.seed,
                  metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    if reason := pretrain_skipped(args.encoder):  # e.g. a run not in pretrain.run_names at this scale
        return stage.skip(f"no encoder: the pretrain stage skipped it ({reason})")
    cfg = stage.section(EvaluateConfig, args.params, "evaluate")
    cells, row = run_cells(args.run), args.row or args.run
    if cfg.linear_train == "ssl_subset" and args.indices is None:
        raise ValueError("evaluate.linear_train is 'ssl_subset' but no --indices (the SSL subset's index file) "
                         "was given")

    train, test = load_prepared(args.prepared, "train"), load_prepared(args.prepared, "test")
    n = len(train[1])
    linear_rows = read_subset(args.indices, n, "SSL subset") if cfg.linear_train == "ssl_subset" else None
    subsets = {"semi1": read_subset(args.semi1, n, "1% label subset"),
               "semi10": read_subset(args.semi10, n, "10% label subset")}
    encoder = load_encoder(args.encoder, stage.device)
    inputs = {"encoder": args.encoder, "prepared": args.prepared, "indices": args.indices,
              "semi1": args.semi1, "semi10": args.semi10}
    resolved = {"evaluate": config.to_dict(cfg), "run": args.run, "seed": args.seed, "table": args.table, "row": row,
                **{k: None if v is None else str(v) for k, v in inputs.items()},
                "sha256": {k: sha256_file(v) for k, v in inputs.items() if v is not None and k != "prepared"}}
    finetuning = cfg.semi_protocol == "finetune"
    ckpt = stage.out / "checkpoint.pt"
    with stage.tracked(resolved, f"evaluate/{args.run}/seed{args.seed}", checkpointed=finetuning, row=row) as log:
        result = evaluate_encoder(encoder, train, test, linear_rows, subsets, cfg, stage.device, stage.seed,
                                  resume=checkpoint.load(ckpt) if finetuning else None,
                                  save=(lambda s: checkpoint.save(ckpt, s)) if finetuning else None, progress=True)
        metrics = result.pop("metrics")
        record = stage.record(metrics, table=args.table, row=row, run=args.run, cells=cells,
                              **protocol_notes(cfg), **result,
                              linear_train=cfg.linear_train, protocol=config.to_dict(cfg),
                              encoder=str(args.encoder))
        stage.write(record, logger=log)
        stage.write_metrics(metrics)
        stage.write_plot("test_top1", result["linear_curve"], x="epoch")
        log.log_metrics(metrics)
        for i, point in enumerate(result["linear_curve"]):  # the head's curve, per epoch
            log.log_metrics({f"linear_{k}": v for k, v in point.items() if k != "epoch"}, step=i + 1)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    print(f"evaluate {args.run} seed {args.seed} ({stage.scale}, semi: {PROTOCOL_LABEL[cfg.semi_protocol]}): {shown}")
    return record.to_dict()


def run_seeds(args: argparse.Namespace) -> list[dict | None]:
    """``run`` for each of ``args.seeds`` in turn: seed i's encoder ``<pretrain>/seed<i>/encoder.pt``, its outputs
    in ``<out>/seed<i>``; then DVC's files for all of them.

    One process per run, as the pretrain stage: a seed the scale does not run, or whose pretrain wrote a skip
    marker, costs a skip marker. ``--metrics`` gets ``seed<i>/<key>`` per seed that ran, ``--plots`` one row per
    epoch of the linear head with a ``seed<i>`` column of its test top-1 per seed.
    """
    done = [run(argparse.Namespace(**{**vars(args), "seed": seed, "out": args.out / f"seed{seed}",
                                      "encoder": args.pretrain / f"seed{seed}" / ENCODER_FILE,
                                      "metrics": None, "plots": None})) for seed in args.seeds]
    ran = {seed: rec for seed, rec in zip(args.seeds, done, strict=True) if rec is not None}
    write_seed_files(args.metrics, args.plots, ran, "linear_curve", "epoch", "test_top1")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--run", required=True, help="the run's name in the registry (papers/gencl/runs.py)")
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seed", type=int, help="one trial index (0, 1, 2): the encoder --encoder, outputs in --out")
    seeds.add_argument("--seeds", type=int, nargs="+",
                       help="several trial indices in one process: seed i's encoder <pretrain>/seed<i>/encoder.pt, "
                            "its outputs in <out>/seed<i> (the DVC stage)")
    parser.add_argument("--encoder", type=Path, default=None, help="with --seed: the pretrain stage's encoder.pt")
    parser.add_argument("--pretrain", type=Path, default=None,
                        help="with --seeds: the pretrain stage's --out (seed<i>/encoder.pt, or its skip marker)")
    parser.add_argument("--prepared", type=Path, required=True, help="the prepared dataset (train.npz, test.npz)")
    parser.add_argument("--indices", type=Path, default=None,
                        help="the SSL subset's index file (the head's training rows with evaluate.linear_train: "
                             "ssl_subset)")
    parser.add_argument("--semi1", type=Path, required=True, help="index file of the 1%% label subset (train rows)")
    parser.add_argument("--semi10", type=Path, required=True, help="index file of the 10%% label subset (train rows)")
    parser.add_argument("--table", default="runs", help="the record's table (default: runs, one record per run)")
    parser.add_argument("--row", default=None, help="the record's row (default: the run's name)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None,
                        help="the headline numbers for DVC (flat JSON, outside --out)")
    parser.add_argument("--plots", type=Path, default=None,
                        help="the linear head's test top-1 per epoch for DVC (outside --out)")
    args = parser.parse_args(argv)
    if args.seed is not None and (args.encoder is None or args.pretrain is not None):
        parser.error("--seed takes --encoder <encoder.pt> (not --pretrain)")
    if args.seeds is not None and (args.pretrain is None or args.encoder is not None):
        parser.error("--seeds takes --pretrain <the pretrain stage's --out> (not --encoder)")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice")
    return run_stage(lambda: run(args) if args.seeds is None else run_seeds(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
