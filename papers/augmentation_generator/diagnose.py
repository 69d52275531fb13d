"""Is F better than no F? kNN on raw pixels, on an untrained F and on given encoders (not a DVC stage).

    python -m papers.augmentation_generator.diagnose --data papers/augmentation_generator/outputs/data \
        --encoder pretrained=papers/augmentation_generator/outputs/pretrain/seed{seed}/encoder.pt \
        --out papers/augmentation_generator/results/mini/diagnostics/f_knn.json

For each seed of the scale (`runs.n_seeds`): the weighted kNN top-1 (%) of `evaluate.knn_k` neighbours at
`evaluate.knn_temperature` (the evaluate stage's kNN, `shared.trainers.linear_eval.knn_accuracy`) with the
dotted fine-tuning images as the train set and the clean (D -> C) and dotted (D -> D) test images, every
character of the split (1,623; the evaluation alphabets' 659 with `data.background_in_xp`); and on X_p's MNIST
images (a seeded 10,000 / 2,000 split of them, their labels),
a check that F learned anything about the data it was trained on. Scored: raw pixels (once), an untrained F
(`pretrain.width`, initialised from the trial's run seed as the pretrain stage's F is) and every
`--encoder NAME=PATH` (`{seed}` in PATH is the seed). The kNN of an encoder here equals the evaluate stage's
`knn_top1` of the same encoder (same features, same function).

With `--generators PATH` (the game's generators.pt, `{seed}` the seed), where G_E's image differs from the
clean one, split by pixel kind over all dotted fine-tuning images: `dot_ink` (mean of G_E(x~) on the dot pixels,
where x~ differs from x: 1 keeps the dots, 0 removes them), `stroke_l1` (mean |G_E(x~) - x| on the character's
pixels, x > 0: how much the character changed) and `background_ink` (mean of G_E(x~) where both x and x~ are
0: what G_E adds), each beside the same number for x~ itself. The game's whole-image L1 mixes the three.

With `--critic PATH` (the game's checkpoint.pt) and `--critic-encoder PATH` (the F that game ran on), both with
`{seed}`: the share of images D_p (the checkpoint's final critic) takes for pre-training images (logit > 0) among
X_p, the clean and the dotted fine-tuning images and, with `--generators`, G_E's output on the dotted ones: would
a G_E that only removed the dots win its game?
Writes one JSON with the provenance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from papers.augmentation_generator.config import PARAMS, EvaluateConfig, GameConfig, PretrainConfig, RunsConfig
from papers.augmentation_generator.data import load_splits
from papers.augmentation_generator.encoder import build_encoder, load_encoder
from papers.augmentation_generator.models import Critic, load_generators
from shared import checkpoint, config
from shared.cli import run_stage, stage_parser
from shared.io import atomic_write_text
from shared.provenance import provenance
from shared.stage import run_seed
from shared.trainers.linear_eval import extract_features, knn_accuracy

XP_TRAIN, XP_TEST = 10_000, 2_000  # the X_p kNN split (seeded, disjoint)
PATHS = ("encoder", "generators", "critic")  # the entries of a row that name its input file


def pixels(images: Tensor) -> Tensor:
    """Flattened [0, 1] pixels as features."""
    return images.flatten(1).float() / 255


def scores(features, splits, xp_rows: tuple[Tensor, Tensor], cfg: EvaluateConfig) -> dict[str, float]:
    """kNN top-1 (%) D -> C, D -> D (all characters) and on X_p (`xp_rows`: its train and test rows), with
    `features(uint8 images) -> (N, d)`."""
    knn = lambda tr, ytr, te, yte: knn_accuracy(tr, ytr, te, yte, k=cfg.knn_k,  # noqa: E731
                                                temperature=cfg.knn_temperature)
    fine_y, test_y = torch.as_tensor(splits.fine_y), torch.as_tensor(splits.test_y)
    fine = features(torch.as_tensor(splits.fine_dotted))
    xp, yp = torch.as_tensor(splits.xp), torch.as_tensor(splits.yp)
    (train, test) = xp_rows
    return {"d_to_c": knn(fine, fine_y, features(torch.as_tensor(splits.test_clean)), test_y),
            "d_to_d": knn(fine, fine_y, features(torch.as_tensor(splits.test_dotted)), test_y),
            "x_p": knn(features(xp[train]), yp[train], features(xp[test]), yp[test])}


@torch.no_grad()
def eliminator_split(G_EL: nn.Module, dotted: Tensor, clean: Tensor, chunk: int = 1024) -> dict[str, float]:
    """G_E's output on uint8 `dotted` images split by pixel kind against the uint8 `clean` ones (module docstring),
    with the same numbers for the dotted images themselves ("dotted_*")."""
    sums = {k: 0.0 for k in ("dot_ink", "stroke_l1", "background_ink", "dotted_dot_ink", "dotted_stroke_l1",
                             "dotted_background_ink")}
    counts = {"dot": 0, "stroke": 0, "background": 0}
    for start in range(0, len(dotted), chunk):
        d, c = (t[start:start + chunk].float() / 255 for t in (dotted, clean))
        e = G_EL(d)[0]
        masks = {"dot": d != c, "stroke": c > 0, "background": (c == 0) & (d == 0)}
        for name, m in masks.items():
            counts[name] += int(m.sum())
        for prefix, img in (("", e), ("dotted_", d)):
            sums[f"{prefix}dot_ink"] += img[masks["dot"]].sum().item()
            sums[f"{prefix}stroke_l1"] += (img - c)[masks["stroke"]].abs().sum().item()
            sums[f"{prefix}background_ink"] += img[masks["background"]].sum().item()
    kind = lambda k: k.removeprefix("dotted_").split("_")[0]  # noqa: E731
    return {k: v / max(counts[kind(k)], 1) for k, v in sums.items()}


@torch.no_grad()
def critic_verdicts(D_p: nn.Module, features, sets: dict[str, Tensor]) -> dict[str, float]:
    """Per named uint8 image set, the share D_p takes for pre-training images (its logit > 0)."""
    return {name: (D_p(features(images)) > 0).float().mean().item() for name, images in sets.items()}


def load_critic(path: Path, feature_dim: int, hidden: int) -> nn.Module:
    """D_p from a game checkpoint (`checkpoint.load`: a missing or corrupt file raises naming it)."""
    state = checkpoint.load(path)
    if state is None:
        raise FileNotFoundError(f"no game checkpoint at {path}")
    if "D_p" not in state.get("critics", {}):
        raise ValueError(f"{path}: not a game checkpoint (no critics.D_p)")
    D_p = Critic(feature_dim, hidden)
    D_p.load_state_dict(state["critics"]["D_p"])
    return D_p.eval()


def encoder_features(encoder: nn.Module, device: torch.device):
    return lambda images: extract_features(encoder, images, device).cpu()


def run(args: argparse.Namespace) -> dict:
    suite = config.load_suite(args.suite_params)
    scale = suite.scale
    runs = config.load_section(RunsConfig, args.params, "runs", scale)
    width = config.load_section(PretrainConfig, args.params, "pretrain", scale).width
    cfg = config.load_section(EvaluateConfig, args.params, "evaluate", scale)
    named = dict(spec.split("=", 1) for spec in args.encoder)
    torch.set_num_threads(suite.threads)  # as every stage: kNN sums depend on it
    device = torch.device("cpu")
    splits = load_splits(args.data)
    mnist = torch.nonzero(torch.as_tensor(splits.yp) < 10).flatten()  # X_p's MNIST images (labels 0-9)
    if len(mnist) < XP_TRAIN + XP_TEST:
        raise ValueError(f"X_p holds {len(mnist)} MNIST images, fewer than the {XP_TRAIN + XP_TEST} the X_p kNN needs")
    rows = mnist[torch.randperm(len(mnist), generator=torch.Generator().manual_seed(0))]
    xp_rows = (rows[:XP_TRAIN], rows[XP_TRAIN:XP_TRAIN + XP_TEST])

    out = {"scale": scale, "knn_k": cfg.knn_k, "knn_temperature": cfg.knn_temperature, "width": width,
           "pixels": scores(pixels, splits, xp_rows, cfg), "seeds": {}}
    for seed in range(runs.n_seeds):
        checkpoint.seed_everything(run_seed(suite.seed, seed))
        row = {"untrained": scores(encoder_features(build_encoder(width), device), splits, xp_rows, cfg)}
        for name, path in named.items():
            path = Path(path.format(seed=seed))
            row[name] = {**scores(encoder_features(load_encoder(path, device), device), splits, xp_rows, cfg),
                         "encoder": str(path)}
        if args.generators:
            path = Path(args.generators.format(seed=seed))
            G_EL = load_generators(path, device)[1]
            row["eliminator"] = {**eliminator_split(G_EL, torch.as_tensor(splits.fine_dotted),
                                                    torch.as_tensor(splits.fine_clean)), "generators": str(path)}
        if args.critic:
            path = Path(args.critic.format(seed=seed))
            F = load_encoder(Path(args.critic_encoder.format(seed=seed)), device)
            D_p = load_critic(path, F.feature_dim, config.load_section(GameConfig, args.params, "game", scale).critic_hidden)
            sets = {"x_p": torch.as_tensor(splits.xp), "clean": torch.as_tensor(splits.fine_clean),
                    "dotted": torch.as_tensor(splits.fine_dotted)}
            if args.generators:
                with torch.no_grad():
                    sets["eliminated"] = (G_EL(sets["dotted"].float() / 255)[0] * 255).round().to(torch.uint8)
            row["critic"] = {**critic_verdicts(D_p, encoder_features(F, device), sets), "critic": str(path)}
        out["seeds"][str(seed)] = row
        print(f"seed {seed}: " + "; ".join(f"{k} {({m: round(v, 3) for m, v in r.items() if m not in PATHS})}"
                                            for k, r in row.items()), flush=True)
    out["note"] = ("weighted kNN top-1 (%); d_to_c / d_to_d: train on the dotted fine-tuning images, test on the "
                   "clean / dotted test images (every character of the split); x_p: a seeded 10,000 / 2,000 split of the "
                   "pre-training images with their labels; untrained: F of pretrain.width initialised from the "
                   "trial's run seed; eliminator: G_E(x~) on dot pixels (x~ != x), stroke pixels (x > 0) and "
                   "background pixels (x = x~ = 0), beside x~ itself (dotted_*); critic: share of each set D_p "
                   "takes for pre-training images (x_p: all pre-training images; clean, dotted: every fine-tuning "
                   "image; eliminated: G_E of the dotted ones, rounded to uint8)")
    out["provenance"] = provenance(device)
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    print(f"pixels: {out['pixels']}; wrote {args.out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--data", type=Path, required=True, help="the prepare stage's folder (splits.npz)")
    parser.add_argument("--encoder", action="append", default=[], metavar="NAME=PATH",
                        help="an encoder.pt to score ({seed} in PATH: the seed); repeatable")
    parser.add_argument("--generators", default=None,
                        help="the game's generators.pt ({seed} in PATH: the seed): G_E's dot / stroke / background split")
    parser.add_argument("--critic", default=None, help="the game's checkpoint.pt ({seed}): D_p's verdicts")
    parser.add_argument("--critic-encoder", default=None, help="the F the game ran on ({seed}); with --critic")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    if bool(args.critic) != bool(args.critic_encoder):
        parser.error("--critic and --critic-encoder go together")
    for spec in args.encoder:
        if "=" not in spec:
            parser.error(f"--encoder takes NAME=PATH, got {spec!r}")
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
