"""The in-domain feature extractor: the suite's stand-in for Inception, and the stage that trains it.

A CIFAR ResNet-18 classifier the suite trains itself on a prepared train split
(:func:`train_extractor`). As an FID/IS detector (:class:`FeatureExtractor`, kind ``indomain``)
its numbers are keyed ``fid_indomain`` / ``is_indomain`` and labelled :data:`INDOMAIN_LABEL`:
they rank models trained here against each other and are NOT comparable with any published
FID or IS. :func:`shared.metrics.make_scorer` falls back to it when no Inception weights are
supplied. The stage (the ``extractor`` stage of the top-level dvc.yaml):

    python -m shared.extractor --params params.yaml \\
        --prepared data/prepared/cifar10 --out data/extractor/cifar10.pt

reads the ``extractor`` section of params.yaml (with ``scales.<scale>.extractor`` overrides) and
writes the weights, ``metrics.json`` and ``config.yaml`` beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from shared import config, data, tracking
from shared.cli import add_debug_argument, run_stage
from shared.detector import CorruptWeightsError, WeightsNotFoundError, check_uint8_images
from shared.device import autocast, pick_device, prepare_batch, to_device
from shared.io import atomic_write, atomic_write_text
from shared.models.resnet import resnet18
from shared.provenance import provenance
from shared.stage import set_threads
from shared.trainers.common import NonFiniteLossError
from shared.views import rand_translation

INDOMAIN_LABEL = "FID (in-domain ResNet-18 features, not Inception)"
# The format tag inside every saved extractor; it names the module the class was first defined in
# (shared.metrics) and stays so that files made before the move still load.
_EXTRACTOR_FORMAT = "shared.metrics.FeatureExtractor/1"


# ---------------------------------------------------------------- the network

@dataclasses.dataclass
class ExtractorConfig:
    """The in-domain classifier's training. Defaults: the ``paper`` scale (a GPU, full width).

    SGD with Nesterov momentum 0.9, lr warmed up linearly over ``warmup_epochs`` then
    decayed linearly to 0 (a one-cycle schedule, which reaches good accuracy in few
    epochs); light augmentation: a random translation of up to ``crop_padding`` pixels
    with zero fill (= RandomCrop(padding) of torchvision) and, if ``flip``, a horizontal flip.
    """
    width: float = 1.0
    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.4  # peak; 0.1 per 128 images, scaled linearly with batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    crop_padding: int = 4  # pixels
    flip: bool = True  # off for digits and characters, where a mirror image is another symbol
    seed: int = 0
    limit: int | None = None  # train on this many images (a seeded class-balanced subset); None = all
    eval_batch_size: int = 500

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got "
                             f"{self.lr}, {self.weight_decay}, {self.momentum}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")


class FeatureExtractor(nn.Module):
    """CIFAR ResNet-18 classifier trained by the suite; the in-domain stand-in for Inception.

    ``features`` are the trunk's globally pooled (penultimate) features, ``probs`` the
    softmax of the linear head. Inputs are uint8 images of the shape it was trained on;
    it scales them to [0, 1] and standardises each channel with the training set's
    mean and std (buffers, saved with the weights).
    """

    kind = "indomain"
    label = INDOMAIN_LABEL

    def __init__(self, cfg: ExtractorConfig, in_channels: int, num_classes: int, image_size: tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, tuple(image_size)
        self.trunk = resnet18(cfg.width, in_channels)
        self.head = nn.Linear(self.trunk.feature_dim, num_classes)
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        self.test_acc: float | None = None  # %, on the test split, set by whoever evaluated it
        self.train_acc: float | None = None  # %, running accuracy on augmented batches of the last epoch
        self.n_train: int | None = None  # images it was trained on

    @property
    def feature_dim(self) -> int:
        return self.trunk.feature_dim

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of float images in [0, 1]."""
        feats = self.trunk((x - self.mean) / self.std)
        return feats, self.head(feats)

    @torch.no_grad()
    def features_and_probs(self, images, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D), probs (N, K)), float32 on the CPU, of uint8 images (N, C, H, W), eval mode."""
        x = check_uint8_images(images, channels=(self.in_channels,))
        if tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"the extractor was trained on {self.image_size} images, got {tuple(x.shape[2:])}")
        batch_size = batch_size or self.cfg.eval_batch_size
        was_training = self.training
        self.eval()
        feats, probs = [], []
        try:
            for start in range(0, len(x), batch_size):
                batch = prepare_batch(x[start:start + batch_size].to(self.device).float().div_(255), self.device)
                f, logits = self(batch)  # no autocast: FID features stay float32 on CUDA too
                feats.append(f.float().cpu())
                probs.append(logits.float().softmax(dim=1).cpu())
        finally:
            self.train(was_training)
        return torch.cat(feats), torch.cat(probs)

    def features(self, images, batch_size: int | None = None) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[0]

    def probs(self, images, batch_size: int | None = None) -> torch.Tensor:
        return self.features_and_probs(images, batch_size)[1]

    def save(self, path: str | Path) -> None:
        """Write weights, config, shapes and accuracies to ``path`` atomically (torch.save of plain types)."""
        state = {"format": _EXTRACTOR_FORMAT, "label": INDOMAIN_LABEL, "config": dataclasses.asdict(self.cfg),
                 "in_channels": self.in_channels, "num_classes": self.num_classes,
                 "image_size": list(self.image_size), "test_acc": self.test_acc, "train_acc": self.train_acc,
                 "n_train": self.n_train, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FeatureExtractor":
        """Read what :meth:`save` wrote; a missing or unreadable file raises naming ``path``."""
        path = Path(path)
        how = (f"make it with `python -m shared.extractor --params params.yaml "
               f"--prepared data/prepared/cifar10 --out {path}` (the `extractor` stage of dvc.yaml)")
        if not path.is_file():
            raise WeightsNotFoundError(f"in-domain feature extractor {path} does not exist: {how}")
        try:
            # weights_only: the file holds tensors and plain types only, so nothing is unpickled blindly
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
            raise CorruptWeightsError(f"{path}: unreadable extractor file ({type(err).__name__}: {err}); "
                                      f"delete it and {how}") from err
        if not isinstance(state, dict) or state.get("format") != _EXTRACTOR_FORMAT:
            raise CorruptWeightsError(f"{path}: not an in-domain extractor file (format "
                                      f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                                      f"expected {_EXTRACTOR_FORMAT!r}); delete it and {how}")
        try:
            cfg = config.build(ExtractorConfig, state["config"], source=str(path), prefix="config.")
            model = cls(cfg, int(state["in_channels"]), int(state["num_classes"]), tuple(state["image_size"]))
            model.load_state_dict(state["state_dict"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CorruptWeightsError(f"{path}: inconsistent extractor file ({type(err).__name__}: {err}); "
                                      f"delete it and {how}") from err
        model.test_acc, model.train_acc, model.n_train = state.get("test_acc"), state.get("train_acc"), state.get("n_train")
        return to_device(model, torch.device(device)).eval()


# ---------------------------------------------------------------- training

def _augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (as a translation by up to ``padding`` px) and horizontal flip."""
    if padding:
        # rand_translation shifts by up to round(ratio * side) = padding pixels with zero fill:
        # the same distribution as cropping side x side out of the zero-padded image.
        x = rand_translation(x, ratio=padding / x.shape[-2], generator=generator)
    if flip:
        hit = torch.rand(len(x), device=x.device, generator=generator) < 0.5
        x = torch.where(hit.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1], accumulated in float64 chunk by chunk
    (50k CIFAR images as one float64 tensor would take 1.2 GB)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].double().div_(255)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    return mean.float(), ((squares / count - mean.square()).clamp_min(0) * count / max(count - 1, 1)).sqrt().float()


def extractor_accuracy(extractor: FeatureExtractor, images, labels) -> float:
    """Top-1 accuracy (%) of the extractor's head on uint8 images."""
    probs = extractor.probs(images)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if y.shape != (len(probs),):
        raise ValueError(f"labels {tuple(y.shape)} do not match {len(probs)} images")
    return (probs.argmax(1) == y).double().mean().item() * 100


def train_extractor(x_uint8, y, cfg: ExtractorConfig, device: str | torch.device = "cpu", progress: bool = True,
                    test: tuple | None = None, logger: tracking.Logger | None = None) -> FeatureExtractor:
    """Train the in-domain classifier on uint8 images (N, C, H, W) and int labels; return it in eval mode.

    One loop: seeded batches from a device-resident loader -> crop/flip on the device ->
    ResNet-18 + linear head -> cross-entropy -> SGD step -> per-step schedule. Same
    seed, data and device give the same weights. ``test`` = (images, labels) sets
    ``test_acc``; ``logger`` receives per-epoch loss, accuracy and lr.
    """
    device = torch.device(device)
    x = torch.as_tensor(x_uint8)
    y = torch.as_tensor(y, dtype=torch.int64)
    check_uint8_images(x)
    if y.shape != (len(x),):
        raise ValueError(f"labels {tuple(y.shape)} do not match {len(x)} images")
    if y.min() < 0:
        raise ValueError("labels must be >= 0")
    num_classes = int(y.max()) + 1
    if cfg.limit is not None and cfg.limit < len(x):
        if cfg.limit < num_classes:
            raise ValueError(f"limit {cfg.limit} is below the number of classes {num_classes}")
        keep = torch.as_tensor(data.stratified_subset(y.numpy(), cfg.limit // num_classes, cfg.seed))
        x, y = x[keep], y[keep]

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # the init must not depend on, nor consume, the caller's RNG
        model = FeatureExtractor(cfg, x.shape[1], num_classes, tuple(x.shape[2:]))
    mean, std = _channel_stats(x)
    model.mean.copy_(mean.view_as(model.mean))
    model.std.copy_(std.clamp_min(1e-3).view_as(model.std))  # clamp: a constant channel would divide by 0
    model.n_train = len(x)
    model = to_device(model, device).train()

    loader = data.DeviceLoader(x, y, cfg.batch_size, shuffle=True, drop_last=len(x) >= cfg.batch_size,
                               seed=cfg.seed, device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    warmup = round(cfg.warmup_epochs * len(loader))

    def lr_factor(step: int) -> float:  # linear up over `warmup` steps, then linear down to 0 at `total`
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    start_time, step = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        loss_sum = correct = seen = 0.0
        for xb, yb, _ in tqdm(loader, desc=f"extractor epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           leave=False, disable=not progress):
            views = _augment(xb.float().div_(255), cfg.crop_padding, cfg.flip, generator)
            with autocast(device):
                _, logits = model(prepare_batch(views, device))
            loss = F.cross_entropy(logits.float(), yb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"extractor loss is {loss.item()} at step {step} (epoch {epoch})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        stats = {"extractor_loss": loss_sum / seen, "extractor_train_acc": correct / seen * 100,
                 "lr": opt.param_groups[0]["lr"]}
        if logger is not None:
            logger.log_metrics(stats, step=epoch + 1)
        if progress:
            print(f"extractor epoch {epoch + 1}/{cfg.epochs}: loss {stats['extractor_loss']:.3f}, "
                  f"train acc {stats['extractor_train_acc']:.1f}%, {time.perf_counter() - start_time:.0f} s",
                  file=sys.stderr, flush=True)
        model.train_acc = stats["extractor_train_acc"]
    model.eval()
    if test is not None:
        model.test_acc = extractor_accuracy(model, *test)
        if progress:
            print(f"extractor test accuracy {model.test_acc:.2f}%", file=sys.stderr, flush=True)
    return model


# ---------------------------------------------------------------- stage

def train_extractor_stage(params: Path, prepared: Path, out: Path, metrics_path: Path | None = None,
                          progress: bool = True) -> dict:
    """Train the in-domain extractor on ``<prepared>/train.npz``, test on ``test.npz``; write
    ``out``, ``metrics.json`` and ``config.yaml`` (the latter two beside ``out`` by default)."""
    params, prepared, out = Path(params), Path(prepared), Path(out)
    metrics_path = Path(metrics_path) if metrics_path is not None else out.parent / "metrics.json"
    suite = config.load_suite(params)
    set_threads(suite.threads)
    cfg = config.load_section(ExtractorConfig, params, "extractor", suite.scale)
    device = pick_device(suite.device)
    name = prepared.name
    resolved = {"scale": suite.scale, "prepared": str(prepared), "device": str(device), **config.to_dict(cfg)}
    with tracking.stage_logger(suite, "data", f"extractor/{name}", resolved, stage="extractor",
                               dataset=name) as log:
        x, y = data.load_prepared(prepared, "train")
        test = data.load_prepared(prepared, "test")
        start = time.perf_counter()
        extractor = train_extractor(x, y, cfg, device, progress=progress, test=test, logger=log)
        seconds = time.perf_counter() - start
        extractor.save(out)
        metrics = {"label": INDOMAIN_LABEL, "dataset": name, "scale": suite.scale,
                   "test_acc": round(extractor.test_acc, 3), "train_acc": round(extractor.train_acc, 3),
                   "n_train": extractor.n_train, "n_test": len(test[1]),
                   "feature_dim": extractor.feature_dim, "num_classes": extractor.num_classes,
                   "train_seconds": round(seconds, 1), **provenance(device)}
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
        config.save_resolved(resolved, out.parent / "config.yaml")
        log.log_metrics({"extractor_test_acc": extractor.test_acc, "train_seconds": seconds})
        log.log_dict(metrics, "metrics.json")
    print(f"extractor/{name}: test accuracy {extractor.test_acc:.2f}% in {seconds:.0f} s -> {out}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.extractor", description="Train the in-domain feature extractor (ResNet-18 "
        "classifier). Reads `scale`, `device`, `tracking` and the `extractor` section of params.yaml.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, required=True,
                        help="folder with train.npz / test.npz (python -m shared.prepare dataset)")
    parser.add_argument("--out", type=Path, required=True, help="weights file, e.g. data/extractor/cifar10.pt")
    parser.add_argument("--metrics", type=Path, help="metrics JSON (default: metrics.json beside --out)")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_stage(lambda: train_extractor_stage(args.params, args.prepared, args.out, args.metrics,
                                                   progress=not args.no_progress), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
