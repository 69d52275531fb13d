"""Stage `game`: train G_A, G_E / G_L against D_f, D_p on the frozen pre-trained F (Algorithm 1).

    python -m papers.augmentation_generator.game --seed 0 --data papers/augmentation_generator/outputs/data \
        --encoder papers/augmentation_generator/outputs/pretrain/seed0/encoder.pt \
        --out papers/augmentation_generator/outputs/game/seed0

Each step takes a batch of X_p (`data.xp`) and one of X~_f (`data.fine_dotted`, the only fine-tuning
images any training sees), draws z ~ U[0, 1]^z_dim and makes one simultaneous update of all five
networks (`shared.trainers.adversarial`, `simultaneous: true`); F stays frozen in eval mode and its
features of the real images are computed once (`game.cache_real_features`).

Writes `<out>/generators.pt` (G_A and G_E / G_L, `models.load_generators`), `<out>/latents.pt`
(Z~ = G_L(X~_f) of every fine-tuning image in index order, float (N_f, z_dim), `models.load_latents`;
the retrain stage samples z from it), `<out>/checkpoint.pt` (resumable), `<out>/z_sweep.png` (Fig. 5's
analogue: per row a pre-training image x, then G_A(x, t * 1) for t = 0 .. 1 in `grid_z` steps),
`<out>/eliminate.png` (per row a fine-tuning image: clean x | dotted x~ | G_E(x~) | G_A(G_E(x~), G_L(x~))),
`<out>/metrics.json` (the checks, and the curve: per evaluation the means of the training losses since
the previous one and the evaluation set's checks) and `<out>/config.yaml`. A seed at or above
`runs.n_seeds` writes only a skip marker.

Checks (the record's `metrics`, details under `checks`): A9, the eliminator removes dots: per-image mean
|G_E(x~) - x| against |x~ - x| over all fine-tuning images, and D_p's accuracy at the end (0.5: it cannot
tell F(G_E(x~_f)) from F(x_p)); A8, G_L recovers z: mean |G_L(G_A(x, z)) - z| against the same for a z'
drawn independently, and the ink G_A adds, max(G_A(x, z) - x, 0), against z (its correlation with mean(z),
and with the best linear direction of z fitted on half of the images and scored on the other half).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from papers.augmentation_generator.config import PARAMS, GameConfig, RunsConfig
from papers.augmentation_generator.data import load_splits
from papers.augmentation_generator.encoder import load_encoder
from papers.augmentation_generator.losses import augmentation_game, balanced_accuracy
from papers.augmentation_generator.models import build_players, save_generators, save_latents
from shared import config
from shared.cli import run_stage, stage_parser
from shared.data import DeviceLoader, sha256_file
from shared.device import autocast, prepare_batch
from shared.io import atomic_write
from shared.stage import start
from shared.trainers.adversarial import AdversarialMethod, freeze, train_adversarial
from shared.trainers.gan import image_grid, png_bytes

CHUNK = 512  # images per forward pass outside training
F_LOADER_OFFSET = 500  # the X~_f loader's seed is the run seed + this (X_p's is the run seed): other orders


# ---------------------------------------------------------------- helpers

def as_images(x, device: torch.device) -> Tensor:
    """uint8 (N, 1, H, W) (numpy or torch) -> float in [0, 1] on `device`."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 (N, 1, H, W) images, got {x.dtype} {tuple(x.shape)}")
    return x.to(device).float() / 255


@torch.no_grad()
def chunked(fn, *tensors: Tensor, chunk: int = CHUNK, device: torch.device, desc: str | None = None) -> Tensor:
    """fn(*rows) over `chunk` rows at a time (uint8 images become floats on `device`), concatenated, float."""
    n = len(tensors[0])
    out = []
    for start_ in tqdm(range(0, n, chunk), desc=desc, unit="chunk", disable=desc is None):
        rows = [as_images(t[start_:start_ + chunk], device) if t.dtype == torch.uint8
                else t[start_:start_ + chunk].to(device) for t in tensors]
        with autocast(device):
            out.append(fn(*rows).float())
    return torch.cat(out)


class Tally:
    """Means of the training logs since the last `means()`: the curve's loss points."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def add(self, logs: Mapping[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.n[k] = self.n.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        means = {f"train/{k}": self.sums[k] / self.n[k] for k in sorted(self.sums)}
        self.sums, self.n = {}, {}
        return means


def tallied(method: AdversarialMethod, tally: Tally) -> AdversarialMethod:
    """`method` whose losses also add their logs (and totals) to `tally`; the numbers are unchanged."""
    def critic(name, fn):
        def loss(D, F, out):
            value, logs = fn(D, F, out)
            tally.add({**logs, f"{name}/total": value.item()})
            return value, logs
        return loss

    def generator_loss(generators, critics, F, out):
        value, logs = method.generator_loss(generators, critics, F, out)
        tally.add({**logs, "g/total": value.item()})
        return value, logs

    return AdversarialMethod(forward=method.forward, generator_loss=generator_loss, name=method.name,
                             critic_losses={k: critic(k, fn) for k, fn in method.critic_losses.items()})


def embed(F: nn.Module, x: Tensor) -> Tensor:
    """F(x) with x in channels_last (a third faster on the CPU with oneDNN, measured)."""
    return F(prepare_batch(x, x.device))


def sample_rows(n_total: int, n: int, generator: torch.Generator) -> Tensor:
    """`min(n, n_total)` distinct row indices, drawn with `generator`, sorted."""
    return torch.randperm(n_total, generator=generator)[:min(n, n_total)].sort().values


def added_ink(augmented: Tensor, x: Tensor) -> Tensor:
    """Per image, the mean over pixels of the ink G_A adds, max(G_A(x, z) - x, 0)."""
    return (augmented - x).clamp(min=0).flatten(1).mean(1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def direction_correlation(z: np.ndarray, ink: np.ndarray) -> tuple[float, np.ndarray]:
    """Held-out correlation of `ink` with the best linear direction of `z`: the least-squares direction
    fitted on the first half of the rows, correlated with ink on the second half (no in-sample bias).
    Returns (correlation, the unit direction)."""
    half = len(z) // 2
    design = np.concatenate([z[:half], np.ones((half, 1))], axis=1)
    coef = np.linalg.lstsq(design, ink[:half], rcond=None)[0][:-1]
    norm = np.linalg.norm(coef)
    direction = coef / norm if norm > 0 else coef
    return pearson(z[half:] @ direction, ink[half:]), direction


def summary(values: Tensor) -> dict[str, float]:
    v = values.double().cpu()
    return {"mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0, "median": v.median().item(),
            "min": v.min().item(), "max": v.max().item(), "n": len(v)}


# ---------------------------------------------------------------- evaluation during training, final checks

def make_evaluate(critics: Mapping[str, nn.Module], F: nn.Module, eval_set: Mapping[str, Tensor], tally: Tally):
    """The trainer's `evaluate`: the loss means since the last call, and the checks on a fixed evaluation set
    (`eval_set`: float images "x_p", "clean", "dotted" and latents "z", "z_independent", on the device)."""
    def evaluate(generators: Mapping[str, nn.Module], step: int) -> dict[str, float]:
        G_A, G_EL = generators["G_A"], generators["G_EL"]
        x_p, clean, dotted, z = eval_set["x_p"], eval_set["clean"], eval_set["dotted"], eval_set["z"]
        eliminated, _ = G_EL(dotted)
        augmented = G_A(x_p, z)
        latent = G_EL(augmented)[1]
        return {**tally.means(),
                "eliminate_l1": (eliminated - clean).abs().mean().item(),
                "dotted_l1": (dotted - clean).abs().mean().item(),
                "latent_l1": (latent - z).abs().mean().item(),
                "latent_l1_independent": (latent - eval_set["z_independent"]).abs().mean().item(),
                "added_ink": added_ink(augmented, x_p).mean().item(),
                "d_f_acc": balanced_accuracy(critics["D_f"](embed(F, dotted)),
                                             critics["D_f"](embed(F, augmented))).item(),
                "d_p_acc": balanced_accuracy(critics["D_p"](embed(F, x_p)),
                                             critics["D_p"](embed(F, eliminated))).item()}
    return evaluate


@torch.no_grad()
def final_checks(G_A: nn.Module, G_EL: nn.Module, critics: Mapping[str, nn.Module], F: nn.Module, splits,
                 cfg: GameConfig, device: torch.device, generator: torch.Generator) -> dict:
    """A9 over every fine-tuning image, the critics' accuracies and A8 on `cfg.check_images` images."""
    # ---- A9: does G_E bring the dotted image closer to the clean one?
    per_image = lambda a, b: (a - b).abs().flatten(1).mean(1)  # noqa: E731
    dotted, clean = torch.as_tensor(splits.fine_dotted), torch.as_tensor(splits.fine_clean)
    l1_eliminated = chunked(lambda d, c: per_image(G_EL(d)[0], c), dotted, clean, device=device)
    l1_dotted = chunked(per_image, dotted, clean, device=device)

    # ---- the critics, on check_images of each set: reals against the current fakes
    rows_p = sample_rows(len(splits.xp), cfg.check_images, generator)
    rows_f = sample_rows(len(dotted), cfg.check_images, generator)
    x_p = torch.as_tensor(splits.xp)[rows_p]
    z = torch.rand(len(rows_p), cfg.z_dim, generator=generator)
    z_independent = torch.rand(len(rows_p), cfg.z_dim, generator=generator)
    D_f, D_p = critics["D_f"], critics["D_p"]
    d_f_real = chunked(lambda x: D_f(embed(F, x)), dotted[rows_f], device=device)
    d_f_fake = chunked(lambda x, z_: D_f(embed(F, G_A(x, z_))), x_p, z, device=device)
    d_p_real = chunked(lambda x: D_p(embed(F, x)), x_p, device=device)
    d_p_fake = chunked(lambda x: D_p(embed(F, G_EL(x)[0])), dotted[rows_f], device=device)

    # ---- A8: does G_L recover z, and does the ink G_A adds follow z?
    latent = chunked(lambda x, z_: G_EL(G_A(x, z_))[1], x_p, z, device=device).cpu()
    ink = chunked(lambda x, z_: added_ink(G_A(x, z_), x), x_p, z, device=device).cpu()
    z_np, ink_np = z.double().numpy(), ink.double().numpy()
    corr_direction, direction = direction_correlation(z_np, ink_np)
    sweep = torch.linspace(0, 1, cfg.grid_z)
    ink_sweep = [chunked(lambda x: added_ink(G_A(x, torch.full((len(x), cfg.z_dim), t.item(), device=device)), x),
                         x_p, device=device).mean().item() for t in sweep]

    metrics = {
        "eliminate_l1": l1_eliminated.mean().item(),
        "dotted_l1": l1_dotted.mean().item(),
        "eliminate_closer_frac": (l1_eliminated < l1_dotted).float().mean().item(),
        "d_p_acc": balanced_accuracy(d_p_real, d_p_fake).item(),
        "d_f_acc": balanced_accuracy(d_f_real, d_f_fake).item(),
        "latent_l1": (latent - z).abs().mean().item(),
        "latent_l1_independent": (latent - z_independent).abs().mean().item(),
        "ink_corr_mean_z": pearson(z_np.mean(1), ink_np),
        "ink_corr_direction": corr_direction,
    }
    details = {
        "a9_eliminator": {"l1_eliminated": summary(l1_eliminated), "l1_dotted": summary(l1_dotted),
                          "note": "per fine-tuning image, mean |G_E(x~) - x| and mean |x~ - x| over pixels in [0, 1]"},
        "critics": {"d_f_acc_real": (d_f_real > 0).float().mean().item(),
                    "d_f_acc_fake": (d_f_fake < 0).float().mean().item(),
                    "d_p_acc_real": (d_p_real > 0).float().mean().item(),
                    "d_p_acc_fake": (d_p_fake < 0).float().mean().item(),
                    "n_pretrain": len(rows_p), "n_fine": len(rows_f)},
        "a8_latent": {"latent_l1_per_dim": (latent - z).abs().mean(0).tolist(),
                      "latent_l1_independent_per_dim": (latent - z_independent).abs().mean(0).tolist(),
                      "added_ink": summary(ink), "ink_direction": direction.tolist(),
                      "ink_sweep_t": sweep.tolist(), "ink_sweep": ink_sweep,
                      "note": "z, z' ~ U[0, 1]^z_dim independent; ink = mean over pixels of max(G_A(x, z) - x, 0); "
                              "ink_corr_direction: least-squares direction of z fitted on the first half of the "
                              "images, Pearson r on the second half; ink_sweep: mean ink at z = t * 1"},
    }
    return {"metrics": metrics, "details": details}


@torch.no_grad()
def write_grids(out: Path, G_A: nn.Module, G_EL: nn.Module, splits, cfg: GameConfig, device: torch.device,
                generator: torch.Generator) -> dict[str, str]:
    """`z_sweep.png` and `eliminate.png`; returns what their columns are."""
    to_uint8 = lambda x: (x.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()  # noqa: E731
    x = as_images(torch.as_tensor(splits.xp)[sample_rows(len(splits.xp), cfg.grid_images, generator)], device)
    columns = [x] + [G_A(x, torch.full((len(x), cfg.z_dim), t, device=device))
                     for t in torch.linspace(0, 1, cfg.grid_z).tolist()]
    sweep = torch.stack(columns, 1).flatten(0, 1)  # row-major: image i's columns side by side
    atomic_write(out / "z_sweep.png", lambda f: f.write(png_bytes(image_grid(to_uint8(sweep), len(columns)))))

    rows = sample_rows(len(splits.fine_dotted), cfg.grid_images, generator)
    clean, dotted = (as_images(torch.as_tensor(a)[rows], device) for a in (splits.fine_clean, splits.fine_dotted))
    eliminated, latent = G_EL(dotted)
    grid = torch.stack([clean, dotted, eliminated, G_A(eliminated, latent)], 1).flatten(0, 1)
    atomic_write(out / "eliminate.png", lambda f: f.write(png_bytes(image_grid(to_uint8(grid), 4))))
    return {"z_sweep.png": f"rows: pre-training images x; columns: x, then G_A(x, t * 1) for t in "
                           f"linspace(0, 1, {cfg.grid_z})",
            "eliminate.png": "rows: fine-tuning images; columns: clean x, dotted x~, G_E(x~), G_A(G_E(x~), G_L(x~))"}


# ---------------------------------------------------------------- the stage

def run(args: argparse.Namespace) -> dict | None:
    stage = start("augmentation_generator", "game", suite_params=args.suite_params, out=args.out, trial=args.seed,
                  metrics=args.metrics, plots=args.plots)
    if reason := stage.section(RunsConfig, args.params, "runs").not_run(args.seed, stage.scale):
        return stage.skip(reason)
    cfg = stage.section(GameConfig, args.params, "game")
    device = stage.device

    # ---- data, F (frozen) and its features of the real images
    splits = load_splits(args.data)
    xp, dotted = torch.as_tensor(splits.xp), torch.as_tensor(splits.fine_dotted)
    F = freeze(load_encoder(args.encoder, device))
    real_features = None
    if cfg.cache_real_features:
        real_features = {"p": chunked(lambda x: embed(F, x), xp, device=device, desc="F(X_p)"),
                         "f": chunked(lambda x: embed(F, x), dotted, device=device, desc="F(X~_f)")}
    loaders = {"p": DeviceLoader(xp, torch.zeros(len(xp)), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                 seed=stage.seed, device=device),
               "f": DeviceLoader(dotted, torch.as_tensor(splits.fine_y), batch_size=cfg.batch_size, shuffle=True,
                                 drop_last=True, seed=stage.seed + F_LOADER_OFFSET, device=device)}

    # ---- players (their init drawn from the run seed), the method, the fixed evaluation set
    generators, critics = build_players(cfg, F.feature_dim)
    generators = {k: m.to(device) for k, m in generators.items()}
    critics = {k: m.to(device) for k, m in critics.items()}
    tally = Tally()
    method = tallied(augmentation_game(F, cfg.z_dim, cfg.lam, real_features, identity=cfg.identity), tally)
    pick = torch.Generator().manual_seed(stage.seed)  # evaluation and check draws: never the training RNG
    rows_p, rows_f = sample_rows(len(xp), cfg.eval_images, pick), sample_rows(len(dotted), cfg.eval_images, pick)
    eval_set = {"x_p": as_images(xp[rows_p], device), "dotted": as_images(dotted[rows_f], device),
                "clean": as_images(torch.as_tensor(splits.fine_clean)[rows_f], device),
                "z": torch.rand(len(rows_p), cfg.z_dim, generator=pick).to(device),
                "z_independent": torch.rand(len(rows_p), cfg.z_dim, generator=pick).to(device)}
    evaluate = make_evaluate(critics, F, eval_set, tally)

    resolved = {"game": config.to_dict(cfg), "seed": args.seed, "data": str(args.data),
                "encoder": str(args.encoder), "encoder_sha256": sha256_file(args.encoder)}
    with stage.tracked(resolved, f"game/seed{args.seed}") as log:
        result = train_adversarial(cfg.train, generators, critics, F, method, loaders, out_dir=stage.out,
                                   logger=log, device=device, evaluate=evaluate)

        # ---- outputs: generators, Z~ = G_L(X~_f), grids, checks
        G_A, G_EL = generators["G_A"].eval(), generators["G_EL"].eval()
        save_generators(stage.out / "generators.pt", G_A, G_EL, step=result.steps, seed=args.seed)
        latents = chunked(lambda x: G_EL(x)[1], dotted, device=device)
        save_latents(stage.out / "latents.pt", latents, source="G_L(data.fine_dotted), rows in index order",
                     step=result.steps, seed=args.seed)
        checks_rng = torch.Generator().manual_seed(stage.seed + 1)
        grids = write_grids(stage.out, G_A, G_EL, splits, cfg, device, checks_rng)
        checks = final_checks(G_A, G_EL, critics, F, splits, cfg, device, checks_rng)
        record = stage.record(checks["metrics"], checks=checks["details"], curve=result.history,
                              steps=result.steps, grids=grids, n_pretrain=len(xp), n_fine=len(dotted),
                              real_features_cached=cfg.cache_real_features,
                              curve_note="per evaluation: train/* = means of the training logs since the previous "
                                         f"one; the rest on a fixed set of {cfg.eval_images} images per set")
        stage.write(record, logger=log)
        stage.write_metrics(checks["metrics"])
        stage.write_plot("train/g/total", result.history)
    print(f"game seed {args.seed}: {checks['metrics']} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1, 2)")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's folder (data.load_splits)")
    parser.add_argument("--encoder", type=Path, required=True, help="the pre-trained F (encoder.load_encoder)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", default=None,
                        help="the run's headline numbers for DVC (a flat JSON, outside --out)")
    parser.add_argument("--plots", default=None, help="the run's curve for DVC (a JSON list of rows, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
