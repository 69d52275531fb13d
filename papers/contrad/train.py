"""Stage `train`: one GAN (or, for `simclr`, one D) on CIFAR-10 for an (architecture, method, seed).

    python -m papers.contrad.train --architecture sndcgan --method contrad --seed 0 \
        --out papers/contrad/outputs/train/sndcgan_contrad_seed0

Architectures: D = `sndcgan` or `snresnet18` with SNDCGAN's G, and `stylegan2` (StyleGAN2's G and D, trained with
the official StyleGAN2 settings in `architectures.stylegan2.train`: `TrainStageConfig.train_for`).
Methods: `baseline` (non-saturating, no augmentation), `diffaugment` (DiffAugment
translation,cutout on every D input: Table 1's label), `diffaugment_cc` (DiffAugment color,cutout:
the official command's policy for that row, an extra row), `cr` (the baseline plus consistency regularisation on
the reals, weight `lambda_real`), `bcr` (balanced CR: also on the fakes, weight `lambda_fake`;
both with T = HFlip + translation of up to 4 px, reflection fill, shared.gan_losses.cr / bcr),
`contrad` (ContraD) and `simclr` (D trained by L_con+ alone, Table 3's reference; G is not
trained). Writes `<out>/best.pt` (G_ema at
the best FID), `<out>/discriminator.pt` (D at the end of training, for the linear
evaluation), `<out>/checkpoint.pt` (resumable), `<out>/samples/*.png`,
`<out>/metrics.json` and `<out>/config.yaml`. A combination the scale does not run
(`train.run_architectures`, `train.run_methods`, `train.n_seeds`) writes only a
`{"skipped": ...}` metrics.json, so the DVC matrix is the paper's at every scale.

FID during training (every `eval_every` steps, `fid_samples` samples) is the in-domain one
(`fid_indomain`): it draws the curve and picks the best G_ema. When `metrics.inception_weights`
names a file, that best G_ema gets one Inception FID at the end (`fid_inception`, of
`metrics.inception_samples` samples against the precomputed `metrics.reference_stats`), kept in
the record's `best`; the record's FID description keys are then that FID's (shared.metrics.gan_scorers).
Every evaluation also gives the samples' diversity (`diversity_<kind>`: their feature covariance's trace
against the test set's, shared.metrics.diversity_ratio); the record says the best G_ema's (`diversity`) and
whether that is below `collapse_threshold` (`collapsed`: true / false; None for a D-only run).

G's latents come from `architectures.<arch>.latent_prior` (the official U(-1, 1) for SNDCGAN's G, at
training, FID and sample grids alike), D's views use `views.jitter` (the official code's own colour
jitter, `hsv`); the record and the resolved config say which (`latent_prior`, `jitter`; jitter None for
the methods that do not augment with the views).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from papers.contrad.config import ARCHITECTURES, METHODS, PARAMS, TrainStageConfig
from papers.contrad.method import contrad, simclr_only
from papers.contrad.models import CONTRASTIVE, build_models
from shared import checkpoint, config, data, metrics
from shared.cli import run_stage, stage_parser
from shared.device import to_device
from shared.gan_losses import GANMethod, bcr, cr, nonsaturating
from shared.stage import start
from shared.trainers.gan import fid_evaluate, train_gan


def build_method(name: str, cfg: TrainStageConfig) -> GANMethod:
    if name == "baseline":
        return nonsaturating("")
    if name == "diffaugment":
        return nonsaturating(cfg.diffaugment_policy)
    if name == "diffaugment_cc":
        return nonsaturating(cfg.diffaugment_cc_policy)
    if name == "cr":
        return cr(cfg.lambda_real)
    if name == "bcr":
        return bcr(cfg.lambda_real, cfg.lambda_fake)
    if name == "contrad":
        return contrad(cfg.views, cfg.temperature, cfg.lambda_a)
    if name == "simclr":
        return simclr_only(cfg.views, cfg.temperature)
    raise ValueError(f"unknown method {name!r}; allowed: {list(METHODS)}")


def skipped_reason(cfg: TrainStageConfig, architecture: str, method: str, seed: int, scale: str) -> str | None:
    if architecture not in cfg.run_architectures:
        return f"architecture {architecture} is not run at scale {scale} (run_architectures={cfg.run_architectures})"
    if method not in cfg.run_methods:
        return f"method {method} is not run at scale {scale} (run_methods={cfg.run_methods})"
    if seed >= cfg.n_seeds:
        return f"seed {seed} is not run at scale {scale} (n_seeds={cfg.n_seeds})"
    return None


def collapse_fields(history: list[dict], best: dict | None, kind: str | None, threshold: float) -> dict:
    """What a train record says about collapse: the best G_ema's `diversity` (the `diversity_<kind>` of the
    history's evaluation at the best step), the `collapse_threshold` and `collapsed` (None when nothing was
    scored: a D-only run, or no evaluation)."""
    at_best = next((h for h in history if best and h["step"] == best["step"]), {})
    value = None if kind is None else at_best.get(f"diversity_{kind}")
    return {"diversity": value, "diversity_label": None if value is None else metrics.DIVERSITY_LABEL,
            "collapse_threshold": threshold,
            "collapsed": None if value is None else metrics.is_collapsed(value, threshold)}


def run(args: argparse.Namespace) -> dict | None:
    stage = start("contrad", "train", suite_params=args.suite_params, out=args.out, trial=args.seed,
                  plots=args.plots)
    cfg = stage.section(TrainStageConfig, args.params, "train")
    if reason := skipped_reason(cfg, args.architecture, args.method, args.seed, stage.scale):
        return stage.skip(reason)
    device = stage.device
    train = cfg.train_for(args.architecture)  # StyleGAN2 has its own optimiser and regularisers

    x, y = data.load_prepared(args.prepared, "train")
    loader = data.DeviceLoader(torch.from_numpy(x), torch.from_numpy(y), batch_size=train.batch_size,
                               shuffle=True, drop_last=True, seed=stage.seed, device=device)
    G, D = build_models(args.architecture, args.method, cfg)
    G, D = to_device(G, device), to_device(D, device)
    method = build_method(args.method, cfg)
    arch = cfg.architectures[args.architecture]
    z_dim, latent_prior = arch.z_dim, arch.latent_prior  # G's latents: size and prior (official: U(-1, 1))
    # what each run used, in its record: D's colour jitter (None: the method does not use the views) and G's prior
    jitter = cfg.views.jitter if args.method in CONTRASTIVE else None

    evaluate, final_evaluate, scorer, final_scorer, train_cfg = None, None, None, None, train
    if method.g_loss is not None:  # a D-only run has no generator worth scoring
        test_x, _ = data.load_prepared(args.prepared, "test")
        scorer, final_scorer = metrics.gan_scorers(test_x, cfg.metrics, device, reference="CIFAR-10 test set",
                                                   diversity=True)
        train_cfg = dataclasses.replace(train, best_key=f"fid_{scorer.kind}")
        evaluate = fid_evaluate(scorer, cfg.fid_samples, 500, device, z_dim, latent_prior=latent_prior)
        if final_scorer is not None:
            final_evaluate = fid_evaluate(final_scorer, cfg.metrics.inception_samples, 500, device, z_dim,
                                          latent_prior=latent_prior)

    resolved = {"architecture": args.architecture, "method": args.method, "seed": args.seed,
                "latent_prior": latent_prior, "jitter": jitter,
                "train": config.to_dict(cfg), "gan": config.to_dict(train), "fid": None if scorer is None else scorer.label if final_scorer is None
                else {"during_training": scorer.label, "final_best_g_ema": final_scorer.label}}
    name = f"{args.architecture}_{args.method}"
    with stage.tracked(resolved, f"train/{name}/seed{args.seed}", architecture=args.architecture,
                       method=args.method, row=name) as log:
        result = train_gan(train_cfg, G, D, method, loader, out_dir=stage.out, logger=log, device=device,
                           z_dim=z_dim, latent_prior=latent_prior, evaluate=evaluate, final_evaluate=final_evaluate)
        checkpoint.save(stage.out / "discriminator.pt", {"D": D.state_dict(), "architecture": args.architecture,
                                                         "method": args.method, "steps": result.steps})
        # the best checkpoint's one Inception FID beside its in-domain one (its IS is the history's)
        at_best = result.best if result.final is None else {
            **result.best, **{k: v for k, v in result.final.items() if k.startswith("fid_")}}
        best = {k: v for k, v in (at_best or {}).items() if k != "step" and isinstance(v, (int, float))}
        described = ({"fid_label": None} if scorer is None else scorer.describe(cfg.fid_samples)
                     if final_scorer is None else {**final_scorer.describe(cfg.metrics.inception_samples),
                                                   "indomain": scorer.describe(cfg.fid_samples)})
        collapse = collapse_fields(result.history, result.best, None if scorer is None else scorer.kind,
                                   cfg.collapse_threshold)
        record = stage.record(
            best, row=name, architecture=args.architecture, method=args.method, method_name=method.name,
            latent_prior=latent_prior, jitter=jitter,
            fid_samples=cfg.fid_samples, **described, **collapse,
            reference_is=None if scorer is None else scorer.reference_is,
            best=at_best, history=result.history, steps=result.steps,
            kimg=result.steps * train.batch_size / 1000,
            train_seconds=round(result.train_seconds))  # the checkpoint's: a re-run of a finished one says the same
        stage.write(record, logger=log)
        stage.write_plot("fid" if scorer is None else f"fid_{scorer.kind}", result.history)  # D only: none
    print(f"train {name} seed {args.seed}: best {result.best} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--architecture", required=True, choices=ARCHITECTURES)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--seed", type=int, required=True, help="trial index (0, 1)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prepared", default="data/prepared/cifar10")
    parser.add_argument("--plots", default=None, help="the run's curve for DVC (a JSON list of rows, outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
