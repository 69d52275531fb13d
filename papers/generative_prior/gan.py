"""Stage `train_gan`: the GAN whose frozen discriminator gives idea #2's view.

Its D is read back by `discriminator.load_discriminator`.

    python -m papers.generative_prior.gan --data papers/generative_prior/outputs/data \
        --out papers/generative_prior/outputs/gan

The slides say only "pretrained discriminators" (no architecture, data or layer). The package trains one GAN
on the SSL training set (unlabelled), with the suite's GAN trainer: SNDCGAN G and an SNDCGAN (or SNResNet-18)
D, the non-saturating loss (with DiffAugment `gan.policy` on D's inputs if set; none by default), section
`gan` of params.yaml (`GANStageConfig`). It is
trained once (the suite seed), not per SSL seed. Writes in `--out`: the trainer's checkpoint, `best.pt` and
`samples/step_*.png`, and `discriminator.pt` (D at the end of training: the SSL stage's prior), and the record
`metrics.json` with

- the FID of G during training (`fid_<kind>`, in-domain unless `gan.metrics.inception_weights` names a file),
  with D's kNN top-1 (below) at every evaluation in the history,
- whether D has learned what the SSL stage uses it for: the weighted kNN top-1 (%) of D's penultimate features
  on the test set against the training set, for the trained D (`d_knn_acc`) and for the same architecture at
  its initialisation (`d_knn_acc_init`), and D's accuracy at telling training images from G's samples
  (`d_real_fake_acc`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from papers.generative_prior import data as gp_data
from papers.generative_prior.config import PARAMS, GANStageConfig
from papers.generative_prior.discriminator import DISCRIMINATOR_FILE
from shared import checkpoint, config, data, metrics
from shared.cli import run_stage, stage_parser
from shared.device import to_device
from shared.gan_losses import nonsaturating
from shared.models.sngan import DiscriminatorFeatures, sngan
from shared.stage import start
from shared.trainers.gan import fid_evaluate, sample_images, train_gan
from shared.trainers.linear_eval import extract_features, knn_accuracy

KNN_K = 200  # the suite's kNN monitor (Wu et al. 2018): k 200, temperature 0.1
KNN_TEMPERATURE = 0.1


@torch.no_grad()
def d_knn(D: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], device: torch.device) -> float:
    """Weighted kNN top-1 (%) of D's penultimate features, test set against training set."""
    was_training = D.training
    f = DiscriminatorFeatures(D)
    train_f = extract_features(f, train[0], device)
    test_f = extract_features(f, test[0], device)
    D.train(was_training)
    return knn_accuracy(train_f, train[1].to(device), test_f, test[1].to(device), KNN_K, KNN_TEMPERATURE)


@torch.no_grad()
def d_checks(D: nn.Module, D_init: nn.Module, G_ema: nn.Module, train: tuple[Tensor, Tensor],
             test: tuple[Tensor, Tensor], cfg: GANStageConfig, device: torch.device, seed: int) -> dict[str, float]:
    """kNN top-1 of the trained and the initial D's features, and D's real / fake accuracy (see the module doc)."""
    out = {"d_knn_acc": d_knn(D, train, test, device), "d_knn_acc_init": d_knn(D_init, train, test, device)}
    n = min(len(train[0]), 2000)
    fakes = sample_images(G_ema, n, 500, seed, device, z_dim=cfg.z_dim, latent_prior=cfg.latent_prior)
    was_training = D.training
    D.eval()
    real_logits = torch.cat([D(x.to(device).float().div(127.5).sub(1)) for x in train[0][:n].split(500)])
    fake_logits = torch.cat([D(x.to(device).float().div(127.5).sub(1)) for x in fakes.split(500)])
    D.train(was_training)
    out["d_real_fake_acc"] = float(torch.cat([real_logits > 0, fake_logits < 0]).float().mean() * 100)
    return out


def run(args: argparse.Namespace) -> dict:
    stage = start("generative_prior", "train_gan", suite_params=args.suite_params, out=args.out,
                  metrics=args.metrics, plots=args.plots)
    cfg = stage.section(GANStageConfig, args.params, "gan")
    device = stage.device
    train_x, train_y = gp_data.load(args.data, "train")
    test_x, test_y = gp_data.load(args.data, "test")
    loader = data.DeviceLoader(train_x, train_y, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                               seed=stage.seed, device=device)
    G, D = sngan(cfg.discriminator, width=cfg.width, z_dim=cfg.z_dim)
    D_init = sngan(cfg.discriminator, width=cfg.width, z_dim=cfg.z_dim)[1]
    D_init.load_state_dict(D.state_dict())  # the same initial weights, kept for the check
    G, D, D_init = to_device(G, device), to_device(D, device), to_device(D_init, device)
    scorer, final_scorer = metrics.gan_scorers(test_x.numpy(), cfg.metrics, device, reference="CIFAR-10 test set")
    train_cfg = dataclasses.replace(cfg.train, best_key=f"fid_{scorer.kind}")
    fid = fid_evaluate(scorer, cfg.fid_samples, 500, device, cfg.z_dim, latent_prior=cfg.latent_prior)

    def evaluate(G_ema: nn.Module, step: int) -> dict[str, float]:  # D's kNN too: when it learns, if it does
        return {**fid(G_ema, step), "d_knn_acc": d_knn(D, (train_x, train_y), (test_x, test_y), device)}
    final_evaluate = None if final_scorer is None else fid_evaluate(
        final_scorer, cfg.metrics.inception_samples, 500, device, cfg.z_dim, latent_prior=cfg.latent_prior)
    label = scorer.label if final_scorer is None else {"during_training": scorer.label,
                                                       "final_best_g_ema": final_scorer.label}
    method = nonsaturating(cfg.policy)
    resolved = {"gan": config.to_dict(cfg), "method": method.name, "data": str(args.data), "fid": label}
    with stage.tracked(resolved, "train_gan") as log:
        result = train_gan(train_cfg, G, D, method, loader, out_dir=stage.out, logger=log, device=device,
                           z_dim=cfg.z_dim, latent_prior=cfg.latent_prior, evaluate=evaluate,
                           final_evaluate=final_evaluate)
        checkpoint.save(stage.out / DISCRIMINATOR_FILE, {
            "D": D.state_dict(), "discriminator": cfg.discriminator, "width": cfg.width, "z_dim": cfg.z_dim,
            "steps": result.steps, "note": "D at the end of training; load with discriminator.load_discriminator"})
        checks = d_checks(D, D_init, result.G_ema, (train_x, train_y), (test_x, test_y), cfg, device, stage.seed)
        best = {k: v for k, v in (result.best or {}).items() if k != "step"}
        if result.final is not None:
            best.update({k: v for k, v in result.final.items() if k.startswith("fid_")})
        headline = {**best, **checks}
        record = stage.record(headline, discriminator=cfg.discriminator, width=cfg.width, method=method.name,
                              fid=label, fid_samples=cfg.fid_samples, best_step=(result.best or {}).get("step"),
                              history=result.history, steps=result.steps, train_seconds=round(result.train_seconds),
                              knn={"k": KNN_K, "temperature": KNN_TEMPERATURE, "features": "D.features (penultimate)"})
        stage.write(record, logger=log)
        stage.write_metrics(headline)
        stage.write_plot(f"fid_{scorer.kind}", result.history)
    print(f"train_gan: {headline} ({stage.scale})")
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, PARAMS)
    parser.add_argument("--data", type=Path, default=Path("papers/generative_prior/outputs/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, default=None, help="headline numbers as a flat JSON for DVC")
    parser.add_argument("--plots", type=Path, default=None, help="the FID curve for DVC (outside --out)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
