"""Stage `evaluate`: one encoder's Table 1 cells, D -> C and D -> D (Sec. 4.1: "only a new linear head was trained
with the ground-truth labels for the evaluation").

    python -m papers.augmentation_generator.evaluate --encoder-run xp_ga --seed 0 \
        --data papers/augmentation_generator/outputs/data \
        --encoder papers/augmentation_generator/outputs/retrain/xp_ga_seed0/encoder.pt \
        --out papers/augmentation_generator/outputs/eval/xp_ga_seed0

F's features (eval mode, un-augmented, computed once each) of X~_f (the dotted fine-tuning images, the
only training set), X_t^C (clean test) and X_t^D (dotted test); one new linear head on the X~_f features and
their 1,623 character labels, scored on both test sets (D -> C, D -> D). The paper gives no protocol: MoCo's
main_lincls.py (`evaluate.linear`: SGD lr 30, momentum 0.9, wd 0, 100 epochs, x0.1 at 60 and 80, batch 256)
on cached features (no augmentation), as `shared.trainers.linear_eval.train_linear` runs it. A weighted kNN
(`shared.trainers.linear_eval.knn_accuracy`, k `evaluate.knn_k`, temperature `evaluate.knn_temperature`)
on the same features is reported beside it.

Writes `<out>/table1_d_to_c.json` and `<out>/table1_d_to_d.json` (metrics `top1` (%), `knn_top1` (%),
`linear_train_acc` (%); row `mocov2_<run>`, `mocov2_pretrained` for F before re-training; the head's
per-epoch loss and train accuracy under `linear_curve`), or a skip marker in both for a seed the scale
does not run.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor

from papers.augmentation_generator.config import ENCODERS, PARAMS, EvaluateConfig, RunsConfig
from papers.augmentation_generator.data import load_splits
from papers.augmentation_generator.encoder import load_encoder
from shared import config
from shared.cli import run_stage, stage_parser
from shared.data import sha256_file
from shared.stage import start
from shared.trainers.linear_eval import accuracy, extract_features, fit_linear, knn_accuracy

TABLES = {"d_to_c": "table1_d_to_c", "d_to_d": "table1_d_to_d"}  # test set -> reported table


def row_id(encoder_run: str) -> str:
    """Table 1's row of an encoder: mocov2_xp, mocov2_xp_ga, mocov2_xp_xf, or the extra mocov2_pretrained."""
    if encoder_run not in ENCODERS:
        raise ValueError(f"unknown encoder run {encoder_run!r}; allowed: {', '.join(ENCODERS)}")
    return f"mocov2_{encoder_run}"


def evaluate_features(train: tuple[Tensor, Tensor], tests: dict[str, tuple[Tensor, Tensor]], cfg: EvaluateConfig,
                      num_classes: int) -> dict[str, dict]:
    """One linear head on ``train`` features, scored on each test set, and the kNN beside it (accuracies in %)."""
    head, curve = fit_linear(*train, cfg.linear, num_classes)
    train_acc = accuracy(head, *train)
    out = {}
    for name, (x, y) in tests.items():
        out[name] = {"top1": accuracy(head, x, y),
                     "knn_top1": knn_accuracy(*train, x, y, k=cfg.knn_k, temperature=cfg.knn_temperature),
                     "linear_train_acc": train_acc}
    out["linear_curve"] = curve
    return out


def run(args: argparse.Namespace) -> dict | None:
    stage = start("augmentation_generator", "evaluate", suite_params=args.suite_params, out=args.out,
                  trial=args.seed, metrics=args.metrics)
    row = row_id(args.encoder_run)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        for table in TABLES.values():
            stage.skip(reason, f"{table}.json")
        return None
    cfg = stage.section(EvaluateConfig, args.params, "evaluate")
    device = stage.device

    # ---- features, once each, of the un-augmented images (eval mode)
    splits = load_splits(args.data)
    encoder = load_encoder(args.encoder, device)
    bs = cfg.linear.feature_batch_size
    feats = {name: extract_features(encoder, torch.as_tensor(getattr(splits, name)), device, bs)
             for name in ("fine_dotted", "test_clean", "test_dotted")}
    fine_y, test_y = torch.as_tensor(splits.fine_y).to(device), torch.as_tensor(splits.test_y).to(device)

    resolved = {"evaluate": config.to_dict(cfg), "encoder_run": args.encoder_run, "seed": args.seed,
                "data": str(args.data), "encoder": str(args.encoder), "encoder_sha256": sha256_file(args.encoder)}
    with stage.tracked(resolved, f"evaluate/{args.encoder_run}/seed{args.seed}", checkpointed=False,
                       row=row) as log:
        result = evaluate_features((feats["fine_dotted"], fine_y),
                                   {"d_to_c": (feats["test_clean"], test_y), "d_to_d": (feats["test_dotted"], test_y)},
                                   cfg, splits.n_classes)
        curve = result.pop("linear_curve")
        common = dict(encoder_run=args.encoder_run, encoder=str(args.encoder), feature_dim=encoder.feature_dim,
                      train_images=len(fine_y), test_images=len(test_y), classes=splits.n_classes,
                      protocol=config.to_dict(cfg), linear_curve=curve)
        for name, table in TABLES.items():
            stage.write(stage.record(result[name], table=table, row=row, **common), f"{table}.json", logger=log)
        stage.write_metrics({f"{name}_{k}": v for name, metrics in result.items() for k, v in metrics.items()})
    cells = ", ".join(f"{n} top1 {m['top1']:.2f} (kNN {m['knn_top1']:.2f})" for n, m in result.items())
    print(f"evaluate {row} seed {args.seed}: {cells}; head train acc {result['d_to_c']['linear_train_acc']:.1f} "
          f"({stage.scale})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--encoder-run", required=True, choices=ENCODERS,
                        help="which encoder: pretrained (F before re-training) or a retrain variant")
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--data", required=True, help="the prepare stage's folder (splits.npz)")
    parser.add_argument("--encoder", required=True, help="the encoder.pt to evaluate")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", default=None, help="the run's headline numbers for DVC (flat JSON, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
