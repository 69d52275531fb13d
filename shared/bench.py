"""Speed benchmarks of the suite's training step.

    python -m shared.bench ssl --json

prints one JSON line of SimCLR pre-training throughput (images per second, each
image giving two views) at mini size, three ways, on the same network and step:

- ``suite_ips``: the suite's step: uint8 batches from the device-resident loader,
  views made on the fly by ``shared.views``, forward + backward + step;
- ``model_only_ips``: forward + backward + step on views made beforehand (the limit);
- ``pil_pipeline_ips``: the usual torchvision PIL transforms in a DataLoader with
  worker processes feeding the same step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from shared.data import DeviceLoader
from shared.device import pick_device, to_device
from shared.methods import build_method
from shared.models import resnet18
from shared.trainers.ssl import SSLConfig, make_optimizer, ssl_step
from shared.views import SimCLRViewConfig, SimCLRViews

# The GAN-augmented SimCLR recipe: colour-jitter strength 0.5, no blur (Halpin-Gregorio 2021, Sec. 5).
VIEW_CFG = SimCLRViewConfig.from_strength(0.5, blur=False)


class PILPairs(Dataset):
    """Two torchvision-PIL views per image: the pipeline most SimCLR repositories use."""

    def __init__(self, images: np.ndarray, cfg: SimCLRViewConfig):
        self.images = [Image.fromarray(im.transpose(1, 2, 0)) for im in images]
        size = images.shape[-1]
        jitter = transforms.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
            transforms.RandomHorizontalFlip(cfg.flip_p),
            transforms.RandomApply([jitter], p=cfg.jitter_p),
            transforms.RandomGrayscale(cfg.grayscale_p),
            transforms.ToTensor(),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.transform(self.images[i])


def _timed(step, batches, warmup: int) -> tuple[float, int]:
    """Seconds taken by, and the number of, the batches after the first ``warmup`` ones."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    start = time.perf_counter()
    n = 0
    for batch in it:
        step(batch)
        n += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, n


def bench_ssl(width: float, batch_size: int, steps: int, warmup: int, workers: int, repeats: int = 3,
              seed: int = 0) -> dict:
    device = pick_device("auto")
    torch.manual_seed(seed)
    encoder = to_device(resnet18(width=width), device)
    method = to_device(build_method("simclr", encoder, projection_dim=64, temperature=0.5), device)
    optimizer = make_optimizer(SSLConfig(), method.trainable_parameters())
    views = SimCLRViews(VIEW_CFG)
    n_batches = warmup + steps
    images = np.random.default_rng(seed).integers(0, 256, (n_batches * batch_size, 3, 32, 32), dtype=np.uint8)

    def step(batch_views):
        ssl_step(method, batch_views, optimizer, device)

    loader = DeviceLoader(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long),
                          batch_size=batch_size, shuffle=True, drop_last=True, device=device, seed=seed)
    ready = [views(x, index) for x, _, index in loader]
    pil = DataLoader(PILPairs(images, VIEW_CFG), batch_size=batch_size, shuffle=True, drop_last=True,
                     num_workers=workers, persistent_workers=workers > 0)
    runs = {
        # model only: views made before the clock starts (the limit)
        "model_only_ips": lambda: _timed(step, ready, warmup),
        # the suite: device-resident uint8 batches, views on the fly
        "suite_ips": lambda: _timed(step, (views(x, index) for x, _, index in loader), warmup),
        # torchvision PIL transforms in DataLoader workers
        "pil_pipeline_ips": lambda: _timed(step, ([v.to(device, non_blocking=True) for v in pair] for pair in pil),
                                           warmup),
    }
    # Interleaved repeats, median of each: the three share the machine's state and noise equally.
    ips = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds, n = run()
            ips[name].append(n * batch_size / seconds)
    suite_ips, model_ips, pil_ips = (float(np.median(ips[k])) for k in ("suite_ips", "model_only_ips",
                                                                         "pil_pipeline_ips"))

    return {
        "bench": "ssl", "suite_ips": round(suite_ips, 1), "model_only_ips": round(model_ips, 1),
        "pil_pipeline_ips": round(pil_ips, 1),
        "suite_over_model": round(suite_ips / model_ips, 3), "suite_over_pil": round(suite_ips / pil_ips, 3),
        "config": {"model": f"resnet18 width {width}", "batch_size": batch_size, "image": "3x32x32",
                   "views": "SimCLR, jitter strength 0.5, no blur", "timed_steps": steps, "warmup_steps": warmup, "repeats": repeats,
                   "pil_workers": workers},
        "device": str(device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(), "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ssl"])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier (mini: 0.25)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: the GAN-augmented SimCLR recipe's 128)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="DataLoader workers of the PIL pipeline")
    args = parser.parse_args(argv)
    result = bench_ssl(args.width, args.batch_size, args.steps, args.warmup, args.workers, args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("suite_ips", "model_only_ips", "pil_pipeline_ips", "suite_over_model", "suite_over_pil"):
            print(f"{key:>18}: {result[key]}")


if __name__ == "__main__":
    main()
